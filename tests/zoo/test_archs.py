# SPDX-License-Identifier: Apache-2.0
"""The model-coverage suite (zoo.archs) imports from torch.export, from an ONNX export at opset 11 with a
dynamic batch (converted to opset 13 on import, batch 1) and from one at opset 17, and the float interpreter
matches torch within 1e-4 of the output's largest magnitude."""
from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from dyadiq.frontend import from_onnx, from_torch  # noqa: E402
from dyadiq.interp import run  # noqa: E402
from dyadiq.zoo.archs import CLASSES, build  # noqa: E402

DISTINCT = {   # the ops each architecture is in the suite for
    "resnet18": {"conv2d", "maxpool", "add", "global_avgpool"}, "mobilenet_v2": {"clip"},
    "mobilenet_v3_large": {"hardswish", "hardsigmoid", "mul"}, "shufflenet_v2": {"transpose", "slice", "concat"},
    "unet": {"conv_transpose2d", "resize", "concat"}, "yolo": {"silu", "slice", "maxpool", "softmax"},
    "densenet_block": {"concat", "avgpool"},
}


def close(got, want):
    err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
    assert got.shape == want.shape and err < 1e-4, f"relative error {err:.2e}"


def onnx_export(model, x, opset: int, dynamic_batch: bool):
    buf = io.BytesIO()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    with _quiet():
        torch.onnx.export(model, (x,), buf, opset_version=opset, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes=axes)
    return onnx.load_from_string(buf.getvalue())


class _quiet:
    def __enter__(self):
        import warnings
        self.w = warnings.catch_warnings()
        self.w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        self.w.__exit__(*a)


@pytest.fixture(scope="module", params=sorted(CLASSES))
def arch(request):
    m, x = build(request.param)
    with torch.no_grad():
        ref = m(x).numpy()
    return request.param, m, x, ref


def test_torch_export_matches(arch):
    name, m, x, ref = arch
    g = from_torch(m, (x,))
    assert DISTINCT[name] <= set(g.count_ops()), sorted(g.count_ops())
    close(run(g, x.numpy()), ref)


def test_onnx_opset11_dynamic_batch_matches(arch):
    name, m, x, ref = arch
    notes: list[str] = []
    g = from_onnx(onnx_export(m, x, 11, True), notes=notes)
    assert notes == ["converted ONNX opset 11 to 13 with onnx.version_converter",
                     "dynamic batch dim of input 'x' set to 1 (--input-shape to choose another)"]
    assert g.type_of("x").shape == tuple(x.shape)
    close(run(g, x.numpy()), ref)


def test_onnx_opset17_matches(arch):
    name, m, x, ref = arch
    close(run(from_onnx(onnx_export(m, x, 17, False)), x.numpy()), ref)


def test_dynamo_exporter_opset18_matches():
    m, x = build("unet")
    with _quiet():
        proto = torch.onnx.export(m, (x,), dynamo=True, opset_version=18, verbose=False).model_proto
    with torch.no_grad():
        close(run(from_onnx(proto), x.numpy()), m(x).numpy())


def test_dynamic_batch_takes_the_input_shape():
    m, x = build("densenet_block", batch=2)
    g = from_onnx(onnx_export(m, x[:1], 11, True), input_shapes={"x": (2, 3, 64, 64)}, notes=[])
    with torch.no_grad():
        close(run(g, x.numpy()), m(x).numpy())
