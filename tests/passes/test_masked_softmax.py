# SPDX-License-Identifier: Apache-2.0
"""Attention masks: every exporter spelling of a mask bias folds into softmax(scores, keep), the float
function stays the same, and the quantized model compiles to a CPU artifact equal to the interpreter."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dyadiq.frontend.torch_export import from_torch
from dyadiq.interp import run
from dyadiq.passes.canonicalize import canonicalize

B, T, D, H = 3, 8, 16, 2


def _masks(lengths=(8, 5, 2)) -> np.ndarray:
    """int64 [B, T] padding masks (1: a token, 0: padding at the end); every row keeps at least one token."""
    return (np.arange(T)[None] < np.asarray(lengths)[:, None]).astype(np.int64)


class Attention(nn.Module):
    """One self-attention block whose mask is written the way ``spelling`` says."""

    def __init__(self, spelling: str):
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.out, self.spelling = nn.Linear(D, 3 * D), nn.Linear(D, D), spelling

    def forward(self, x, mask):
        q, k, v = (t.reshape(B, T, H, D // H).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        m = mask[:, None, None, :]
        if self.spelling == "sdpa-bool":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=m.bool().expand(B, H, T, T))
        elif self.spelling == "sdpa-causal":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = q @ k.transpose(-1, -2) / math.sqrt(D // H)
            if self.spelling == "one-minus-times-big":
                s = s + (1.0 - m.float()) * -10000.0
            elif self.spelling == "where-finfo-min":
                s = s + torch.where(m.bool(), 0.0, torch.finfo(torch.float32).min)
            elif self.spelling == "masked-fill-inf":
                s = s.masked_fill(m == 0, float("-inf"))
            elif self.spelling == "causal-finfo-min":                 # GPT-2 eager without a mask input
                s = s + torch.triu(torch.full((T, T), torch.finfo(torch.float32).min), 1)
            elif self.spelling == "padding-times-big":
                s = s + (m == 0).float() * -1e9
            elif self.spelling == "small-bias":                      # a real bias, not a mask
                s = s + (1.0 - m.float()) * -2.0
            y = torch.softmax(s, dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(B, T, D))


SPELLINGS = ["sdpa-bool", "one-minus-times-big", "where-finfo-min", "masked-fill-inf", "padding-times-big",
             "sdpa-causal", "causal-finfo-min"]


def _inputs():
    x = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)
    return x, _masks()


def _graph(spelling):
    model = Attention(spelling).eval()
    x, m = _inputs()
    return model, canonicalize(from_torch(model, (torch.from_numpy(x), torch.from_numpy(m))))


def _softmaxes(g):
    return [n for n in g.nodes if n.op == "softmax"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_each_mask_spelling_becomes_a_keep_operand_and_the_function_stays(spelling):
    model, g = _graph(spelling)
    (sm,) = _softmaxes(g)
    assert len(sm.inputs) == 2 and not g.type_of(sm.inputs[1]).is_float
    assert g.is_const(sm.inputs[1]) == ("causal" in spelling)
    assert all(not (g.is_const(i) and np.asarray(g.const(i)).min(initial=0) <= -1e4)
               for n in g.nodes for i in n.inputs), "the large negative bias is gone"
    x, m = _inputs()
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(m)).numpy()
    got = run(g, {g.inputs[0]: x, g.inputs[1]: m}, mode="float")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_small_bias_is_not_a_mask():
    _, g = _graph("small-bias")
    (sm,) = _softmaxes(g)
    assert len(sm.inputs) == 1


def test_the_masked_softmax_gives_padding_zero_weight_and_an_empty_row_zeros():
    from dyadiq.ir.ops import op_def
    x = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    keep = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.int64)
    (p,) = op_def("softmax").kernel([x, keep], {"axis": -1})
    e = np.exp([-1.0, 0.0])
    np.testing.assert_allclose(p[0], list(e / e.sum()) + [0, 0], rtol=1e-6)
    assert np.all(p[1] == 0)


def test_torch_onnx_nan_guard_after_softmax_is_dropped(tmp_path):
    pytest.importorskip("onnx")
    from dyadiq import api
    model = Attention("sdpa-bool").eval()
    x, m = _inputs()
    path = tmp_path / "att.onnx"
    torch.onnx.export(model, (torch.from_numpy(x), torch.from_numpy(m)), str(path), input_names=["x", "mask"],
                      dynamo=False, opset_version=17)
    g = api.load(path)
    assert any(n.op == "isnan" for n in g.nodes), "the export has the guard this test is about"
    c = canonicalize(g)
    assert not any(n.op in ("isnan", "where") for n in c.nodes)
    (sm,) = _softmaxes(c)
    assert len(sm.inputs) == 2
    np.testing.assert_allclose(run(c, {"x": x, "mask": m}, mode="float"), run(g, {"x": x, "mask": m}, mode="float"),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spelling", ["sdpa-bool", "one-minus-times-big", "causal-finfo-min"])
def test_a_masked_attention_compiles_for_cpu_equal_to_the_interpreter(spelling):
    pytest.importorskip("tvm")
    import dyadiq
    import dyadiq.api
    from dyadiq.passes.pipeline import quantize
    model, g = _graph(spelling)
    rng = np.random.default_rng(1)
    calib = {g.inputs[0]: rng.normal(size=(4 * B, T, D)).astype(np.float32),
             g.inputs[1]: np.concatenate([_masks((8, 5, 2)), _masks((3, 8, 6)), _masks((1, 4, 7)), _masks()])}
    q, _ = quantize(g, calib, calib_method="minmax", rounding="nearest")
    x, m = _inputs()
    feeds = {g.inputs[0]: x, g.inputs[1]: m}
    want = dyadiq.api.run(q, feeds, mode="integer")[q.outputs[0]]
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(m)).numpy()
    assert 10 * np.log10((ref**2).sum() / ((want - ref) ** 2).sum()) > 25.0
    got = dyadiq.compile(q, target="cpu").run(feeds)
    assert np.array_equal(np.asarray(got), want)


def test_attention_is_found_and_a_softmax_classifier_head_is_not():
    from dyadiq.passes.presets import has_attention
    _, g = _graph("sdpa-bool")
    assert has_attention(g)
    head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Softmax(-1)).eval()
    assert not has_attention(from_torch(head, (torch.randn(1, 3, 8, 8),)))


def test_the_transformer_preset_applies_only_to_untouched_defaults():
    from dyadiq.passes.pipeline import quantize
    _, g = _graph("one-minus-times-big")
    rng = np.random.default_rng(1)
    calib = {g.inputs[0]: rng.normal(size=(2 * B, T, D)).astype(np.float32),
             g.inputs[1]: np.concatenate([_masks((8, 5, 2)), _masks((3, 8, 6))])}
    _, auto = quantize(g, calib)
    assert auto["preset"] == "transformer"
    assert (auto["options"]["calib_method"], auto["options"]["rounding"], auto["options"]["wide_acts"]) == \
        ("minmax", "nearest", 0.3)
    for kw in ({"preset": "none"}, {"rounding": "nearest"}):
        _, kept = quantize(g, calib, **kw)
        assert kept["preset"] is None and kept["options"]["calib_method"] == "mse"
