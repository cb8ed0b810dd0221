# SPDX-License-Identifier: Apache-2.0
"""smooth_quant: the float function is unchanged, LayerNorm -> linear pairs are rescaled, others untouched."""
import numpy as np
import torch

import dyadiq
from dyadiq.interp import run
from dyadiq.passes.smooth_quant import smooth_quant


def _graph(block):
    model, x = block()
    return dyadiq.from_torch(model, (x,)), x.numpy()


def test_smooth_quant_keeps_the_float_function_and_balances_channels():
    from dyadiq.zoo.blocks import transformer_layer
    g, x = _graph(transformer_layer)
    xs = [{g.inputs[0]: x + 0.1 * i} for i in range(3)]
    out = smooth_quant(g, xs)
    assert out is not g
    lns = [n.name for n in g.nodes if n.op == "layernorm"]
    assert any(not np.array_equal(out.const(n.inputs[1]), g.const(n.inputs[1])) for n in out.nodes if n.name in lns)
    for s in xs:
        np.testing.assert_allclose(run(out, s), run(g, s), rtol=1e-4, atol=1e-4)


def test_layernorm_shared_with_a_residual_is_cloned_for_the_linears():
    class PostNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc = torch.nn.LayerNorm(16), torch.nn.Linear(16, 16)
            with torch.no_grad():
                self.ln.weight.mul_(torch.linspace(0.1, 8.0, 16))

        def forward(self, x):
            h = self.ln(x)
            return h + self.fc(h)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16)
    g = dyadiq.from_torch(PostNorm().eval(), (x,))
    out = smooth_quant(g, [{g.inputs[0]: x.numpy()}])
    assert [n.op for n in out.nodes].count("layernorm") == 2
    np.testing.assert_allclose(run(out, {g.inputs[0]: x.numpy()}), run(g, {g.inputs[0]: x.numpy()}), rtol=1e-4, atol=1e-5)


def test_no_layernorm_no_change():
    from dyadiq.zoo.blocks import mlp
    g, x = _graph(mlp)
    assert smooth_quant(g, [{g.inputs[0]: x}]) is g
