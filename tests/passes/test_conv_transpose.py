# SPDX-License-Identifier: Apache-2.0
"""canonicalize's conv-transpose rule: a transposed convolution with constant weights becomes zero insertion +
conv2d with regrouped, flipped weights (same values as the conv_transpose2d kernel), so it takes the integer
conv path; the integer graph is bit-exact on the cpu target and tracks simulated mode."""
import numpy as np
import pytest

from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.canonicalize import canonicalize
from dyadiq.passes.integerize import integerize
from dyadiq.targets import compile as build
from quant_helpers import simple_quantize

RNG = np.random.default_rng(4)
CASES = [  # cin, cout, groups, k, stride, pad, dilation, output_padding
    (4, 6, 1, 3, 2, (1, 1, 1, 1), (1, 1), (1, 1)),      # UNet-style x2 upsampling
    (4, 6, 2, 2, 2, (0, 0, 0, 0), (1, 1), (0, 0)),      # grouped, kernel = stride
    (3, 3, 1, 3, 1, (2, 0, 2, 1), (2, 1), (0, 0)),      # stride 1, dilation, asymmetric pads
    (4, 4, 4, 3, 3, (4, 0, 0, 4), (1, 1), (2, 1)),      # depthwise, pads beyond the border (crop)
]


def _graph(cin, cout, groups, k, s, p, d, op, h=5):
    b = GraphBuilder()
    x = b.input("x", (1, cin, h, h + 1))
    w = b.const("w", RNG.normal(size=(cin, cout // groups, k, k)).astype(np.float32))
    bias = b.const("b", RNG.normal(size=cout).astype(np.float32))
    y = b.op("conv_transpose2d", [x, w, bias], stride=(s, s), pad=p, dilation=d, output_padding=op, groups=groups)
    return b.build([b.op("relu", [y])])


@pytest.mark.parametrize("case", CASES)
def test_transposed_conv_becomes_a_conv_with_the_same_values(case):
    g = _graph(*case)
    c = canonicalize(g)
    assert "conv_transpose2d" not in [n.op for n in c.nodes] and "conv2d" in [n.op for n in c.nodes]
    x = RNG.normal(size=g.type_of("x").shape).astype(np.float32)
    np.testing.assert_allclose(run(c, [x]), run(g, [x]), rtol=1e-5, atol=1e-5)


def test_runtime_weights_are_left_alone():
    b = GraphBuilder()
    x, w = b.input("x", (1, 2, 4, 4)), b.input("w", (2, 3, 3, 3))
    g = b.build([b.op("conv_transpose2d", [x, w], stride=(2, 2))])
    assert canonicalize(g) is g


@pytest.mark.parametrize("case", CASES[:2])
def test_integer_transposed_conv_is_bit_exact_on_the_cpu(case):
    c = canonicalize(_graph(*case))
    calib = RNG.normal(size=(6,) + c.type_of("x").shape[1:]).astype(np.float32)
    q = simple_quantize(c, calib)
    ig = integerize(q)
    x = calib[:1]
    got = run(ig, [x])
    step = q.quant_of(q.outputs[0]).scale[0]
    assert np.max(np.abs(got - run(q, [x], "simulated"))) <= step * 1.0001
    np.testing.assert_array_equal(build(ig, "cpu").run([x]), got)
