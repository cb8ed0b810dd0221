# SPDX-License-Identifier: Apache-2.0
"""EfficientNet-Lite0 end to end in float: the CLI classifies chelsea as a cat from .pt2 and .onnx files."""
import numpy as np
import pytest

from dyadiq.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    import torch
    from dyadiq.zoo import efficientnet_lite0, real_photos
    d = tmp_path_factory.mktemp("effnet")
    model = efficientnet_lite0()
    x = torch.from_numpy(real_photos()["chelsea"][None])
    torch.export.save(torch.export.export(model, (x,)), str(d / "effnet.pt2"))
    torch.onnx.export(model, (x,), str(d / "effnet.onnx"), input_names=["x"], opset_version=17, dynamo=False)
    np.save(d / "chelsea.npy", x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    return d, ref


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_cli_classifies_chelsea_as_a_cat(model_files, fmt):
    d, ref = model_files
    out = d / f"logits_{fmt}.npy"
    assert main(["run", str(d / f"effnet.{fmt}"), "--input", str(d / "chelsea.npy"), "-o", str(out)]) == 0
    logits = np.load(out)
    assert 281 <= int(logits.argmax()) <= 285
    assert np.max(np.abs(logits - ref)) <= 1e-4 * np.max(np.abs(ref))
