# SPDX-License-Identifier: Apache-2.0
"""Model coverage (issue 15): each zoo.archs network, from each export, through the CLI alone.

For every architecture and every export kind -- ``torch.export`` saved as ``.pt2``, ONNX opset 11 with a
dynamic batch dim, ONNX opset 17 -- the flow is

    dyadiq quantize MODEL -o q.dyq --calib calib.npy [DYADIQ_FLAGS]
    dyadiq compile q.dyq --target cpu -o art
    dyadiq run art --input NAME=eval.npy -o out.npy

Each stage is ok or failed with the CLI's one-line reason. Where the artifact exists, its outputs (through the
CLI and through ``load_artifact``) are compared with the integer interpreter bit for bit, and its SQNR against
the float model (torch) is set beside onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, int8
activations, after ``quant_pre_process``) on the same calibration samples, scored against the same float
reference. onnxruntime is run with MinMax and Percentile calibration and its best is reported (the
others are in the JSON); a ``.pt2`` row takes the onnxruntime number of the opset-17 ONNX export of the same
module (onnxruntime cannot read ``.pt2``).

    SQNR = mean over samples of 10 log10(sum y^2 / sum (y - y_q)^2)

Inputs are photo crops (``dyadiq.zoo.photo_crops``, split "calib" / "eval", resized to the model's input
size and normalized to [-1, 1]); weights are random (seeded) with randomized BatchNorm statistics, so the
numbers show coverage and numerical health, not accuracy.

    python bench/model_coverage.py [--models resnet18,unet] [--exports pt2,onnx11,onnx17] [--calib 16] [--eval 4]
        [--dyadiq-flags "--rounding nearest"]
writes bench/results/model_coverage.{json,md} (after every row, so a partial run keeps what it finished).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_description, write_results

RESULTS = Path(__file__).resolve().parent / "results"
EXPORTS = ("pt2", "onnx11", "onnx17")
COLUMNS = ["model", "export", "dyadiq flags", "ops", "quantize", "compile", "run", "artifact == integer interp",
           "SQNR dyadiq (dB)", "SQNR onnxruntime best (dB)", "ort method", "dyadiq - ort (dB)", "SQNR dyadiq alt (dB)",
           "ops ort leaves float", "time (s)"]
ORT_METHODS = ("MinMax", "Percentile")
DEFAULT_FLAGS = "--rounding nearest"
ALT_FLAGS = "--calib-method percentile"


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    noise = ((r - g) ** 2).sum(1)
    return float(np.mean(10 * np.log10((r ** 2).sum(1) / np.maximum(noise, 1e-30))))


def cli(*args: str, timeout: int = 3600) -> tuple[bool, str]:
    """Run ``dyadiq ARGS``: (ok, the error line or the last line of output)."""
    exe = shutil.which("dyadiq")
    cmd = [exe] if exe else [sys.executable, "-m", "dyadiq.cli"]
    try:
        p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    if p.returncode == 0:
        return True, (p.stdout.strip().splitlines() or [""])[-1]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    return False, (lines[-1] if lines else (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1])[:300]


def ort_float_ops(q_path: Path) -> list[str]:
    """Op types of the QDQ model whose output is not re-quantized (they compute and pass on a float tensor)."""
    import onnx

    m = onnx.load(str(q_path))
    consumers: dict[str, list[str]] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    out = set()
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for o in n.output:
            if "QuantizeLinear" not in consumers.get(o, []):
                out.add(n.op_type)
    return sorted(out)


def ort_run(onnx_path: Path, calib: np.ndarray, evalx: np.ndarray, ref: np.ndarray, work: Path) -> dict:
    """onnxruntime quantize_static, QDQ, per-channel, int8, one entry per calibration method."""
    import os

    # quant_pre_process / quantize_static leave temporaries (sym_shape_infer_temp.onnx, *.data) in the cwd
    cwd = os.getcwd()
    os.chdir(work)
    try:
        return _ort_run(onnx_path, calib, evalx, ref, work)
    finally:
        os.chdir(cwd)


def _ort_run(onnx_path: Path, calib: np.ndarray, evalx: np.ndarray, ref: np.ndarray, work: Path) -> dict:
    res: dict = {}
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre, src = work / f"{onnx_path.stem}.pre.onnx", onnx_path
        m = onnx.load(str(onnx_path))
        if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < 13:
            # quantize_static writes per-channel DequantizeLinear (axis: opset 13) without upgrading the
            # opset, which onnxruntime then refuses to load: upgrade first, as dyadiq's importer does
            from onnx import version_converter
            src = work / f"{onnx_path.stem}.op13.onnx"
            onnx.save(version_converter.convert_version(m, 13), str(src))
            res["note"] = "converted to opset 13 before quantize_static"
        try:
            quant_pre_process(str(src), str(pre))
        except Exception:  # noqa: BLE001  symbolic shape inference gives up on a dynamic batch through Resize
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            res["note"] = (res.get("note", "") + "; " if "note" in res else "") + \
                "quant_pre_process with skip_symbolic_shape=True (symbolic shape inference failed)"
    except Exception as e:  # noqa: BLE001
        return {"error": f"failed: {type(e).__name__}: {str(e)[:120]}"}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    for method in ORT_METHODS:
        q = work / f"{onnx_path.stem}.{method}.onnx"
        try:
            quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
            out = np.concatenate([sess.run(None, {"x": evalx[i:i + 1]})[0] for i in range(len(evalx))])
            res[method] = sqnr(ref, out.reshape(ref.shape))
            res.setdefault("float ops", ort_float_ops(q))
        except Exception as e:  # noqa: BLE001  (a failed peer is a row entry, not a crash)
            res[method] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return res


def export(model, x, kind: str, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "pt2":
            torch.export.save(torch.export.export(model, (x,)), str(path))
        elif kind == "onnx11":
            torch.onnx.export(model, (x,), str(path), opset_version=11, dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        else:
            torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"],
                              output_names=["y"])


def one_row(name: str, kind: str, model, x, calib, evalx, ref, flags: list[str], ort_cache: dict,
            work: Path, alt: list[str] | None = None) -> dict:
    from dyadiq import api, integerize
    from dyadiq.interp import run as interp

    t0 = time.perf_counter()
    row: dict = {"model": name, "export": kind, "dyadiq flags": " ".join(flags)}
    path = work / f"{name}.{kind}.{'pt2' if kind == 'pt2' else 'onnx'}"
    dyq, art = work / f"{name}.{kind}.dyq", work / f"{name}.{kind}-cpu"
    export(model, x, kind, path)
    try:
        row["ops"] = len(api.load(path, notes=[]).nodes)
    except Exception as e:  # noqa: BLE001
        row["quantize"] = f"import failed: {' '.join(str(e).split())[:200]}"
        return row
    onnx_for_ort = work / f"{name}.onnx17.onnx" if kind == "pt2" else path
    if kind == "pt2" and not onnx_for_ort.exists():
        export(model, x, "onnx17", onnx_for_ort)
    if onnx_for_ort not in ort_cache:
        ort_cache[onnx_for_ort] = ort_run(onnx_for_ort, calib, evalx, ref, work)
    o = ort_cache[onnx_for_ort]
    row["ort"] = {k: v for k, v in o.items() if k != "float ops"}
    scored = {m: v for m, v in o.items() if m in ORT_METHODS and isinstance(v, float)}
    if scored:
        best = max(scored, key=scored.get)
        row["SQNR onnxruntime best (dB)"], row["ort method"] = scored[best], best
    else:
        row["SQNR onnxruntime best (dB)"] = o.get("error") or o.get("MinMax")
    row["ops ort leaves float"] = ", ".join(o.get("float ops", []))
    report = work / f"{name}.{kind}.report.json"
    stages = (("quantize", ("quantize", str(path), "-o", str(dyq), "--calib", str(work / "calib.npy"),
                            "--report", str(report), *flags)),
              ("compile", ("compile", str(dyq), "--target", "cpu", "-o", str(art))),
              ("run", None))
    for stage, args in stages:
        if stage == "run":
            in_name = api.load(dyq).inputs[0]
            args = ("run", str(art), "--input", f"{in_name}={work / 'x0.npy'}", "-o", str(work / "y0.npy"))
        t = time.perf_counter()
        ok, msg = cli(*args)
        row[f"{stage} s"] = round(time.perf_counter() - t, 1)
        row[stage] = "ok" if ok else f"failed: {msg}"
        if not ok:
            for later in ("compile", "run"):
                row.setdefault(later, "not reached")
            break
    if row.get("run") == "ok":
        q = integerize(api.load(dyq))
        artifact = api.load_artifact(art)
        got = np.concatenate([np.asarray(artifact.run({q.inputs[0]: evalx[i:i + 1]})) for i in range(len(evalx))])
        golden = np.concatenate([np.asarray(interp(q, evalx[i:i + 1], mode="integer")) for i in range(len(evalx))])
        cli_out = np.load(work / "y0.npy")
        exact = np.array_equal(got, golden) and np.array_equal(cli_out.reshape(golden[:1].shape), golden[:1])
        row["artifact == integer interp"] = "yes" if exact else \
            f"NO (max diff {np.abs(got.astype(np.float64) - golden).max():.3g})"
        row["SQNR dyadiq (dB)"] = sqnr(ref, got.reshape(ref.shape))
        if isinstance(row.get("SQNR onnxruntime best (dB)"), float):
            row["dyadiq - ort (dB)"] = row["SQNR dyadiq (dB)"] - row["SQNR onnxruntime best (dB)"]
    if alt and kind == "onnx17":
        # the same flow with other quantize flags, scored through the integer interpreter (the artifact
        # is bit-exact with it, above)
        t = time.perf_counter()
        ok, msg = cli("quantize", str(path), "-o", str(work / "alt.dyq"), "--calib", str(work / "calib.npy"),
                      *flags, *alt)
        if ok:
            qa = integerize(api.load(work / "alt.dyq"))
            ya = np.concatenate([np.asarray(interp(qa, evalx[i:i + 1], mode="integer")) for i in range(len(evalx))])
            row["SQNR dyadiq alt (dB)"] = sqnr(ref, ya.reshape(ref.shape))
        else:
            row["SQNR dyadiq alt (dB)"] = f"failed: {msg}"
        row["alt s"] = round(time.perf_counter() - t, 1)
    row["time (s)"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv=None) -> None:
    import torch

    from dyadiq.zoo import photo_crops
    from dyadiq.zoo.archs import CLASSES, SIZES, build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CLASSES), help="comma-separated zoo.archs names")
    ap.add_argument("--exports", default=",".join(EXPORTS), help="comma-separated: pt2, onnx11, onnx17")
    ap.add_argument("--calib", type=int, default=16, help="calibration samples (default 16)")
    ap.add_argument("--eval", type=int, default=16, help="evaluation samples (default 16; 4 are too few: a "
                    "10-logit classifier's per-sample SQNR varies by ~4 dB)")
    ap.add_argument("--dyadiq-flags", default=DEFAULT_FLAGS,
                    help=f"extra flags for dyadiq quantize after the defaults (default {DEFAULT_FLAGS!r})")
    ap.add_argument("--append", action="store_true", help="keep the rows already in the JSON (other models)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--alt-flags", default=ALT_FLAGS,
                    help=f"on the opset-17 row, also score quantize with these flags added (default {ALT_FLAGS!r}; "
                         "'' to skip)")
    a = ap.parse_args(argv)
    flags, alt = shlex.split(a.dyadiq_flags), shlex.split(a.alt_flags)
    meta = {"cpu": cpu_description()["model"], "calibration samples": a.calib, "evaluation samples": a.eval,
            "dyadiq": "dyadiq quantize MODEL -o OUT --calib DATA " + " ".join(flags)
                      + " (defaults otherwise: per-channel int8 weights, MSE activation ranges, bias correction,"
                        " equalization as the pipeline decides)",
            "dyadiq alt": f"the opset-17 export quantized with {' '.join(flags + alt)} added (integer interpreter)",
            "onnxruntime": "quantize_static QDQ per-channel int8 (ActivationSymmetric=False, WeightSymmetric=True) "
                           "after quant_pre_process, best of MinMax / Percentile calibration (Entropy, tried on resnet18 and densenet_block, gave exactly MinMax's result and was dropped for time) "
                           "(same calibration samples, same float reference)",
            "inputs": "photo crops (dyadiq.zoo.photo_crops, calib/eval splits) at the model's input size; "
                      "random seeded weights (coverage and numerical health, not accuracy)"}
    rows: list[dict] = []
    if a.append and (a.out / "model_coverage.json").exists():
        import json
        old = json.loads((a.out / "model_coverage.json").read_text())["rows"]
        done = set(a.models.split(","))
        rows = [r for r in old if r.get("model") not in done]
    for name in a.models.split(","):
        model, x = build(name)
        s = SIZES[name]
        calib = photo_crops(a.calib, s, split="calib")
        evalx = photo_crops(a.eval, s, split="eval")
        with torch.no_grad():
            ref = np.concatenate([model(torch.from_numpy(evalx[i:i + 1])).numpy() for i in range(a.eval)])
        ort_cache: dict = {}
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            np.save(work / "calib.npy", calib)
            np.save(work / "x0.npy", evalx[:1])
            for kind in a.exports.split(","):
                try:
                    row = one_row(name, kind, model, x, calib, evalx, ref, flags, ort_cache, work, alt)
                except Exception as e:  # noqa: BLE001  (one crash is its row)
                    row = {"model": name, "export": kind, "quantize": f"bench error: {type(e).__name__}: {str(e)[:200]}"}
                rows.append(row)
                print(row, flush=True)
                write_results("model_coverage", rows, COLUMNS, meta, a.out)
    print(write_results("model_coverage", rows, COLUMNS, meta, a.out))


if __name__ == "__main__":
    main()
