# SPDX-License-Identifier: Apache-2.0
"""Model coverage (issue 15): each zoo.archs network through the CLI, quantize -> compile --target cpu -> run.

For every architecture: export ONNX (opset 17), then ``dyadiq quantize`` (per-channel, min/max ranges,
round-to-nearest: the configuration onnxruntime's ``quantize_static`` QDQ per-channel MinMax also uses, on the
same calibration samples), ``dyadiq compile --target cpu`` and ``dyadiq run`` on the artifact. Each stage is
ok or failed with the CLI's one-line reason. Where the artifact exists, its outputs are compared with the
integer interpreter (bit-exact or not) and both SQNRs against the float model (torch) are reported:

    SQNR = mean over samples of 10 log10(sum y^2 / sum (y - y_q)^2)

Random weights and random inputs: the numbers show coverage and numerical health, not accuracy.

    python bench/model_coverage.py [--models resnet18,unet] [--calib 16] [--eval 4]
writes bench/results/model_coverage.{json,md}.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_description, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["model", "ops", "import", "quantize", "compile", "run", "artifact == integer interp",
           "SQNR dyadiq (dB)", "SQNR onnxruntime QDQ pc (dB)", "time (s)"]


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    noise = ((r - g) ** 2).sum(1)
    return float(np.mean(10 * np.log10((r ** 2).sum(1) / np.maximum(noise, 1e-30))))


def cli(*args: str, timeout: int = 1800) -> tuple[bool, str]:
    """Run ``dyadiq ARGS``: (ok, the error line or the last line of output)."""
    exe = shutil.which("dyadiq")
    cmd = [exe] if exe else [sys.executable, "-m", "dyadiq.cli"]
    try:
        p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    if p.returncode == 0:
        return True, (p.stdout.strip().splitlines() or [""])[-1]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    return False, (lines[-1] if lines else (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1])[:300]


def ort_sqnr(onnx_path: Path, calib: np.ndarray, evalx: np.ndarray, ref: np.ndarray, work: Path) -> float | str:
    """onnxruntime quantize_static (QDQ, per-channel, MinMax, int8) on the same calibration samples."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

            def get_next(self):
                return next(self.it, None)

        pre, q = work / "pre.onnx", work / "q.onnx"
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
        out = np.concatenate([sess.run(None, {"x": evalx[i:i + 1]})[0] for i in range(len(evalx))])
        return sqnr(ref, out)
    except Exception as e:  # noqa: BLE001  (a failed peer is a row entry, not a crash)
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def one_model(name: str, n_calib: int, n_eval: int, work: Path) -> dict:
    import torch

    from dyadiq import api
    from dyadiq.zoo.archs import build

    t0 = time.perf_counter()
    row: dict = {"model": name}
    model, x = build(name)
    rng = np.random.default_rng(0)
    shape = tuple(x.shape[1:])
    calib = rng.standard_normal((n_calib,) + shape).astype(np.float32)
    evalx = rng.standard_normal((n_eval,) + shape).astype(np.float32)
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(evalx[i:i + 1])).numpy() for i in range(n_eval)])
    onnx_path, dyq, art = work / f"{name}.onnx", work / f"{name}.dyq", work / f"{name}-cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(onnx_path), opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["y"])
    np.save(work / "calib.npy", calib)
    np.save(work / "x0.npy", evalx[:1])
    try:
        g = api.load(onnx_path, notes=[])
        row["ops"], row["import"] = len(g.nodes), "ok"
    except Exception as e:  # noqa: BLE001
        row["import"] = f"failed: {' '.join(str(e).split())[:200]}"
        return row
    row["SQNR onnxruntime QDQ pc (dB)"] = ort_sqnr(onnx_path, calib, evalx, ref, work)
    stages = (("quantize", (str(onnx_path), "--calib", str(work / "calib.npy"), "-o", str(dyq), "--per-channel",
                            "--calib-method", "minmax", "--rounding", "nearest", "--no-bias-correct")),
              ("compile", ("compile", str(dyq), "--target", "cpu", "-o", str(art))),
              ("run", ("run", str(art), "--input", f"x={work / 'x0.npy'}", "-o", str(work / "y0.npy"))))
    for stage, args in stages:
        ok, msg = cli(*(("quantize",) + args if stage == "quantize" else args))
        row[stage] = "ok" if ok else f"failed: {msg}"
        if not ok:
            for later in ("compile", "run"):
                row.setdefault(later, "not reached")
            break
    if row.get("run") == "ok":
        from dyadiq.interp import run as interp

        from dyadiq import integerize

        q = integerize(api.load(dyq))
        artifact = api.load_artifact(art)
        got = np.concatenate([np.asarray(artifact.run({q.inputs[0]: evalx[i:i + 1]})) for i in range(n_eval)])
        golden = np.concatenate([np.asarray(interp(q, evalx[i:i + 1], mode="integer")) for i in range(n_eval)])
        row["artifact == integer interp"] = "yes" if np.array_equal(got, golden) else \
            f"NO (max diff {np.abs(got.astype(np.float64) - golden).max():.3g})"
        row["SQNR dyadiq (dB)"] = sqnr(ref, got.reshape(ref.shape))
    row["time (s)"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv=None) -> None:
    from dyadiq.zoo.archs import CLASSES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CLASSES), help="comma-separated zoo.archs names")
    ap.add_argument("--calib", type=int, default=16, help="calibration samples (default 16)")
    ap.add_argument("--eval", type=int, default=4, help="evaluation samples (default 4)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    rows = []
    for name in a.models.split(","):
        with tempfile.TemporaryDirectory() as d:
            try:
                rows.append(one_model(name, a.calib, a.eval, Path(d)))
            except Exception as e:  # noqa: BLE001  (one model's crash is its row)
                rows.append({"model": name, "import": f"bench error: {type(e).__name__}: {str(e)[:200]}"})
        print(rows[-1], flush=True)
    meta = {"cpu": cpu_description()["model"], "calibration samples": a.calib, "evaluation samples": a.eval,
            "dyadiq": "quantize --per-channel --calib-method minmax --rounding nearest --no-bias-correct",
            "onnxruntime": "quantize_static QDQ per-channel MinMax int8 (same calibration samples)",
            "inputs": "random normal; random weights (coverage and numerical health, not accuracy)"}
    print(write_results("model_coverage", rows, COLUMNS, meta, a.out))


if __name__ == "__main__":
    main()
