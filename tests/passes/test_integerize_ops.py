# SPDX-License-Identifier: Apache-2.0
"""integerize's lowerings for what real models export beyond conv/linear: constant tensor operands (per-channel
scale and shift, e.g. a BatchNorm after a concat; a ViT's class token concatenated to the patches), differences
of two activations, nearest resize and constant gathers (a scalar index removes its axis) as index maps on the
codes, max/min reductions and sums. Each integer graph tracks simulated mode within
one output step (at the calibrated range ends too) and the cpu artifact equals the interpreter bit for bit."""
import numpy as np
import pytest

from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.integerize import integerize
from dyadiq.targets import compile as build
from quant_helpers import simple_quantize

RNG = np.random.default_rng(9)
SHAPE = (1, 4, 6, 6)


def _model(kind: str):
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    c = RNG.normal(size=(1, 4, 1, 1)).astype(np.float32)
    c[0, 1] = 0.0                                                       # a zero scale
    if kind == "affine":                                                # BatchNorm left after a concat
        y = b.op("add", [b.op("mul", [x, b.const("k", c)]), b.const("t", RNG.normal(size=(1, 4, 1, 1)).astype(np.float32))])
    elif kind == "const_minus_x":
        y = b.op("sub", [b.const("t", RNG.normal(size=(4, 1, 1)).astype(np.float32)), x])
    elif kind == "difference":                                          # PRelu as relu(x) - a * relu(-x)
        pos = b.op("relu", [x])
        neg = b.op("mul", [b.op("relu", [b.op("neg", [x])]), b.const("a", np.abs(c))])
        y = b.op("sub", [pos, neg])
    elif kind == "resize_nearest":
        y = b.op("resize", [x], size=(1, 4, 12, 9), mode="nearest", coord="asymmetric", nearest_mode="floor")
    elif kind == "gather":
        y = b.op("gather", [x, b.const("i", np.array([3, 0, -1], np.int64))], axis=1)
    elif kind == "reduce_max":
        y = b.op("reduce_max", [x], axes=(2, 3), keepdims=True)
    elif kind == "max_of_two":                                         # differently scaled operands
        y = b.op("maximum", [b.op("relu", [x]), b.op("mul", [x, b.const("h", np.asarray(-0.5, np.float32))])])
    elif kind == "masked":                                             # Trilu-style constant mask
        mask = np.tril(np.ones((6, 6), bool))
        y = b.op("where", [b.const("m", mask), x, b.const("z", np.asarray(-1.5, np.float32))])
    elif kind == "reduce_sum":
        y = b.op("reduce_sum", [x], axes=(1,), keepdims=False)
    elif kind == "class_token":                                        # a ViT's cat([cls, patches]), then cls
        t = b.op("reshape", [x], shape=(1, 4, 36))
        y = b.op("concat", [b.const("cls", RNG.normal(size=(1, 4, 1)).astype(np.float32)), t], axis=2)
        y = b.op("gather", [y, b.const("first", np.asarray(0, np.int64))], axis=2)       # scalar: axis goes
    return b.build([y])


KINDS = ["affine", "const_minus_x", "difference", "resize_nearest", "gather", "reduce_max", "reduce_sum",
         "max_of_two", "masked", "class_token"]


@pytest.mark.parametrize("kind", KINDS)
def test_lowered_tracks_simulated_and_runs_bit_exact_on_cpu(kind):
    g = _model(kind)
    calib = RNG.normal(size=(8,) + SHAPE[1:]).astype(np.float32)
    q = simple_quantize(g, calib)
    ig = integerize(q)
    qx = q.quant_of("x")
    lo, hi = (np.array(qx.qrange) - qx.zero_point[0]) * qx.scale[0]
    xs = [calib[:1], np.full(SHAPE, lo, np.float32), np.full(SHAPE, hi, np.float32),
          RNG.uniform(lo, hi, size=SHAPE).astype(np.float32)]
    step = q.quant_of(q.outputs[0]).scale[0]
    for x in xs:
        assert np.max(np.abs(run(ig, [x]) - run(q, [x], "simulated"))) <= step * 1.0001, kind
    art = build(ig, "cpu")
    for x in xs:
        np.testing.assert_array_equal(art.run([x]), run(ig, [x]))


def test_a_scale_by_a_constant_is_one_requantize_per_channel():
    ig = integerize(simple_quantize(_model("affine"), RNG.normal(size=(4,) + SHAPE[1:]).astype(np.float32)))
    assert [n.op for n in ig.nodes] == ["quantize", "qmul", "requantize", "qadd", "dequantize"]


@pytest.mark.parametrize("coord,size", [("half_pixel", (1, 4, 12, 12)), ("align_corners", (1, 4, 11, 7)),
                                        ("pytorch_half_pixel", (1, 4, 3, 5)), ("asymmetric", (1, 4, 12, 6))])
def test_linear_resize_is_separable_integer_interpolation(coord, size):
    """Each resized axis: qlinear with its 8-bit interpolation matrix + per-row requantize. Within 1 output step
    of simulated mode, >= 33 dB from float (8-bit activations), bit-exact on cpu."""
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    g = b.build([b.op("resize", [x], size=size, mode="linear", coord=coord)])
    calib = RNG.normal(size=(8,) + SHAPE[1:]).astype(np.float32)
    q = simple_quantize(g, calib)
    ig = integerize(q)
    assert "qlinear" in [n.op for n in ig.nodes]
    xin = calib[:1]
    got, ref = run(ig, [xin]), run(g, [xin])
    assert np.max(np.abs(got - run(q, [xin], "simulated"))) <= q.quant_of(q.outputs[0]).scale[0] * 1.0001
    assert 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()) >= 33
    np.testing.assert_array_equal(build(ig, "cpu").run([xin]), got)


def test_cubic_resize_is_refused_with_its_mode():
    from dyadiq.errors import PassError
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    g = b.build([b.op("resize", [x], size=(1, 4, 12, 12), mode="cubic", coord="half_pixel")])
    with pytest.raises(PassError, match="resize mode 'cubic'"):
        integerize(simple_quantize(g, RNG.normal(size=(2,) + SHAPE[1:]).astype(np.float32)))


@pytest.mark.parametrize("op,last", [("argmax", False), ("argmin", True)])
def test_argmax_at_the_end_of_a_segmenter_runs_on_the_codes_and_leaves_the_graph_as_indices(op, last):
    """conv -> argmax over channels: the integer graph returns the i64 indices simulated mode gives (ties of
    quantized values included), bit-exact on cpu."""
    b = GraphBuilder()
    x = b.input("x", SHAPE)
    y = b.op("conv2d", [x, b.const("w", RNG.normal(size=(5, 4, 1, 1)).astype(np.float32))])
    g = b.build([b.op(op, [y], axis=1, keepdims=False, select_last_index=last)])
    calib = RNG.normal(size=(6,) + SHAPE[1:]).astype(np.float32)
    ig = integerize(simple_quantize(g, calib))
    assert ig.nodes[-1].op == op and ig.type_of(ig.outputs[0]).dtype == "i64"
    for xv in calib[:3]:
        xv = xv[None]
        got = run(ig, [xv])
        np.testing.assert_array_equal(got, run(simple_quantize(g, calib), [xv], "simulated"))
        np.testing.assert_array_equal(build(ig, "cpu").run([xv]), got)


@pytest.mark.parametrize("kind", ["normalize", "grn"])
def test_division_of_two_activations_is_integer_and_bit_exact_on_cpu(kind):
    """F.normalize (sentence embeddings) and ConvNeXt V2's global response normalization divide one
    activation by another: qdiv, close to float, the CPU artifact equal to the interpreter."""
    import torch
    from torch.nn import functional as F

    import dyadiq

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            h = self.conv(x)
            if kind == "normalize":
                return F.normalize(h.mean((2, 3)), dim=-1)
            g = torch.linalg.vector_norm(h, ord=2, dim=(2, 3), keepdim=True)
            return h + h * (g / (g.mean(dim=1, keepdim=True) + 1e-6))
    model, rng = Model().eval(), np.random.default_rng(0)
    g = dyadiq.from_torch(model, (torch.zeros(1, 3, 8, 8),))
    assert any(n.op == "div" for n in g.nodes)
    q, _ = dyadiq.quantize(g, rng.normal(size=(32, 3, 8, 8)).astype(np.float32), calib_method="minmax",
                           rounding="nearest")
    ig = integerize(q)
    assert any(n.op == "qdiv" for n in ig.nodes)
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    got = run(ig, [x])
    ref = model(torch.from_numpy(x)).detach().numpy()
    assert 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()) > 25.0
    assert np.array_equal(np.asarray(build(q, target="cpu").run(x)), got)


def test_an_integer_mask_cast_to_float_becomes_codes_by_requantize():
    """sentence-transformers' mean pooling multiplies by ``attention_mask.float()``: the cast of an integer
    input is a requantize of the integers (scale 1) to the codes of its range, exact for 0/1 masks."""
    import torch

    import dyadiq

    class Pool(torch.nn.Module):
        def forward(self, h, mask):
            m = mask.unsqueeze(-1).expand_as(h).float()
            return (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4, 6, 8)).astype(np.float32)
    mask = (np.arange(6)[None] < np.array([[6], [3], [1], [5]])).astype(np.int64)
    g = dyadiq.from_torch(Pool(), (torch.from_numpy(h[:2]), torch.from_numpy(mask[:2])))
    q, _ = dyadiq.quantize(g, {g.inputs[0]: h, g.inputs[1]: mask}, calib_method="minmax", rounding="nearest")
    ig = integerize(q)
    assert any(n.op == "requantize" and ig.type_of(n.inputs[0]).dtype == "i32" and n.inputs[0].endswith(".i32")
               for n in ig.nodes)
    got = np.concatenate([run(ig, [h[i:i + 2], mask[i:i + 2]]) for i in (0, 2)])
    ref = Pool()(torch.from_numpy(h), torch.from_numpy(mask)).numpy()
    assert 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()) > 25.0
    art = build(q, target="cpu")
    assert np.array_equal(np.concatenate([np.asarray(art.run([h[i:i + 2], mask[i:i + 2]])) for i in (0, 2)]), got)
