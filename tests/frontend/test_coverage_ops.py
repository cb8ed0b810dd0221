# SPDX-License-Identifier: Apache-2.0
"""The issue-15 converters at their edges: every Resize mode and ConvTranspose form against onnxruntime's float
output, the torch.export rows against torch, and unsupported attribute values refused naming node, attribute
and value."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dyadiq.errors import FrontendError  # noqa: E402
from dyadiq.frontend import from_onnx, from_torch  # noqa: E402
from dyadiq.interp import run  # noqa: E402

RNG = np.random.default_rng(15)
F = torch.nn.functional


def model(node, x_shape, inits=(), opset=19):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([node], "g", [x], [y], initializer=[numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def ort_run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def check(m, x, exact=False):
    want, got = ort_run(m, x), run(from_onnx(m), x)
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---- Resize -----------------------------------------------------------------------------------------
X = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")


def resize(mode, coord, *, scales=None, sizes=None, **attrs):
    inits = [("roi", np.zeros(0, np.float32))]
    ins = ["x", "roi"]
    if scales is not None:
        inits.append(("scales", np.asarray(scales, np.float32)))
        ins.append("scales")
    else:
        inits.append(("sizes", np.asarray(sizes, np.int64)))
        ins += ["", "sizes"]
    node = helper.make_node("Resize", ins, ["y"], name="rs", mode=mode, coordinate_transformation_mode=coord, **attrs)
    return model(node, X.shape, inits)


@pytest.mark.parametrize("coord,nearest_mode", itertools.product(
    ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"),
    ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")))
def test_resize_nearest_is_a_gather_equal_to_onnxruntime(coord, nearest_mode):
    check(resize("nearest", coord, sizes=(1, 2, 8, 13), nearest_mode=nearest_mode), X, exact=True)
    check(resize("nearest", coord, scales=(1, 1, 2.0, 0.5), nearest_mode=nearest_mode), X, exact=True)


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_linear_and_cubic_match_onnxruntime(mode, coord):
    check(resize(mode, coord, sizes=(1, 2, 9, 4)), X)
    check(resize(mode, coord, scales=(1, 1, 1.5, 2.0)), X)


def test_resize_keep_aspect_ratio_and_axes():
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", axes=[2, 3],
                            keep_aspect_ratio_policy="not_larger")
    check(model(node, X.shape, [("sizes", np.asarray([7, 20], np.int64))]), X)


def test_upsample_of_opset_9_is_converted_and_matches():
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")
    m = model(node, X.shape, [("scales", np.asarray([1, 1, 2, 3], np.float32))], opset=9)
    np.testing.assert_array_equal(run(from_onnx(m, notes=[]), X), X.repeat(2, axis=2).repeat(3, axis=3))


@pytest.mark.parametrize("attr,value", [("mode", "area"), ("coordinate_transformation_mode", "corners"),
                                        ("nearest_mode", "round_half_up"), ("keep_aspect_ratio_policy", "fit")])
def test_resize_unsupported_attribute_value_is_named(attr, value):
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="rs", **{attr: value})
    m = model(node, X.shape, [("sizes", np.asarray([1, 2, 8, 8], np.int64))])
    with pytest.raises(FrontendError, match=rf"^ONNX Resize node rs: attribute {attr}='{value}' is not supported"):
        from_onnx(m)


# ---- ConvTranspose ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(strides=[2, 2]),
    dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(strides=[2, 1], pads=[0, 1, 2, 0], dilations=[2, 1], group=2),
    dict(strides=[2, 2], output_shape=[11, 13]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[3, 2], auto_pad="SAME_LOWER", group=2),
])
def test_conv_transpose_matches_onnxruntime(kw):
    c_in, c_out_g, g = 4, 3, kw.get("group", 1)
    w = RNG.standard_normal((c_in, c_out_g, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(c_out_g * g).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **kw)
    check(model(node, (1, 4, 5, 6), [("w", w), ("b", b)]), RNG.standard_normal((1, 4, 5, 6)).astype(np.float32))


def test_conv_transpose_1d_is_lifted():
    w = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3], pads=[1, 0])
    check(model(node, (1, 2, 7), [("w", w)]), RNG.standard_normal((1, 2, 7)).astype(np.float32))


def test_conv_transpose_bad_auto_pad_is_named():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", auto_pad="FULL")
    with pytest.raises(FrontendError, match=r"^ONNX ConvTranspose node up: attribute auto_pad='FULL'"):
        from_onnx(model(node, (1, 2, 4, 4), [("w", np.ones((2, 2, 2, 2), np.float32))]))


# ---- other rows against onnxruntime -----------------------------------------------------------------
@pytest.mark.parametrize("node,inits", [
    (helper.make_node("HardSwish", ["x"], ["y"]), []),
    (helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3), []),
    (helper.make_node("PRelu", ["x", "s"], ["y"]), [("s", RNG.standard_normal((2, 1, 1)).astype(np.float32))]),
    (helper.make_node("Elu", ["x"], ["y"], alpha=0.5), []),
    (helper.make_node("Selu", ["x"], ["y"]), []),
    (helper.make_node("Mish", ["x"], ["y"]), []),
    (helper.make_node("LogSoftmax", ["x"], ["y"], axis=1), []),
    (helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"]),
     [("s", np.asarray([0.5, 2], np.float32)), ("b", np.asarray([1, -1], np.float32))]),
    (helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=1), []),
    (helper.make_node("Tile", ["x", "r"], ["y"]), [("r", np.asarray([1, 2, 1, 3], np.int64))]),
    (helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect"), [("p", np.asarray([0, 0, 1, 2, 0, 0, 2, 1], np.int64))]),
    (helper.make_node("ReduceMax", ["x", "a"], ["y"], keepdims=0), [("a", np.asarray([1, 3], np.int64))]),
])
def test_rows_match_onnxruntime(node, inits):
    check(model(node, X.shape, inits), X)


def test_split_expand_where_argmax_match_onnxruntime():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=3, num_outputs=2),
             helper.make_node("Greater", ["a", "b"], ["m"]),
             helper.make_node("Where", ["m", "a", "b"], ["w"]),
             helper.make_node("Expand", ["w", "e"], ["we"]),
             helper.make_node("ArgMax", ["we"], ["am"], axis=1),
             helper.make_node("Cast", ["am"], ["y"], to=TensorProto.FLOAT)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X.shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x], [y], initializer=[numpy_helper.from_array(np.asarray([2, 2, 5, 3], np.int64), "e")])
    check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), X, exact=True)


# ---- torch.export rows -------------------------------------------------------------------------------
class _Coverage(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ct = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.gn, self.inorm = torch.nn.GroupNorm(2, 4), torch.nn.InstanceNorm2d(4, affine=True)

    def forward(self, x):
        return (F.interpolate(x, scale_factor=1.5, mode="bilinear"), F.interpolate(x, size=(5, 7), mode="nearest"),
                F.interpolate(x, scale_factor=2, mode="nearest"),
                F.interpolate(x, size=(9, 6), mode="bilinear", align_corners=True),
                F.interpolate(x, size=(3, 3), mode="bicubic"), F.interpolate(x, size=(7, 9), mode="nearest-exact"),
                self.inorm(x), self.gn(x), torch.where(x > 0, x, torch.zeros_like(x)),
                F.elu(x) + F.selu(x) + F.mish(x) + F.softplus(x) + F.celu(x, 0.5) + F.softplus(x, beta=2.0),
                torch.argmax(x, dim=1).float(), F.pixel_shuffle(x, 2), F.pixel_unshuffle(x, 2),
                torch.topk(x, 2, dim=1)[0], x.tile((1, 2, 1, 1)), x.cumsum(1), self.ct(x), (x != 0.5).float())


def test_torch_rows_match_torch():
    m, x = _Coverage().eval(), torch.randn(1, 4, 6, 6)
    g = from_torch(m, (x,))
    with torch.no_grad():
        want = m(x)
    for got, ref in zip(run(g, x.numpy()), want):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert {"resize", "conv_transpose2d", "where", "argmax", "topk", "cumsum"} <= set(g.count_ops())


# ---- old opsets -------------------------------------------------------------------------------------
def _old_model(opset: int):
    """Conv -> Relu -> x2 nearest upsampling (Upsample / Resize as the opset spells it) -> pool -> Gemm -> Softmax."""
    r = np.random.default_rng(opset)
    inits = [numpy_helper.from_array(r.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(r.standard_normal((5, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "sc"),
             numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
             numpy_helper.from_array(r.standard_normal(5).astype(np.float32), "fb")]
    if opset <= 8:
        up = helper.make_node("Upsample", ["r"], ["u"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0])
    elif opset == 9:
        up = helper.make_node("Upsample", ["r", "sc"], ["u"], mode="nearest")
    elif opset == 10:
        up = helper.make_node("Resize", ["r", "sc"], ["u"], mode="nearest")
    else:
        up = helper.make_node("Resize", ["r", "roi", "sc"], ["u"], mode="nearest", nearest_mode="floor",
                              coordinate_transformation_mode="asymmetric")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             up, helper.make_node("MaxPool", ["u"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["z"], transB=1), helper.make_node("Softmax", ["z"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    listed = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits] if opset <= 8 else []
    m = helper.make_model(helper.make_graph(nodes, "g", [x] + listed, [y], initializer=inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset > 8 else 3                  # IR 3: initializers are listed as inputs too
    return m


@pytest.mark.parametrize("opset", range(7, 13))
def test_old_opsets_convert_and_match_onnxruntime(opset):
    m = _old_model(opset)
    notes: list[str] = []
    g = from_onnx(m, notes=notes)
    assert notes[0] == f"converted ONNX opset {opset} to 13 with onnx.version_converter"
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(g, x), ort_run(m, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset,mode", itertools.product((7, 9, 10), ("linear", "nearest")))
def test_old_upsample_keeps_its_asymmetric_mapping(opset, mode):
    """onnx.version_converter turns Upsample (and opset-10 Resize) into a half_pixel Resize; the importer
    restores x = y / scale."""
    kw = {"scales": [1.0, 1.0, 2.0, 1.5]} if opset < 9 else {}
    op = "Resize" if opset == 10 else "Upsample"
    node = helper.make_node(op, ["x"] + (["sc"] if opset >= 9 else []), ["y"], mode=mode, **kw)
    inits = [("sc", np.asarray([1, 1, 2, 1.5], np.float32))] if opset >= 9 else []
    m = model(node, (1, 2, 4, 4), inits, opset=opset)
    m.ir_version = 7
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run(from_onnx(m, notes=[]), x), ort_run(m, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [9, 11])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_old_softmax_family_works_on_the_2d_coercion(op, opset):
    m = model(helper.make_node(op, ["x"], ["y"], axis=1), (1, 2, 3, 4), opset=opset)
    m.ir_version = 7
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run(from_onnx(m, notes=[]), x), ort_run(m, x), rtol=1e-5, atol=1e-6)


def test_instance_norm_on_images_has_an_integer_lowering():
    """Normalized over H and W as one flattened last axis (the integer layernorm's form), so a 4-D
    InstanceNormalization quantizes, integerizes and stays close to onnxruntime."""
    import dyadiq
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])
    m = model(node, (1, 3, 6, 5), [("s", np.asarray([0.5, 2, 1], np.float32)),
                                   ("b", np.asarray([1, -1, 0], np.float32))])
    calib = RNG.standard_normal((8, 3, 6, 5)).astype(np.float32)
    q, _ = dyadiq.quantize(from_onnx(m), calib, rounding="nearest")
    ig = dyadiq.integerize(q)
    x = calib[:1]
    want, got = ort_run(m, x), run(ig, x, mode="integer")
    assert 10 * np.log10((want ** 2).sum() / ((want - got) ** 2).sum()) > 25
