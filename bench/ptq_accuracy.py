# SPDX-License-Identifier: Apache-2.0
"""PTQ accuracy of EfficientNet-Lite0: dyadiq configurations vs onnxruntime quantize_static, one run.

Proxy set: deterministic random-resized crops of the offline photos (``--n`` eval crops, disjoint
stream from the ``--calib`` calibration crops). Metrics vs the float model: top-1 / top-5 agreement
and mean logit SQNR. Writes bench/results/ptq_accuracy.{json,md}.

    python bench/ptq_accuracy.py [--n 256] [--calib 64] [--only dyadiq|ort]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import agreement, cpu_description, write_results  # noqa: E402
from dyadiq.passes.pipeline import FAST_OPTIONS  # noqa: E402 - the pre-default fast settings

BATCH = 32

DYADIQ_CONFIGS = {
    "W8A8 per-tensor, no CLE/BC": dict(per_channel=False, equalize=False, bias_correct=False),
    "W8A8 per-tensor, CLE+BC": dict(per_channel=False, equalize=True, bias_correct=True),
    "W8A8 per-channel, no CLE/BC": dict(per_channel=True, equalize=False, bias_correct=False),
    "W8A8 per-channel, BC": dict(per_channel=True, equalize=False, bias_correct=True),
    "W8A8 per-channel, CLE+BC": dict(per_channel=True, equalize=True, bias_correct=True),
    "W8A8 per-tensor, CLE+GPTQ+BC": dict(per_channel=False, equalize=True, bias_correct=True, rounding="gptq"),
    "W8A8 per-channel, GPTQ+BC": dict(per_channel=True, equalize=False, bias_correct=True, rounding="gptq"),
    "W8A8 per-tensor, CLE+GPTQ+BC, ILP 16-bit acts (3%)": dict(per_channel=False, equalize=True, bias_correct=True,
                                                               rounding="gptq", wide_acts=0.03),
    "W7A8 per-channel, GPTQ+BC (the exact vpmaddubsw kernels)": dict(per_channel=True, weight_bits=7,
                                                                     bias_correct=True, rounding="gptq"),
    "W8A8 per-tensor, CLE+GPTQ+BC, ILP 16-bit acts (6%)": dict(per_channel=False, equalize=True, bias_correct=True,
                                                               rounding="gptq", wide_acts=0.06),
    "W8A8 per-channel, GPTQ+BC, ILP 16-bit acts (3%)": dict(per_channel=True, equalize=False, bias_correct=True,
                                                            rounding="gptq", wide_acts=0.03),
    "W8A8 per-channel, GPTQ+BC, ILP 16-bit acts (10%)": dict(per_channel=True, equalize=False, bias_correct=True,
                                                             rounding="gptq", wide_acts=0.10),
    "W8A8 per-channel, GPTQ+BC, ILP 16-bit acts (20%)": dict(per_channel=True, equalize=False, bias_correct=True,
                                                             rounding="gptq", wide_acts=0.20),
    "W8A8 per-tensor, CLE+GPTQ+BC, MSE ranges": dict(per_channel=False, equalize=True, bias_correct=True,
                                                     rounding="gptq", calib_method="mse"),
    "W8A8 per-channel, GPTQ+BC, MSE ranges": dict(per_channel=True, equalize=False, bias_correct=True,
                                                  rounding="gptq", calib_method="mse"),
    **{f"W8A8 per-channel, GPTQ+BC, MSE ranges, ILP 16-bit acts ({b:.0%})": dict(
        per_channel=True, equalize=False, bias_correct=True, rounding="gptq", calib_method="mse", wide_acts=b)
       for b in (0.03, 0.06, 0.10)},
    "W8A16 per-channel, GPTQ+BC (weights alone; a diagnostic: no int32 lowering)": dict(
        per_channel=True, act_bits=16, bias_correct=True, rounding="gptq", _diagnostic=True),
    "mixed 4.5 bits (ILP, hessian), GPTQ+BC": dict(per_channel=True, bias_correct=True, rounding="gptq",
                                                    _auto=dict(mean_bits=4.5, sensitivity="hessian")),
    "mixed 4.5 bits (ILP, hessian), GPTQ+BC, ILP 16-bit acts (3%)": dict(
        per_channel=True, bias_correct=True, rounding="gptq", wide_acts=0.03,
        _auto=dict(mean_bits=4.5, sensitivity="hessian")),
    "W4A8 per-channel (8-bit ends), no CLE/BC": dict(per_channel=True, weight_bits=4, first_last_bits=8,
                                                     equalize=False, bias_correct=False),
    "W4A8 per-channel (8-bit ends), CLE+BC": dict(per_channel=True, weight_bits=4, first_last_bits=8,
                                                  equalize=True, bias_correct=True),
    "W4A8 per-channel (8-bit ends), GPTQ+BC": dict(per_channel=True, weight_bits=4, first_last_bits=8,
                                                   equalize=False, bias_correct=True, rounding="gptq"),
}


def run_graph(g, data, mode):
    from dyadiq.interp.run import run_batched
    return run_batched(g, data, mode)


def dyadiq_rows(model, calib, evalx, ref, only=None, skip=None):
    import dyadiq
    g = dyadiq.from_torch(model, (evalx[:BATCH],))
    rows = []
    for name, opts in DYADIQ_CONFIGS.items():
        if (only and only not in name) or (skip and skip in name):
            continue
        t0 = time.perf_counter()
        opts = {**FAST_OPTIONS, **opts}         # the rows name what they add to min/max ranges + nearest
        auto = opts.pop("_auto", None)
        diagnostic = opts.pop("_diagnostic", False)
        if auto:                                 # ILP weight bits at a parameter-weighted mean width
            from dyadiq.mixed import quantize_auto
            from dyadiq.passes.quantize_weights import weighted_layers
            params = sum(g.const(n.inputs[1]).size for n in weighted_layers(g))
            q, rep = quantize_auto(g, calib, {"size_bytes": int(params * auto["mean_bits"] / 8)},
                                   sensitivity=auto["sensitivity"], **opts)
        else:
            q, rep = dyadiq.quantize(g, calib, **opts)
        tq = time.perf_counter() - t0
        if not diagnostic:
            dyadiq.integerize(q)                 # every other row lowers to integer code (raises if not)
        out = run_graph(q, evalx, "simulated")
        wide = rep["activations"].get("wide")
        rows.append({"config": f"dyadiq {name}", **agreement(ref, out), "quantize_s": round(tq, 1),
                     **({"wide_acts": ", ".join(wide["chosen"]),
                         "wide_cost": f"+{wide['extra_bops_fraction']:.1%} BOPs, "
                                      f"+{wide['extra_act_bits_fraction']:.1%} activation bits"} if wide else {})})
        print(rows[-1], flush=True)
    return rows


def ort_rows(model, calib, evalx, ref):
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    rows = []
    with tempfile.TemporaryDirectory() as d:
        fp32, pre = Path(d) / "fp32.onnx", Path(d) / "pre.onnx"
        torch.onnx.export(model, (torch.from_numpy(evalx[:1]),), str(fp32), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False)
        quant_pre_process(str(fp32), str(pre))
        for per_channel in (False, True):
            for method in ("MinMax", "Percentile", "Entropy"):
                qpath = Path(d) / f"q_{per_channel}_{method}.onnx"
                quantize_static(str(pre), str(qpath), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, method),
                                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
                # default session (QDQ fused into its int8 kernels) and the reference semantics (no fusion)
                for label, level in (("", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                     (", unfused", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
                    so = ort.SessionOptions()
                    so.graph_optimization_level = level
                    sess = ort.InferenceSession(str(qpath), so, providers=["CPUExecutionProvider"])
                    out = np.concatenate([sess.run(None, {"input": evalx[i:i + 1]})[0] for i in range(len(evalx))])
                    rows.append({"config": f"onnxruntime QDQ {'per-channel' if per_channel else 'per-tensor'} "
                                           f"{method}{label}", **agreement(ref, out)})
                    print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--only", choices=["dyadiq", "ort"])
    ap.add_argument("--config", help="substring of the dyadiq configs to run")
    ap.add_argument("--skip", help="substring of the dyadiq configs to leave out (e.g. GPTQ)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    import torch
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    torch.set_num_threads(2)
    model = efficientnet_lite0()
    calib = photo_crops(args.calib, split="calib")
    evalx = photo_crops(args.n, split="eval")
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(evalx[i:i + BATCH])).numpy() for i in range(0, args.n, BATCH)])
    rows = []
    if args.only != "ort":
        rows += dyadiq_rows(model, calib, evalx, ref, args.config, args.skip)
    if args.only != "dyadiq":
        rows += ort_rows(model, calib, evalx, ref)
    meta = {"model": "EfficientNet-Lite0", "eval crops": args.n, "calibration crops": args.calib,
            "cpu": cpu_description()["model"], "command": "python bench/ptq_accuracy.py " + " ".join(argv or sys.argv[1:])}
    print(write_results("ptq_accuracy", rows, ["config", "top1", "top5", "top1_in_top5", "sqnr_db", "quantize_s", "wide_acts",
                                         "wide_cost"],
                        meta, args.out))


if __name__ == "__main__":
    main()
