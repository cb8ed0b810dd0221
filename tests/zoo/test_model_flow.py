# SPDX-License-Identifier: Apache-2.0
"""Issue 15, done-when 1, in the test suite: the three fastest zoo.archs networks go through the CLI flow
``quantize -> compile --target cpu -> run`` from one export each (torch.export ``.pt2``, ONNX opset 11 with a
dynamic batch, ONNX opset 17). The artifact's output equals the integer interpreter's bit for bit, and its SQNR
against the float model (torch) clears a generous floor (bench/model_coverage.py measures 38-49 dB on these
three; the floor only catches a broken flow, it is not tuned to a machine).

Photo crops as inputs, 8 calibration samples, ``--rounding nearest`` (GPTQ takes minutes per model on two cores
and is covered by its own tests); every other quantize option is the CLI default."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("tvm")

from dyadiq import api, integerize
from dyadiq.cli import main
from dyadiq.interp import run as interp
from dyadiq.zoo import photo_crops
from dyadiq.zoo.archs import SIZES, build

SQNR_FLOOR_DB = 25.0
CASES = [("resnet18", "pt2"), ("densenet_block", "onnx11"), ("unet", "onnx17")]


def export(model, x, kind: str, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "pt2":
            torch.export.save(torch.export.export(model, (x,)), str(path))
        else:
            dyn = {"x": {0: "batch"}, "y": {0: "batch"}} if kind == "onnx11" else None
            torch.onnx.export(model, (x,), str(path), opset_version=11 if kind == "onnx11" else 17, dynamo=False,
                              input_names=["x"], output_names=["y"], dynamic_axes=dyn)


def cli(*args: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    assert rc == 0, f"dyadiq {' '.join(args)} -> exit {rc}: {err.getvalue().strip()[-500:]}"


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    return float(10 * np.log10((r ** 2).sum() / max(((r - g) ** 2).sum(), 1e-30)))


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_cli_flow_bit_exact(name, kind, tmp_path):
    model, x = build(name)
    size = SIZES[name]
    np.save(tmp_path / "calib.npy", photo_crops(8, size, split="calib"))
    evalx = photo_crops(1, size, split="eval")
    np.save(tmp_path / "eval.npy", evalx)
    src = tmp_path / f"model.{'pt2' if kind == 'pt2' else 'onnx'}"
    export(model, x, kind, src)

    dyq, art, out = tmp_path / "q.dyq", tmp_path / "art", tmp_path / "out.npy"
    cli("quantize", str(src), "-o", str(dyq), "--calib", str(tmp_path / "calib.npy"), "--rounding", "nearest")
    cli("compile", str(dyq), "--target", "cpu", "-o", str(art))
    q = integerize(api.load(dyq))
    cli("run", str(art), "--input", f"{q.inputs[0]}={tmp_path / 'eval.npy'}", "-o", str(out))

    got = np.load(out)
    golden = np.asarray(interp(q, evalx, mode="integer"))
    assert got.shape == golden.shape and got.dtype == golden.dtype
    np.testing.assert_array_equal(got, golden)          # bit for bit
    with torch.no_grad():
        ref = model(torch.from_numpy(evalx)).numpy()
    assert sqnr(ref, got.reshape(ref.shape)) >= SQNR_FLOOR_DB
