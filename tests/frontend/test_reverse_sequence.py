# SPDX-License-Identifier: Apache-2.0
"""ONNX ReverseSequence, the op docs/adding-an-op.md adds: imported as ``reverse_sequence`` (numpy and torch
kernels, data-movement traits), equal to onnxruntime in both layouts, lowered to integers as a gather of
constant indices and bit-exact on the cpu target; non-constant lengths are refused with the node named."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import dyadiq
from dyadiq.errors import FrontendError
from dyadiq.interp import run
from dyadiq.passes.integerize import integerize
from dyadiq.targets import compile as build
from quant_helpers import act_quant

RNG = np.random.default_rng(2)


def _model(shape, lens, batch_axis, time_axis, const_lens=True):
    node = helper.make_node("ReverseSequence", ["x", "l"], ["y"], batch_axis=batch_axis, time_axis=time_axis)
    inits = [helper.make_tensor("l", TensorProto.INT64, [len(lens)], lens)] if const_lens else []
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if not const_lens:
        ins.append(helper.make_tensor_value_info("l", TensorProto.INT64, [len(lens)]))
    g = helper.make_graph([node], "rs", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("shape,lens,batch_axis,time_axis", [
    ((4, 3, 2), [4, 1, 3], 1, 0),           # time-major
    ((3, 5, 2, 2), [1, 5, 0], 0, 1),        # batch-major, a zero length and a full length
])
def test_reverse_sequence_matches_onnxruntime_and_lowers_to_integers_bit_exact(tmp_path, shape, lens, batch_axis,
                                                                               time_axis):
    m = _model(shape, lens, batch_axis, time_axis)
    x = RNG.normal(size=shape).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    path = tmp_path / "rs.onnx"
    path.write_bytes(m.SerializeToString())
    g = dyadiq.load(path)
    assert [n.op for n in g.nodes] == ["reverse_sequence"]
    np.testing.assert_array_equal(run(g, [x]), want)
    aq = act_quant(float(x.min()), float(x.max()))
    q = g.with_quant("x", aq).with_quant(g.outputs[0], aq)       # data movement keeps its input's QuantType
    ig = integerize(q)
    assert [n.op for n in ig.nodes] == ["quantize", "reshape", "gather", "reshape", "dequantize"]
    np.testing.assert_array_equal(run(ig, [x]), run(q, [x], "simulated"))
    np.testing.assert_array_equal(build(ig, "cpu").run([x]), run(ig, [x]))


def test_lengths_computed_at_run_time_are_refused(tmp_path):
    path = tmp_path / "rs.onnx"
    path.write_bytes(_model((4, 3), [4, 1, 3], 1, 0, const_lens=False).SerializeToString())
    with pytest.raises(FrontendError, match="ReverseSequence.*sequence_lens"):
        dyadiq.load(path)
