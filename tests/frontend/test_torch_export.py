# SPDX-License-Identifier: Apache-2.0
"""torch.export frontend: converted graphs compute what the torch model computes.

Every model is checked with ``max|interp - torch| <= 1e-4 * max|torch|`` and with the printed-IR
round trip ``parse_mlir(print_mlir(g), g.constants) == g``; small models also in the core-ATen form
(``ep.run_decompositions()``) next to the pre-dispatch form ``torch.export`` gives.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dyadiq import interp
from dyadiq.errors import FrontendError
from dyadiq.frontend import from_exported_program, from_torch, load_pt2
from dyadiq.interp.run import run_batched
from dyadiq.ir import parse_mlir, print_mlir
from dyadiq.zoo.blocks import BLOCKS

FORMS = ["pre_dispatch", "core_aten"]


def convert(model: nn.Module, args: tuple, form: str = "pre_dispatch"):
    if form == "pre_dispatch":
        return from_torch(model, args)
    return from_exported_program(torch.export.export(model.eval(), args).run_decompositions())


def outputs_of(model: nn.Module, args: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        out = model.eval()(*args)
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def assert_matches(model: nn.Module, args: tuple, form: str = "pre_dispatch", tol: float = 1e-4):
    """Convert, run the interpreter, compare every output with torch; return the graph."""
    g = convert(model, args, form)
    got = interp.run(g, [a.numpy() for a in args])
    got = got if isinstance(got, list) else [got]
    want = outputs_of(model, args)
    assert len(got) == len(want)
    for y, ref in zip(got, want):
        assert y.shape == ref.shape and y.dtype == ref.dtype
        assert np.abs(y - ref).max() <= tol * max(np.abs(ref).max(), 1e-30)
    assert parse_mlir(print_mlir(g), g.constants) == g
    return g


def rand(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class Fn(nn.Module):
    """A module around a function (for op-coverage cases)."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for k, m in modules.items():
            setattr(self, k, m)

    def forward(self, x, *more):
        return self.fn(self, x, *more)


# ---- the five test architectures ----------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_block_matches_torch(block, form):
    model, x = BLOCKS[block]()
    g = assert_matches(model, (x,), form)
    assert g.inputs == ("x",) and g.outputs == ("output",)
    assert "batchnorm" in g.count_ops() or "BatchNorm" not in repr(model)   # BN is kept for canonicalize


def test_weights_are_constants_named_after_their_parameters():
    model, x = BLOCKS["mbv2_block"]()
    g = from_torch(model, (x,))
    assert {"expand.weight", "depthwise.weight", "bn2.running_var", "project.weight"} <= set(g.constants)
    np.testing.assert_array_equal(g.const("depthwise.weight"), model.depthwise.weight.detach().numpy())
    assert g.node("depthwise").op == "conv2d" and g.node("depthwise").attr("groups") == 96
    assert g.node("bn2").op == "batchnorm"


def test_linear_in_core_aten_form_uses_the_untransposed_weight():
    model, x = BLOCKS["mlp"]()
    g = convert(model, (x,), "core_aten")
    assert g.count_ops() == {"linear": 3, "relu": 2}
    np.testing.assert_array_equal(g.const("fc1.weight"), model.fc1.weight.detach().numpy())


# ---- op coverage ----------------------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
def test_grouped_dilated_strided_conv(form):
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4)
    same = nn.Conv2d(8, 4, (3, 4), padding="same", dilation=(1, 2), bias=False)
    model = Fn(lambda m, x: (m.conv(x).relu(), m.same(x).relu()), conv=conv, same=same)
    g = assert_matches(model, (rand(2, 8, 11, 10),), form)
    assert g.node("conv").attr_dict == {"dilation": (2, 2), "groups": 4, "pad": (2, 2, 2, 2), "stride": (2, 2)}
    assert g.node("same").attr("pad") == (1, 3, 1, 3)


def test_conv1d():
    assert_matches(Fn(lambda m, x: m.c(x), c=nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2)), (rand(1, 4, 9),))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool_padding_and_ceil_mode(ceil_mode, count_include_pad, form):
    pool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    assert_matches(Fn(lambda m, x: m.p(x), p=pool), (rand(1, 2, 8, 9),), form)


@pytest.mark.parametrize("form", FORMS)
def test_max_pool_and_adaptive_pools(form):
    def fn(m, x):
        return (F.max_pool2d(x, 3, 2, padding=1, dilation=1, ceil_mode=True), F.adaptive_avg_pool2d(x, (2, 3)),
                F.adaptive_avg_pool2d(x, 1), x.mean((2, 3), keepdim=True), x.mean(-1), x.sum(1), x.amax(2, True))
    g = assert_matches(Fn(fn), (rand(1, 3, 8, 9),), form)
    assert g.count_ops()["global_avgpool"] == 2


@pytest.mark.parametrize("form", FORMS)
def test_activations(form):
    def fn(m, x):
        return (F.hardswish(x), F.hardsigmoid(x), F.silu(x), torch.tanh(x), torch.sigmoid(x), F.relu6(x),
                F.gelu(x), F.gelu(x, approximate="tanh"), F.leaky_relu(x, 0.2), x.clamp(-0.5, 0.7),
                F.hardtanh(x, -2.0, 2.0), torch.clamp_min(x, 0.1), m.act(x * 1))
    assert_matches(Fn(fn, act=nn.ReLU(inplace=True)), (rand(2, 3, 5) * 4,), form)


@pytest.mark.parametrize("form", FORMS)
def test_arithmetic_with_scalars_and_tensors(form):
    def fn(m, x, y):
        z = torch.add(x, y, alpha=2) - torch.sub(y, 1.5, alpha=3) + 1 - x * 0.5 + x / 4 - 2 * y / (y.abs() + 1)
        return z, torch.rsub(x, 3.0), -x, x.exp(), x.abs().sqrt(), torch.rsqrt(x.abs() + 1), x.pow(2), x ** 3, \
            torch.maximum(x, y), x + m.k, x * torch.tensor([1.0, 2.0, 3.0, 4.0])
    model = Fn(fn)
    model.register_buffer("k", torch.arange(4.0))
    g = assert_matches(model, (rand(3, 4), rand(1, 4, seed=1)), form)
    assert "k" in g.constants


@pytest.mark.parametrize("form", FORMS)
def test_pad_modes(form):
    def fn(m, x):
        return (F.pad(x, (1, 2)), F.pad(x, (1, 0, 2, 1), value=-1.5), F.pad(x, (2, 1, 1, 2), mode="reflect"),
                F.pad(x, (1, 1, 0, 2), mode="replicate"), m.zp(x))
    g = assert_matches(Fn(fn, zp=nn.ZeroPad2d((0, 1, 1, 0))), (rand(1, 2, 5, 6),), form)
    assert g.count_ops() == {"pad": 5} if form == "pre_dispatch" else {"pad": 3, "gather": 4}


@pytest.mark.parametrize("form", FORMS)
def test_shape_ops(form):
    def fn(m, x):
        a, b = x.split([1, 2], dim=1)
        c0, c1 = x.chunk(2, dim=-1)
        u = x.unbind(2)
        return (x.unsqueeze(0).squeeze(0).unsqueeze(-1), x.permute(0, 2, 3, 1), x.transpose(1, 3), x.flatten(1),
                x[:, 1:, ::2, -1], x[0, 2], torch.cat([b, a, a], 1), c1 - c0, u[1] * 2, torch.stack([a, a], 2),
                a.expand(2, 3, 4, 6), x.repeat(1, 2, 1, 1), x.reshape(2, -1, 2).contiguous(), x.narrow(3, 1, 3))
    assert_matches(Fn(fn), (rand(2, 3, 4, 6),), form)


@pytest.mark.parametrize("form", FORMS)
def test_norms_softmax_and_matmul(form):
    def fn(m, x):
        h = m.ln(x) + F.layer_norm(x, (4, 6))
        att = torch.softmax(h @ h.transpose(-1, -2), dim=-1) @ h
        return att, F.log_softmax(x * 10, dim=1), torch.bmm(x, x.transpose(1, 2)), m.bn(m.fc(x.flatten(1))), \
            x @ m.w
    model = Fn(fn, ln=nn.LayerNorm(6), bn=nn.BatchNorm1d(5), fc=nn.Linear(24, 5))
    model.w = nn.Parameter(rand(6, 3))
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1), model.bn.running_var.uniform_(0.5, 2)
    assert_matches(model, (rand(2, 4, 6),), form)


@pytest.mark.parametrize("form", FORMS)
def test_indexing_max_and_upsampling(form):
    def fn(m, x):
        return (x[:, [2, 0]], x[..., torch.tensor([3, 1, 1])], x.max(1).values, x.min(-1, keepdim=True)[0],
                torch.max(x, 0.5 - x), x.min().reshape(1), F.interpolate(x, scale_factor=(2, 3)))
    assert_matches(Fn(fn), (rand(1, 3, 4, 5),), form)


@pytest.mark.parametrize("form", FORMS)
def test_indexing_with_several_index_tensors_follows_torch_placement(form):
    """Adjacent indexed dims keep their place (HF's mask[b_idx, None, None, kv_idx] style), separated ones
    move to the front."""
    b = torch.arange(2)[:, None, None]
    c = torch.tensor([[0, 2, 2], [1, 0, -1]])
    def fn(m, x):
        return x[b, torch.tensor([1, 0, 2])], x[:, c, torch.tensor([3, 1, 0])], x[b, :, :, torch.tensor([4, 0])]
    assert_matches(Fn(fn), (rand(2, 3, 4, 5),), form)


def test_bool_and_or_of_masks():
    def fn(m, x):
        a, b = x > 0, x < 0.5
        return torch.where(a & b, x, -x), torch.where(a | b, x, 0 * x), torch.where(a ^ b, x, 2 * x)
    assert_matches(Fn(fn), (rand(2, 3, 4),))


@pytest.mark.parametrize("route", ["torch", "onnx"])
@pytest.mark.parametrize("pool", ["avg", "max", "avg-one-dim"])
def test_a_ceil_mode_pool_window_larger_than_its_input_is_a_global_pool(pool, route, tmp_path):
    """transformers' EfficientNetModel pools a 2x2 map with AvgPool2d(1280, ceil_mode=True): one window
    clipped to the input (it was refused as 'window larger than padded input')."""
    layer = {"avg": nn.AvgPool2d(320, ceil_mode=True), "max": nn.MaxPool2d(7, ceil_mode=True),
             "avg-one-dim": nn.AvgPool2d((5, 3), ceil_mode=True)}[pool]
    model, x = nn.Sequential(nn.Conv2d(3, 4, 1), layer).eval(), rand(2, 3, 3, 3)
    if route == "torch":
        g = from_torch(model, (x,))
    else:
        from dyadiq import api
        torch.onnx.export(model, (x,), str(tmp_path / "p.onnx"), dynamo=False, opset_version=17)
        g = api.load(tmp_path / "p.onnx")
    assert [n.op for n in g.nodes][-1] == ("reduce_max" if pool == "max" else "global_avgpool")
    np.testing.assert_allclose(interp.run(g, [x.numpy()]), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_prelu():                                  # core ATen has it as where(x > 0, ...): pre-dispatch only
    model = Fn(lambda m, x: (m.prelu(x), F.prelu(x, torch.tensor([0.3]))), prelu=nn.PReLU(3, 0.1))
    assert_matches(model, (rand(1, 3, 4, 5),))


def test_embedding_gathers_rows():
    model = Fn(lambda m, x: m.emb(x).sum(1), emb=nn.Embedding(10, 4))
    g = assert_matches(model, (torch.tensor([[1, 2, 9], [0, 0, 3]]),))
    assert g.type_of("x").dtype == "i64" and g.node("emb").op == "gather"


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention(causal):
    mask = torch.triu(torch.full((5, 7), -1e4), 2)

    def fn(m, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None if causal else m.mask, is_causal=causal)
    model = Fn(fn)
    model.register_buffer("mask", mask)
    shape_k = (1, 2, 5 if causal else 7, 8)
    assert_matches(model, (rand(1, 2, 5, 8), rand(*shape_k, seed=1), rand(*shape_k, seed=2)))


def test_torch_transformer_encoder_layer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True, activation="gelu")
    g = assert_matches(layer, (rand(2, 5, 16),))
    assert g.count_ops()["softmax"] == 1 and "dropout" not in g.count_ops()


def test_multiple_outputs_and_passthrough_are_named_outputs():
    g = from_torch(Fn(lambda m, x: (x.relu(), x, x.relu())), (rand(2, 3),))
    assert g.outputs == ("output_0", "output_1", "output_2") and g.inputs == ("x",)
    ys = interp.run(g, rand(2, 3).numpy())
    np.testing.assert_array_equal(ys[1], rand(2, 3).numpy())


def test_unused_results_are_dropped():
    g = from_torch(Fn(lambda m, x: x.split(1, dim=1)[2] + 1), (rand(2, 4),))
    assert g.count_ops() == {"slice": 1, "add": 1}


def test_from_torch_keeps_the_training_flag():
    model, x = BLOCKS["residual_block"]()
    model.train()
    from_torch(model, (x,))
    assert model.training


def test_pt2_round_trip(tmp_path):
    model, x = BLOCKS["pool_concat_cnn"]()
    ep = torch.export.export(model, (x,))
    torch.export.save(ep, tmp_path / "m.pt2")
    assert load_pt2(tmp_path / "m.pt2") == from_exported_program(ep)


def test_scalar_valued_model():
    assert_matches(Fn(lambda m, x: x.mean() * 2), (rand(2, 3),))


# ---- failures ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, op", [
    (lambda m, x: torch.cummax(x, 1).values, "aten.cummax"),
    (lambda m, x: torch.sort(x, 1).values, "aten.sort"),
    (lambda m, x: torch.fft.rfft(x).abs(), "aten.fft_rfft"),
])
def test_unsupported_op_is_named(fn, op):
    with pytest.raises(FrontendError, match=rf"unsupported torch op {op}\.\w+ at node \w+"):
        from_torch(Fn(fn), (rand(2, 8),))


def test_op_without_converter_is_decomposed_when_that_helps():
    g = assert_matches(Fn(lambda m, x: F.glu(x, -1)), (rand(2, 8),))       # aten.glu -> slices, sigmoid, mul
    assert g.count_ops() == {"slice": 2, "sigmoid": 1, "mul": 1}


def test_input_mutation_is_refused():
    with pytest.raises(FrontendError, match="modifies its input x in place"):
        from_torch(Fn(lambda m, x: x.relu_()), (rand(2, 3),))


def test_capture_failure_is_a_frontend_error():
    def fn(m, x):
        return x * 2 if x.sum() > 0 else x           # data-dependent control flow
    with pytest.raises(FrontendError, match="^torch.export failed: "):
        from_torch(Fn(fn), (rand(2, 3),))


def test_training_mode_program_is_refused():
    model, x = BLOCKS["residual_block"]()
    ep = torch.export.export(model.train(), (x,))
    with pytest.raises(FrontendError, match="eval"):
        from_exported_program(ep)


def test_bad_pt2_files(tmp_path):
    with pytest.raises(FrontendError, match="no such file"):
        load_pt2(tmp_path / "missing.pt2")
    (tmp_path / "bad.pt2").write_bytes(b"not a zip file")
    with pytest.raises(FrontendError, match=r"bad\.pt2: not a valid torch.export \.pt2 file"):
        load_pt2(tmp_path / "bad.pt2")


# ---- EfficientNet-Lite0 -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0():
    from dyadiq import zoo
    model = zoo.efficientnet_lite0()
    return model, from_torch(model, (torch.zeros(1, 3, 224, 224),))


@pytest.mark.slow
def test_efficientnet_lite0_matches_torch_on_photo_crops(lite0):
    from dyadiq import zoo
    model, g = lite0
    x = zoo.photo_crops(8, split="eval")
    got = run_batched(g, x)
    want = outputs_of(model, (torch.from_numpy(x),))[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert g.count_ops()["batchnorm"] == 49 and g.count_ops()["conv2d"] == 49
    assert "_blocks.0._depthwise_conv.weight" in g.constants
    assert parse_mlir(print_mlir(g), g.constants) == g


@pytest.mark.slow
def test_efficientnet_lite0_recognizes_chelsea(lite0):
    from dyadiq import zoo
    _, g = lite0
    logits = interp.run(g, zoo.real_photos()["chelsea"][None])
    assert 281 <= int(np.argmax(logits)) <= 285          # tabby / tiger / Persian / Siamese / Egyptian cat
    assert math.isfinite(float(logits.max()))

