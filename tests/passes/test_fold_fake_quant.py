# SPDX-License-Identifier: Apache-2.0
"""fold_fake_quant: quantize/dequantize/fake-quant ops of a pre-quantized import become QuantTypes, the
result follows the quantized-graph contract, and integerize reproduces the QDQ model's numbers."""
import numpy as np
import pytest

from dyadiq.errors import IRError, PassError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.numerics import fake_quant as fq_ref
from dyadiq.ir.ops.fake_quant import QUANT_OPS
from dyadiq.ir.parser import parse_mlir
from dyadiq.ir.printer import print_mlir
from dyadiq.ir.types import QuantType
from dyadiq.passes.annotate_quant import check_contract
from dyadiq.passes.fold_fake_quant import fold_fake_quant, fold_fake_quant_report, quantize_missing
from dyadiq.passes.integerize import integerize
from dyadiq.stats import graph_stats

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 1, 3, 8, 8)).astype(np.float32)
SX, ZX, SY, ZY = 0.02, 3, 0.05, -128


def qa(s, z, bits=8, signed=True, axis=None):
    a = {"scale": tuple(np.atleast_1d(np.asarray(s, np.float64)).tolist()),
         "zero_point": tuple(np.atleast_1d(np.asarray(z, np.int64)).tolist()), "bits": bits, "signed": signed}
    return {**a, "axis": axis} if axis is not None else a


def qdq(b, x, s, z, **kw):
    """QuantizeLinear -> DequantizeLinear, ORT style."""
    return b.op("dequantize_linear", [b.op("quantize_linear", [x], **qa(s, z, **kw))], **qa(s, z, **kw))


def weight(b, name, shape, sx=SX, bias=True, bits=8):
    """int8 per-channel codes -> DQ, and an int32 bias at s_x s_w -> DQ (what ORT writes)."""
    o = shape[0]
    hi = (1 << (bits - 1)) - 1
    codes = RNG.integers(-hi, hi + 1, size=shape)
    sw = RNG.uniform(0.005, 0.02, size=o)
    wc = b.const(f"{name}_quantized", codes.astype(np.int8), dtype="i4" if bits == 4 else None)
    w = b.op("dequantize_linear", [wc], name=f"{name}_dq", **qa(sw, 0, bits=bits, axis=0))
    if not bias:
        return w, None, codes, sw
    bcodes = RNG.integers(-3000, 3000, size=o).astype(np.int32)
    bs = (np.float32(sx) * sw.astype(np.float32)).astype(np.float64)
    bb = b.op("dequantize_linear", [b.const(f"{name}_b_quantized", bcodes)], name=f"{name}_b", **qa(bs, 0, 32, axis=0))
    return w, bb, codes, sw


def ort_conv(relu_in_model=False):
    """x -> QDQ -> conv(DQ(w), DQ(b)) [-> relu] -> QDQ -> y."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, bias, _, _ = weight(b, "w", (8, 3, 3, 3))
    y = b.op("conv2d", [qdq(b, x, SX, ZX), w, bias], name="conv", pad=(1, 1, 1, 1))
    if relu_in_model:
        y = b.op("relu", [y], name="relu")
    return b.build([qdq(b, y, SY, ZY)])


def lsb(a, b, s):
    return np.rint(np.abs(np.asarray(a, np.float64) - b) / s).astype(int)


# ---- the ORT QDQ conv pattern ---------------------------------------------------------------------
def test_ort_conv_folds_into_quant_types():
    g = ort_conv()
    q, report = fold_fake_quant_report(g)
    assert not QUANT_OPS & set(q.count_ops()) and report == []
    conv = next(n for n in q.nodes if n.op == "conv2d")
    x, w, bias = conv.inputs
    assert q.quant_of(x) == QuantType.make(8, True, SX, ZX)
    qw = q.quant_of(w)
    assert qw.axis == 0 and qw.signed and qw.bits == 8 and not any(qw.zero_point)
    assert np.array_equal(fq_ref(q.const(w), qw), q.const(w))              # on its grid
    assert q.quant_of(bias) is None and q.quant_of(conv.name) == QuantType.make(8, True, SY, ZY)
    assert w == "w" and q.outputs == g.outputs                               # W_quantized -> W; names kept
    assert check_contract(q) == []


def test_integerized_fold_reproduces_the_qdq_model():
    g = ort_conv()
    ig = integerize(fold_fake_quant(g))
    d = np.concatenate([lsb(run(ig, x), run(g, x), SY).ravel() for x in X])
    assert d.max() <= 1 and (d == 0).mean() >= 0.99


def test_bias_codes_round_trip_exactly():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, bias, _, sw = weight(b, "w", (8, 3, 3, 3))
    g = b.build([qdq(b, b.op("conv2d", [qdq(b, x, SX, ZX), w, bias]), SY, ZY)])
    q = fold_fake_quant(g)
    codes = g.const("w_b_quantized").astype(np.int64)
    bf = q.const(q.nodes[0].inputs[2]).astype(np.float64)
    assert np.array_equal(np.rint(bf / (SX * sw)), codes)


def test_bias_at_a_different_scale_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, _, _, sw = weight(b, "w", (8, 3, 3, 3), bias=False)
    codes = b.const("bq", np.arange(8, dtype=np.int32) * 1000)
    bb = b.op("dequantize_linear", [codes], **qa(SX * sw * 1.3, 0, 32, axis=0))
    g = b.build([qdq(b, b.op("conv2d", [qdq(b, x, SX, ZX), w, bb]), SY, ZY)])
    _, report = fold_fake_quant_report(g)
    assert [r["kind"] for r in report] == ["bias"] and report[0]["max_lsb"] > 0


def test_relu_before_the_qdq_leaves_the_conv_fused():
    q = fold_fake_quant(ort_conv(relu_in_model=True))
    relu = next(n for n in q.nodes if n.op == "relu")                           # named as the graph output
    assert q.quant_of("conv") is None and q.quant_of(relu.name) is not None and relu.name == q.outputs[0]
    assert check_contract(q) == []
    assert "requantize" in integerize(q).count_ops()


def test_clip_absorbed_by_the_q_range_is_the_requantize_clamp():
    g = ort_conv()
    ig = integerize(fold_fake_quant(g))
    y = np.concatenate([run(ig, x).ravel() for x in X])
    assert y.min() >= SY * (-128 - ZY) - 1e-6                               # [0, ...]: relu absorbed


# ---- other activation patterns ----------------------------------------------------------------------
def test_residual_add_with_different_scales():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, bias, _, _ = weight(b, "w", (3, 3, 3, 3))
    xq = qdq(b, x, SX, ZX)
    c = qdq(b, b.op("conv2d", [xq, w, bias], pad=(1, 1, 1, 1)), 0.03, -5)
    g = b.build([qdq(b, b.op("add", [c, xq], name="add"), 0.07, 2)])
    q, report = fold_fake_quant_report(g)
    assert report == [] and q.node(q.outputs[0]).op == "add" and q.quant_of(q.outputs[0]).scale == (0.07,)
    ig = integerize(q)
    assert "qadd" in ig.count_ops()
    d = np.concatenate([lsb(run(ig, x), run(g, x), 0.07).ravel() for x in X])
    assert d.max() <= 1 and (d == 0).mean() >= 0.99


def test_data_movement_without_qdq_inherits_and_concat_shares():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    xq = qdq(b, x, SX, ZX)
    p = b.op("maxpool", [xq], name="pool", kernel=(2, 2), stride=(2, 2))
    r = b.op("reshape", [p], name="flat", shape=(1, 48))
    cat = b.op("concat", [r, r], name="cat", axis=1)
    w, bias, _, _ = weight(b, "fc", (4, 96))
    g = b.build([qdq(b, b.op("linear", [cat, w, bias]), SY, ZY)])
    q = fold_fake_quant(g)
    assert q.quant_of("pool") == q.quant_of("flat") == q.quant_of("cat") == QuantType.make(8, True, SX, ZX)
    d = np.concatenate([lsb(run(integerize(q), x), run(g, x), SY).ravel() for x in X])
    assert d.max() <= 1


def test_integer_data_movement_of_qoperator_models():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    qx = b.op("quantize_linear", [x], **qa(SX, ZX))
    p = b.op("maxpool", [qx], name="pool", kernel=(2, 2), stride=(2, 2))           # on int8 codes
    r = b.op("reshape", [p], name="flat", shape=(1, 48))
    w, bias, _, _ = weight(b, "fc", (4, 48))
    y = b.op("linear", [b.op("dequantize_linear", [r], **qa(SX, ZX)), w, bias], name="fc")
    g = b.build([qdq(b, y, SY, ZY)])
    q = fold_fake_quant(g)
    assert q.type_of("flat").dtype == "f32" and q.quant_of("flat") == QuantType.make(8, True, SX, ZX)
    d = np.concatenate([lsb(run(integerize(q), x), run(g, x), SY).ravel() for x in X])
    assert d.max() <= 1


def test_gemm_on_dequantized_weights_becomes_a_linear_layer_with_bias():
    b = GraphBuilder()
    x = b.input("x", (1, 16))
    w, bias, _, _ = weight(b, "fc", (4, 16))
    wt = b.op("transpose", [w], perm=(1, 0))                                    # Gemm(transB=1) import
    y = b.op("add", [b.op("matmul", [qdq(b, x, SX, ZX), wt]), bias], name="gemm")
    g = b.build([qdq(b, y, SY, ZY)])
    q = fold_fake_quant(g)
    (lin,) = q.nodes
    assert lin.op == "linear" and lin.inputs[1] == "fc" and len(lin.inputs) == 3 and q.quant_of("fc").axis == 0
    xs = RNG.normal(size=(16, 1, 16)).astype(np.float32)
    d = np.concatenate([lsb(run(integerize(q), v), run(g, v), SY).ravel() for v in xs])
    assert d.max() <= 1


def test_torch_style_fake_quant_of_input_weights_and_output():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    wf = b.const("conv.weight", RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.1)
    s = np.abs(np.asarray(b.constants["conv.weight"])).reshape(8, -1).max(1) / 127
    w = b.op("fake_quant", [wf], **qa(s, 0, axis=0), qmin=-127, qmax=127)
    y = b.op("relu", [b.op("conv2d", [b.op("fake_quant", [x], **qa(SX, ZX)), w], name="conv")], name="relu")
    g = b.build([b.op("fake_quant", [y], **qa(SY, ZY))])
    q, report = fold_fake_quant_report(g)
    assert report == [] and q.quant_of("conv.weight").axis == 0 and q.node(q.outputs[0]).op == "relu"
    assert q.quant_of("x") == QuantType.make(8, True, SX, ZX) and q.quant_of("conv") is None
    d = np.concatenate([lsb(run(integerize(q), v), run(g, v), SY).ravel() for v in X])
    assert d.max() <= 1 and (d == 0).mean() >= 0.99


def test_int4_weights_keep_four_bits():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, bias, codes, _ = weight(b, "w", (8, 3, 3, 3), bits=4)
    g = b.build([qdq(b, b.op("conv2d", [qdq(b, x, SX, ZX), w, bias]), SY, ZY)])
    q = fold_fake_quant(g)
    assert q.quant_of("w").bits == 4
    ig = integerize(q)
    assert any(ig.type_of(c).dtype == "i4" for c in ig.constants)


# ---- weights that are not signed symmetric -----------------------------------------------------------
def test_uint8_weights_with_zero_point_128_are_int8_exactly():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    codes = RNG.integers(0, 256, size=(8, 3, 3, 3)).astype(np.uint8)
    w = b.op("dequantize_linear", [b.const("w", codes)], **qa(np.full(8, 0.01), 128, signed=False, axis=0))
    g = b.build([qdq(b, b.op("conv2d", [qdq(b, x, SX, ZX), w]), SY, ZY)])
    q, report = fold_fake_quant_report(g)
    wn = q.nodes[0].inputs[1]
    assert report == [] and q.quant_of(wn) == QuantType.make(8, True, np.full(8, 0.01), 0, 0)
    assert np.array_equal(q.const(wn), ((codes.astype(np.float64) - 128) * 0.01).astype(np.float32))


def test_asymmetric_weights_are_requantized_and_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    codes = RNG.integers(-128, 128, size=(8, 3, 3, 3)).astype(np.int8)
    w = b.op("dequantize_linear", [b.const("w", codes)], **qa(np.full(8, 0.01), 40, axis=0))
    g = b.build([qdq(b, b.op("conv2d", [qdq(b, x, SX, ZX), w]), SY, ZY)])
    q, report = fold_fake_quant_report(g)
    assert [(r["kind"], r["max_lsb"]) for r in report] == [("weight", 0.5)]
    qw = q.quant_of(q.nodes[0].inputs[1])
    assert qw.bits == 8 and not any(qw.zero_point) and check_contract(q) == []
    integerize(q)


# ---- deviations that are reported --------------------------------------------------------------------
def test_value_quantized_twice_gets_a_requantized_copy():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, bias, _, _ = weight(b, "w", (4, 3, 3, 3))
    y1 = qdq(b, b.op("conv2d", [qdq(b, x, SX, ZX), w, bias], pad=(1, 1, 1, 1)), SY, 0)
    y2 = qdq(b, b.op("relu", [qdq(b, x, 0.01, 0)]), 0.01, 0)                  # x quantized a second way
    g = b.build([y1, y2])
    q, report = fold_fake_quant_report(g)
    assert [r["kind"] for r in report] == ["requantize"]
    assert report[0]["max_lsb"] == pytest.approx(0.5 + 0.5 * SX / 0.01)
    assert q.count_ops()["identity"] == 1
    ig = integerize(q)
    d = np.concatenate([lsb(run(ig, v)[1], run(g, v)[1], 0.01).ravel() for v in X])
    assert d.max() <= report[0]["max_lsb"] and d.max() == 1                       # rounded twice


def test_reading_the_unquantized_value_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.op("relu", [qdq(b, x, SX, ZX)], name="relu")
    s = b.op("sigmoid", [y], name="sig")                                           # reads relu raw
    g = b.build([qdq(b, b.op("add", [qdq(b, y, SX, ZX), qdq(b, s, 0.004, -128)], name="add"), SY, 0)])
    _, report = fold_fake_quant_report(g)
    assert [(r["kind"], r["node"], r["value"]) for r in report] == [("raw-read", "sig", "relu")]


def test_narrow_clamp_range_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    g = b.build([b.op("fake_quant", [x], **qa(0.1, 0), qmin=-127, qmax=127)])
    _, report = fold_fake_quant_report(g)
    assert [(r["kind"], r["max_lsb"]) for r in report] == [("narrow-range", 1.0)]


def test_values_left_float_are_reported_and_can_be_calibrated():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, bias, _, _ = weight(b, "w", (8, 3, 3, 3))
    g = b.build([b.op("conv2d", [qdq(b, x, SX, ZX), w, bias], name="out")])     # PT2E: float output
    q, report = fold_fake_quant_report(g)
    assert [(r["kind"], r["value"], r["max_lsb"]) for r in report] == [("unquantized", "out", None)]
    with pytest.raises(PassError, match="out"):
        integerize(q)
    done = quantize_missing(q, X[:8, 0])
    assert done.quant_of("out") is not None and done.quant_of("x") == q.quant_of("x")
    integerize(done)


def test_multiplier_out_of_range_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w, _, _, _ = weight(b, "w", (8, 3, 3, 3), bias=False)
    g = b.build([qdq(b, b.op("conv2d", [qdq(b, x, 1e4, 0), w]), 1e-12, 0)])
    _, report = fold_fake_quant_report(g)
    assert [r["kind"] for r in report] == ["multiplier-range"]


# ---- errors -----------------------------------------------------------------------------------------
def test_dequantize_with_other_parameters_than_the_quantize_is_an_error():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    g = b.build([b.op("dequantize_linear", [b.op("quantize_linear", [x], **qa(0.1, 0))], name="dq", **qa(0.2, 0))])
    with pytest.raises(PassError, match=r"\[%dq dequantize_linear\].*quantized with"):
        fold_fake_quant(g)


def test_dequantizing_an_integer_graph_input_is_an_error():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "i8")
    g = b.build([b.op("dequantize_linear", [x], name="dq", **qa(0.1, 0))])
    with pytest.raises(PassError, match=r"\[%dq dequantize_linear\] dequantizes %x"):
        fold_fake_quant(g)


@pytest.mark.parametrize("attrs,msg", [
    (qa(0.0, 0), "scale must be positive"), (qa(-1.0, 0), "scale must be positive"),
    (qa(0.1, 300), "zero point 300 is out of range"), (qa([0.1, 0.2, 0.3], 0, axis=1), "3 scales for axis 1"),
])
def test_malformed_quantization_parameters_are_refused(attrs, msg):
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    with pytest.raises(IRError, match=msg):
        b.op("quantize_linear", [x], **attrs)


# ---- properties -------------------------------------------------------------------------------------
def test_graph_without_quantization_ops_is_returned_unchanged_and_fold_is_idempotent():
    q = fold_fake_quant(ort_conv())
    assert fold_fake_quant(q) is q


def test_quantization_ops_kernels_follow_the_numerics_contract():
    b = GraphBuilder()
    x = b.input("x", (1, 64))
    g = b.build([b.op("fake_quant", [x], **qa(0.1, -3)), b.op("quantize_linear", [x], **qa(0.1, -3, 4))])
    v = (np.arange(64, dtype=np.float32) - 32)[None] * np.float32(0.05)             # exact ties at .5
    y, codes = run(g, v)
    ref = QuantType.make(8, True, 0.1, -3)
    assert np.array_equal(y, fq_ref(v, ref)) and codes.dtype == np.int8
    assert codes.min() == -8 and codes.max() == 7


def test_printed_ir_round_trips_and_stats_list_the_folded_quant_params():
    g = ort_conv()
    assert parse_mlir(print_mlir(g), dict(g.constants)) == g
    stats = graph_stats(fold_fake_quant(g))
    rows = {r["value"]: r for r in stats["quant"]}
    assert rows["x"]["scale"] == [SX] and rows["x"]["zero_point"] == [ZX] and rows["w"]["axis"] == 0


def test_integer_graph_output_is_an_error():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    g = b.build([b.op("quantize_linear", [x], name="q", **qa(0.1, 0))])
    with pytest.raises(PassError, match="graph output %q is the integer tensor"):
        fold_fake_quant(g)
