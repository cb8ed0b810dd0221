# SPDX-License-Identifier: Apache-2.0
"""integerize: a quantized float graph becomes integer-only code that tracks simulated mode."""
import numpy as np
import pytest

from dyadiq.errors import PassError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.ops import op_def
from dyadiq.passes.integerize import integerize
from quant_helpers import simple_quantize

RNG = np.random.default_rng(0)


def _cnn(relu6: bool = True):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w1 = b.const("w1", RNG.normal(size=(8, 3, 3, 3)).astype(np.float32))
    b1 = b.const("b1", RNG.normal(size=8).astype(np.float32))
    y = b.op("conv2d", [x, w1, b1], pad=(1, 1, 1, 1))
    y = b.op("clip", [y], min=0.0, max=6.0) if relu6 else b.op("relu", [y])
    w2 = b.const("w2", RNG.normal(size=(8, 1, 3, 3)).astype(np.float32))
    z = b.op("conv2d", [y, w2], pad=(1, 1, 1, 1), groups=8)
    z = b.op("add", [z, y])
    z = b.op("silu", [z])
    z = b.op("maxpool", [z], kernel=(2, 2), stride=(2, 2))
    p = b.op("global_avgpool", [z])
    p = b.op("reshape", [p], shape=(1, 8))
    w3 = b.const("w3", RNG.normal(size=(5, 8)).astype(np.float32))
    return b.build([b.op("linear", [p, w3])])


CALIB = RNG.normal(size=(24, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("w_bits,per_channel", [(8, True), (8, False), (4, True)])
def test_integer_graph_matches_simulated_within_one_lsb(w_bits, per_channel):
    q = simple_quantize(_cnn(), CALIB[:16], w_bits=w_bits, per_channel=per_channel)
    ig = integerize(q, raw=True)
    scale = q.quant_of(q.outputs[0]).scale[0]
    for i in range(16, 24):
        sim = run(q, CALIB[i:i + 1], "simulated")
        got = run(integerize(q), CALIB[i:i + 1])
        assert np.max(np.abs(sim - got)) <= scale * 1.0001
    assert ig.type_of(ig.outputs[0]).dtype == "i8"


def test_no_float_tensor_between_quantize_and_dequantize():
    ig = integerize(simple_quantize(_cnn(), CALIB[:8]))
    for n in ig.nodes:
        if n.op == "quantize":
            continue
        assert all(not ig.type_of(i).is_float for i in n.inputs), n
        if n.op != "dequantize":
            assert not ig.type_of(n.name).is_float, n
            assert op_def(n.op).integer or n.op in ("reshape", "maxpool", "concat", "transpose", "slice", "pad")
    assert all(not a.dtype.kind == "f" for a in ig.constants.values())


def test_raw_mode_has_no_float_anywhere():
    ig = integerize(simple_quantize(_cnn(), CALIB[:8]), raw=True)
    assert all(not v.type.is_float for v in ig.values.values())


def test_relu6_is_fused_into_the_requantize_clamp():
    q = simple_quantize(_cnn(relu6=True), CALIB[:8])
    ig = integerize(q)
    assert "clip" not in ig.count_ops()
    rq = ig.node("clip")          # the fused chain keeps the clamp's value name
    assert rq.op == "requantize"


def test_integerize_is_idempotent():
    ig = integerize(simple_quantize(_cnn(), CALIB[:8]))
    assert integerize(ig) is ig


def test_unquantized_graph_is_refused_naming_the_value():
    with pytest.raises(PassError, match="no quantization parameters"):
        integerize(_cnn())


def test_unsupported_float_op_is_named():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    g = b.build([b.op("cumsum", [x], axis=-1)])
    q = simple_quantize(g, RNG.normal(size=(4, 4)).astype(np.float32))
    with pytest.raises(PassError, match=r"\[%cumsum cumsum\] .*no integer lowering"):
        integerize(q)


def test_accumulator_bound_is_recorded():
    ig = integerize(simple_quantize(_cnn(), CALIB[:8]))
    for n in ig.nodes:
        if n.op in ("qconv2d", "qlinear"):
            assert 1 < n.attr("acc_bits") <= 32


def test_binary_ops_with_a_scalar_constant_become_tables_that_track_simulated_mode_at_the_range_ends():
    """x * clip(x + 3, 0, 6) / 6 (hard-swish as exporters write it): the constant-operand ops are tables over the
    input codes (with the fused clip), the product of two activations a qmul; inputs at and past the
    calibrated range ends stay within one output step of simulated mode."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filecheck"))
    from models import hardswish_as_exported
    q = hardswish_as_exported()
    ig = integerize(q)
    assert [n.op for n in ig.nodes] == ["quantize", "lut", "qmul", "requantize", "lut", "dequantize"]
    qx = q.quant_of("x")
    lo, hi = (np.array(qx.qrange) - qx.zero_point[0]) * qx.scale[0]
    xs = np.stack([np.full((1, 3, 8, 8), v, np.float32) for v in (lo, hi, lo - 1, hi + 1, 0.0, -3.0)] +
                  [RNG.uniform(lo, hi, size=(1, 3, 8, 8)).astype(np.float32) for _ in range(4)])
    step = q.quant_of(q.outputs[0]).scale[0]
    for x in xs:
        assert np.max(np.abs(run(ig, [x]) - run(q, [x], "simulated"))) <= step * 1.0001


def test_a_constant_tensor_operand_of_an_op_without_a_lowering_is_refused_with_its_shape():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    y = b.op("pow", [x, b.const("c", RNG.uniform(1, 2, size=(1, 3, 1, 1)).astype(np.float32))])
    q = simple_quantize(b.build([y]), np.abs(CALIB[:4, :, :4, :4]))
    with pytest.raises(PassError, match=r"\[%pow pow\] constant operand %c of shape \[1, 3, 1, 1\]"):
        integerize(q)


def test_outputs_keep_the_float_graph_names():
    """The dequantized outputs are named as the float graph's (``.npz`` keys, artifact manifests and the
    Python API agree across modes); their integer codes take ``<name>.codes``."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.input("x", (1, 6))
    h = b.op("relu", [b.op("linear", [x, b.const("w", rng.standard_normal((4, 6)).astype(np.float32))])])
    cls = b.op("linear", [h, b.const("wc", rng.standard_normal((3, 4)).astype(np.float32))], "cls")
    reg = b.op("sigmoid", [b.op("linear", [h, b.const("wr", rng.standard_normal((1, 4)).astype(np.float32))])],
               "reg")
    q = simple_quantize(b.build([cls, reg]), rng.standard_normal((8, 6)).astype(np.float32))
    ig = integerize(q)
    assert ig.outputs == ("cls", "reg")
    assert {ig.producers()[o].op for o in ig.outputs} == {"dequantize"}
    assert ig.producers()["cls"].inputs == ("cls.codes",)
