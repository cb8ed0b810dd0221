# SPDX-License-Identifier: Apache-2.0
"""ONNX QDQ export: onnxruntime on the exported model matches the simulated interpreter within 1 LSB."""
import numpy as np
import pytest

from dyadiq.errors import CodegenError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.annotate_quant import annotate_activations
from dyadiq.passes.calibrate import collect_ranges
from dyadiq.passes.quantize_weights import quantize_weights

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from dyadiq.export import to_onnx_qdq  # noqa: E402

R = np.random.default_rng(0)


def w(*shape, s=0.3):
    return (R.normal(size=shape) * s).astype(np.float32)


def cnn(batch=2):
    """Most CNN ops: conv (dense, depthwise, strided), relu, clip, residual add, pools, concat, pad, ..."""
    b = GraphBuilder()
    x = b.input("x", (batch, 3, 12, 12))
    h = b.op("relu", [b.op("conv2d", [x, b.const("w1", w(8, 3, 3, 3)), b.const("b1", w(8))], "c1",
                           pad=(1, 1, 1, 1))], "r1")
    d = b.op("conv2d", [h, b.const("wd", w(8, 1, 3, 3)), b.const("bd", w(8))], "dw", pad=(1, 1, 1, 1), groups=8)
    d = b.op("clip", [d], "r6", min=0.0, max=6.0)
    s = b.op("add", [d, b.op("conv2d", [h, b.const("w2", w(8, 8, 1, 1))], "c2")], "res")
    m = b.op("maxpool", [s], "mp", kernel=(2, 2), stride=(2, 2))
    a = b.op("avgpool", [s], "ap", kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1))
    c = b.op("concat", [m, a], "cat", axis=1)
    c = b.op("pad", [c], "pad", pads=(0, 0, 1, 1, 0, 0, 1, 1))
    c = b.op("conv2d", [c, b.const("w3", w(6, 16, 3, 3, s=0.1))], "c3", stride=(2, 2))
    c = b.op("hardswish", [b.op("silu", [c], "silu")], "hsw")
    c = b.op("mul", [c, b.op("sigmoid", [c], "sig")], "gate")
    f = b.op("reshape", [b.op("global_avgpool", [c], "gap")], "flat", shape=(batch, 6))
    return b.build([b.op("linear", [f, b.const("w4", w(5, 6)), b.const("b4", w(5))], "logits")])


def attention(batch=1):
    """Transformer ops: linear on 3-D input, transpose, matmul, softmax, layernorm, gelu, slice, tanh."""
    b = GraphBuilder()
    x = b.input("x", (batch, 6, 8))
    qk = b.op("linear", [x, b.const("wq", w(8, 8)), b.const("bq", w(8))], "q")
    kt = b.op("transpose", [qk], "kt", perm=(0, 2, 1))
    att = b.op("softmax", [b.op("matmul", [qk, kt], "scores")], "att", axis=-1)
    y = b.op("matmul", [att, x], "ctx")
    y = b.op("layernorm", [y, b.const("ln_g", 1 + w(8)), b.const("ln_b", w(8))], "ln", axis=-1)
    y = b.op("gelu", [y], "gelu")
    y = b.op("slice", [y], "sl", starts=(1,), ends=(5,), axes=(1,))
    return b.build([b.op("tanh", [y], "out")])


def quantized(g, n=24, act_bits=8, weight_bits=8, per_channel=True):
    x = R.normal(size=(n,) + g.type_of("x").shape[1:]).astype(np.float32)
    q = annotate_activations(g, collect_ranges(g, x, bits=act_bits), bits=act_bits)
    return quantize_weights(q, bits=weight_bits, per_channel=per_channel), x


def lsb_errors(q, model, x, fuse=True):
    """|onnxruntime - simulated| in steps of the output's scale (``fuse=False``: no QDQ -> QLinear fusion)."""
    so = ort.SessionOptions()
    if not fuse:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(model.SerializeToString(), so)
    b = q.type_of("x").shape[0]
    errs = []
    for i in range(0, len(x), b):
        got = sess.run(None, {"x": x[i:i + b]})[0]
        errs.append(np.abs(got - run(q, x[i:i + b], "simulated")) / q.quant_of(q.outputs[0]).scale[0])
    return np.concatenate([e.ravel() for e in errs])


@pytest.mark.parametrize("per_channel", [True, False])
def test_onnxruntime_matches_simulated_within_one_step(per_channel):
    q, x = quantized(cnn(), per_channel=per_channel)
    err = lsb_errors(q, to_onnx_qdq(q), x)               # default session: QLinearConv, QGemm, ... kernels
    assert np.mean(err <= 1.0 + 1e-3) >= 0.999


def test_transformer_ops_match_without_onnxruntime_qdq_fusion():
    # onnxruntime's fused QLinearSoftmax approximates (attention off by 1 step, 5-14 after layernorm/gelu);
    # its float kernels between Q/DQ pairs reproduce the simulated run
    q, x = quantized(attention())
    assert np.mean(lsb_errors(q, to_onnx_qdq(q), x, fuse=False) <= 1.0 + 1e-3) >= 0.999


def test_narrow_widths_are_clamped_exactly():
    q, x = quantized(cnn(), act_bits=4, weight_bits=4)
    model = to_onnx_qdq(q)
    assert any(n.op_type == "Clip" and n.output[0] == "logits" for n in model.graph.node)
    assert np.mean(lsb_errors(q, model, x) <= 1.0 + 1e-3) >= 0.999


def test_model_structure():
    q, _ = quantized(cnn())
    model = to_onnx_qdq(q)
    assert model.opset_import[0].version == 21
    ops = [n.op_type for n in model.graph.node]
    acts = [v for v in q.values if q.quant_of(v) is not None and not q.is_const(v)]
    assert ops.count("QuantizeLinear") == len(acts)                 # one Q/DQ pair per activation
    inits = {i.name: i for i in model.graph.initializer}
    w1 = onnx.numpy_helper.to_array(inits["w1__int"])
    assert w1.dtype == np.uint8 and w1.min() >= 1                   # signed codes stored as q + 128
    zp = onnx.numpy_helper.to_array(inits["w1__zp"])
    assert zp.shape == (8,) and set(zp.tolist()) == {128}
    assert onnx.numpy_helper.to_array(inits["b1__c1__int"]).dtype == np.int32   # bias at s_x * s_w
    assert [o.name for o in model.graph.output] == ["logits"] and model.graph.input[0].name == "x"
    signed = to_onnx_qdq(q, unsigned=False)
    assert onnx.numpy_helper.to_array({i.name: i for i in signed.graph.initializer}["w1__int"]).dtype == np.int8


def test_integerized_graphs_are_refused():
    q, _ = quantized(cnn())
    from dyadiq.passes.integerize import integerize
    with pytest.raises(CodegenError, match="export the quantized float graph"):
        to_onnx_qdq(integerize(q))


def sqnr_db(ref, x):
    ref, x = ref.astype(np.float64), x.astype(np.float64)
    return 10 * np.log10((ref ** 2).sum() / ((ref - x) ** 2).sum())


@pytest.mark.slow
def test_efficientnet_lite0_export_matches_simulated():
    # Not "99.9% within 1 step": a rounding tie broken differently anywhere (float summation order)
    # flips a code, and depthwise layers with large taps turn one flipped input into 5-25 steps, so
    # no two implementations agree that closely on this net (dyadiq's own integer vs simulated modes:
    # ~95% within 1 step). Measured here: ~95% within 1 step, ORT-vs-simulated logits at ~30 dB SQNR
    # against ~16 dB for the quantization itself, same top-1.
    torch = pytest.importorskip("torch")
    from dyadiq.frontend import from_torch
    from dyadiq.passes.pipeline import quantize
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    x = photo_crops(10, split="calib")
    g = from_torch(efficientnet_lite0(), torch.from_numpy(x[:1]))
    q, _ = quantize(g, x[:8], bias_correct=False, calib_method="minmax", rounding="nearest")
    sess = ort.InferenceSession(to_onnx_qdq(q).SerializeToString())
    ev = photo_crops(3, split="eval")
    got = np.concatenate([sess.run(None, {q.inputs[0]: ev[i:i + 1]})[0] for i in range(len(ev))])
    sim = np.concatenate([run(q, ev[i:i + 1], "simulated") for i in range(len(ev))])
    flt = np.concatenate([run(g, ev[i:i + 1]) for i in range(len(ev))])
    err = np.abs(got - sim) / q.quant_of(q.outputs[0]).scale[0]
    assert np.mean(err <= 1.0 + 1e-3) >= 0.9
    assert sqnr_db(sim, got) >= sqnr_db(flt, sim) + 10
    assert np.array_equal(got.argmax(1), sim.argmax(1))
