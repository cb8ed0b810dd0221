# SPDX-License-Identifier: Apache-2.0
"""``from_onnx``: torch-exported models import and match torch; unsupported or broken files fail clearly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from dyadiq.errors import FrontendError, InputError  # noqa: E402
from dyadiq.frontend import from_onnx  # noqa: E402
from dyadiq.interp import run  # noqa: E402
from dyadiq.zoo.blocks import BLOCKS  # noqa: E402

EXPORTERS = {"dynamo-opset18": dict(dynamo=True, opset_version=18),
             "legacy-opset17": dict(dynamo=False, opset_version=17)}
FOLDED = {"Shape", "Gather", "Unsqueeze", "Concat", "Cast", "ConstantOfShape", "Range", "Size"}


def export(model, x, path, exporter: str, **kw) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), verbose=False, **EXPORTERS[exporter], **kw)
    return str(path)


def assert_close(got: np.ndarray, want: np.ndarray):
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def onnx_model(nodes, inputs, outputs, initializers=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# ---- torch-exported models ---------------------------------------------------------------------
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_block_matches_torch(block, exporter, tmp_path):
    model, x = BLOCKS[block]()
    g = from_onnx(export(model, x, tmp_path / "m.onnx", exporter))
    with torch.no_grad():
        want = model(x).numpy()
    assert_close(run(g, x.numpy()), want)


def test_graph_input_and_output_names_are_kept(tmp_path):
    model, x = BLOCKS["mlp"]()
    path = export(model, x, tmp_path / "m.onnx", "legacy-opset17",
                  input_names=["features"], output_names=["logits"])
    g = from_onnx(path)
    assert g.inputs == ("features",) and g.outputs == ("logits",)
    assert g.count_ops() == {"linear": 3, "relu": 2}


class _DynamicFlatten(torch.nn.Module):
    """``x.reshape(x.shape[0], -1)`` with a dynamic batch: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(y.shape[0], -1))


def test_shape_arithmetic_folds_away(tmp_path):
    torch.manual_seed(0)
    model, x = _DynamicFlatten().eval(), torch.randn(2, 3, 8, 8)
    path = export(model, x, tmp_path / "m.onnx", "legacy-opset17", input_names=["x"],
                  dynamic_axes={"x": {0: "batch"}})
    assert {"Shape", "Gather", "Concat"} <= {n.op_type for n in onnx.load(path).graph.node}
    g = from_onnx(path, input_shapes={"x": (2, 3, 8, 8)})
    assert g.count_ops() == {"conv2d": 1, "relu": 1, "reshape": 1, "linear": 1}
    with torch.no_grad():
        assert_close(run(g, x.numpy()), model(x).numpy())


@pytest.mark.slow
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_efficientnet_lite0_matches_torch(exporter, tmp_path):
    from dyadiq.interp.run import run_batched
    from dyadiq.zoo import efficientnet_lite0
    from dyadiq.zoo.photos import photo_crops

    model, crops = efficientnet_lite0(), photo_crops(8, split="eval")
    g = from_onnx(export(model, torch.from_numpy(crops[:1]), tmp_path / "effnet.onnx", exporter))
    with torch.no_grad():
        want = model(torch.from_numpy(crops)).numpy()
    got = run_batched(g, crops)
    assert_close(got, want)
    assert (got.argmax(1) == want.argmax(1)).all()


# ---- hand-built models: mappings checked against onnx's reference evaluator ----------------------
@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_shape", [
    (0, 0, 1.0, 1.0, (5,)), (0, 1, 0.5, 2.0, (1, 5)), (1, 0, 1.0, 0.5, (3, 5)), (1, 1, 2.0, 1.0, None),
    (0, 1, 1.0, 1.0, ()),
])
def test_gemm_with_constant_weight_is_linear(trans_a, trans_b, alpha, beta, c_shape):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["a", "w"]
    if c_shape is not None:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_shape).astype(np.float32), "c"))
        ins.append("c")
    node = helper.make_node("Gemm", ins, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    m = onnx_model([node], [f32("a", [4, 3] if trans_a else [3, 4])], [f32("y", [3, 5])], inits)
    a = rng.standard_normal((4, 3) if trans_a else (3, 4)).astype(np.float32)
    g = from_onnx(m)
    assert "linear" in g.count_ops()
    np.testing.assert_allclose(run(g, a), ReferenceEvaluator(m).run(None, {"a": a})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a_shape", [(4,), (3, 4), (2, 3, 4)])
def test_matmul_by_constant_is_linear(a_shape):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    m = onnx_model([helper.make_node("MatMul", ["a", "w"], ["y"])], [f32("a", list(a_shape))],
                   [f32("y", None)], [numpy_helper.from_array(w, "w")])
    a = rng.standard_normal(a_shape).astype(np.float32)
    g = from_onnx(m)
    assert g.count_ops() == {"linear": 1}
    np.testing.assert_allclose(run(g, a), ReferenceEvaluator(m).run(None, {"a": a})[0], rtol=1e-5, atol=1e-6)


def test_constant_subgraph_feeding_reshape_expand_slice_pad_is_evaluated():
    i64 = lambda name, v: numpy_helper.from_array(np.asarray(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),                              # [2, 3, 4]
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),             # 2
        helper.make_node("Unsqueeze", ["n", "zero1d"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], axis=0),     # [2, -1]
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),               # [2, 12]
        helper.make_node("Range", ["zero", "twelve", "one"], ["r"]),              # [0..11]
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["flat", "rf"], ["sum"]),
        helper.make_node("ConstantOfShape", ["expand_shape"], ["ones"],
                         value=numpy_helper.from_array(np.ones(1, np.float32))),
        helper.make_node("Expand", ["sum", "expand_shape"], ["wide"]),            # [3, 2, 12]
        helper.make_node("Mul", ["wide", "ones"], ["wide1"]),
        helper.make_node("Size", ["x"], ["size"]),                                 # 24
        helper.make_node("Div", ["size", "twelve"], ["two"]),                      # 2
        helper.make_node("Unsqueeze", ["two", "zero1d"], ["end"]),
        helper.make_node("Slice", ["wide1", "zero1d", "end", "two_axes"], ["cut"]),  # [3, 2, 2]
        helper.make_node("Pad", ["cut", "pads"], ["y"], mode="reflect"),
    ]
    inits = [i64("zero", 0), i64("zero1d", [0]), i64("minus1", [-1]), i64("twelve", 12), i64("one", 1),
             i64("expand_shape", [3, 1, 1]), i64("two_axes", [2]), i64("pads", [0, 0, 1, 0, 0, 1])]
    m = onnx_model(nodes, [f32("x", [2, 3, 4])], [f32("y", None)], inits)
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    g = from_onnx(m)
    assert set(g.count_ops()) <= {"reshape", "add", "mul", "slice", "pad"}
    np.testing.assert_allclose(run(g, x), ReferenceEvaluator(m).run(None, {"x": x})[0], rtol=1e-6)


@pytest.mark.parametrize("op,kernel,stride,dilation,pads,ceil,include_pad", [
    ("AveragePool", 3, 1, 2, (1, 1, 1, 1), 0, 0),    # dilated taps falling into the padding
    ("AveragePool", 3, 1, 2, (1, 0, 2, 1), 1, 1),
    ("AveragePool", 3, 3, 1, (0, 0, 0, 0), 1, 1),    # ceil mode: last window sticks out past the input
    ("AveragePool", 2, 2, 2, (1, 1, 1, 1), 1, 0),
    ("MaxPool", 3, 2, 2, (1, 0, 2, 1), 1, 0),
    ("MaxPool", 3, 1, 1, (1, 0, 2, 1), 0, 0),
])
def test_pooling_matches_onnxruntime(op, kernel, stride, dilation, pads, ceil, include_pad):
    """onnxruntime is the reference here: onnx's ReferenceEvaluator gets some ceil-mode/padded shapes wrong."""
    ort = pytest.importorskip("onnxruntime")
    attrs = dict(kernel_shape=[kernel] * 2, strides=[stride] * 2, dilations=[dilation] * 2, pads=list(pads),
                 ceil_mode=ceil, **({"count_include_pad": include_pad} if op == "AveragePool" else {}))
    m = onnx_model([helper.make_node(op, ["x"], ["y"], **attrs)], [f32("x", [1, 2, 7, 8])], [f32("y", None)],
                   opset=19)
    x = np.random.default_rng(3).standard_normal((1, 2, 7, 8)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    got = run(from_onnx(m), x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_symbolic_batch_defaults_to_one_and_other_dims_need_input_shapes():
    m = onnx_model([helper.make_node("Relu", ["x"], ["y"])], [f32("x", ["batch", 3])], [f32("y", ["batch", 3])])
    notes: list[str] = []
    assert from_onnx(m, notes=notes).type_of("x").shape == (1, 3)
    assert notes == ["dynamic batch dim of input 'x' set to 1 (--input-shape to choose another)"]
    g = from_onnx(m, input_shapes={"x": (2, 3)})
    assert g.type_of("x").shape == (2, 3)
    with pytest.raises(InputError, match="unknown input"):
        from_onnx(m, input_shapes={"z": (2, 3)})
    m2 = onnx_model([helper.make_node("Relu", ["x"], ["y"])], [f32("x", ["n", 3, "height", "width"])],
                    [f32("y", None)])
    with pytest.raises(InputError, match=r"^input 'x' dim 2 \('height'\), dim 3 \('width'\) are dynamic: "
                                         r"give --input-shape x=1,3,H,W$"):
        from_onnx(m2)
    assert from_onnx(m2, sample_shapes={None: (3, 5, 7)}).type_of("x").shape == (1, 3, 5, 7)
    with pytest.raises(InputError, match=r"contradicts the model: dim 1 is 3"):
        from_onnx(m2, input_shapes={"x": (1, 4, 5, 7)})
    with pytest.raises(InputError, match=r"has rank 3, the model's input 'x' has rank 4"):
        from_onnx(m2, input_shapes={"x": (1, 3, 5)})


# ---- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,inputs,node_name,label", [
    ("Unique", ["x"], "unique_0", "unique_0"),
    ("NonMaxSuppression", ["boxes", "x"], "", "selected"),
])
def test_unsupported_op_names_op_and_node(op, inputs, node_name, label):
    node = helper.make_node(op, inputs, ["selected"], name=node_name)
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output]
    m = onnx_model([node], [f32("x", [1, 1, 8]), f32("boxes", [1, 8, 4])], outs,
                   [numpy_helper.from_array(np.asarray([3], np.int64), "k")])
    with pytest.raises(FrontendError, match=rf"^unsupported ONNX op {op} \(node {label}\)$"):
        from_onnx(m)


def test_truncated_file_is_not_a_valid_model(tmp_path):
    model, x = BLOCKS["mlp"]()
    data = open(export(model, x, tmp_path / "m.onnx", "legacy-opset17"), "rb").read()
    bad = tmp_path / "half.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrontendError, match=r"half\.onnx: not a valid ONNX model \("):
        from_onnx(bad)


def test_garbage_file_is_not_a_valid_model(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x07not a protobuf at all\xff" * 8)
    with pytest.raises(FrontendError, match="not a valid ONNX model"):
        from_onnx(str(bad))


def test_missing_file(tmp_path):
    with pytest.raises(FrontendError, match=r"nope\.onnx: no such file"):
        from_onnx(tmp_path / "nope.onnx")


def test_old_opset_is_converted_with_a_note():
    m = onnx_model([helper.make_node("Relu", ["x"], ["y"])], [f32("x", [1])], [f32("y", [1])], opset=11)
    notes: list[str] = []
    g = from_onnx(m, notes=notes)
    assert notes == ["converted ONNX opset 11 to 13 with onnx.version_converter"]
    np.testing.assert_array_equal(run(g, np.asarray([-1.0], np.float32)), [0.0])


def test_runtime_shape_parameter_is_an_error_naming_the_node():
    m = onnx_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                   [f32("x", [2, 3]), helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                   [f32("y", None)])
    with pytest.raises(FrontendError, match=r"^ONNX Reshape node rs: shape must be a constant"):
        from_onnx(m)
