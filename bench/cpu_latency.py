# SPDX-License-Identifier: Apache-2.0
"""CPU latency of EfficientNet-Lite0 (batch 1) at 1 and 2 threads, all measured in one run:
dyadiq cpu artifact (untuned; tuned with --tune N), onnxruntime int8 (QDQ per-channel from quantize_static,
u8 and s8 activations), onnxruntime fp32 and torch fp32. Median of --runs runs after warm-up.
Also a per-layer table of the dyadiq artifact (TVM profiler). Writes bench/results/cpu_latency.{json,md}.

    python bench/cpu_latency.py [--runs 50] [--tune 0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_description, write_results  # noqa: E402


def median_ms(fn, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def ort_models(model, calib, x, d: Path) -> dict[str, Path]:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    fp32, pre = d / "fp32.onnx", d / "pre.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(fp32), input_names=["input"], opset_version=17, dynamo=False)
    quant_pre_process(str(fp32), str(pre))
    out = {"onnxruntime fp32": fp32}
    for act, name in ((QuantType.QUInt8, "u8"), (QuantType.QInt8, "s8")):
        p = d / f"qdq_{name}.onnx"
        quantize_static(str(pre), str(p), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=act, weight_type=QuantType.QInt8)
        out[f"onnxruntime int8 QDQ per-channel ({name} act, s8 weights)"] = p
    return out


def per_layer(art, x, runs: int = 5) -> list[dict]:
    """Per-kernel wall time of the artifact's VM calls (VM instrument hook), summed by kernel, slowest first."""
    import tvm
    from tvm import relax
    vm = relax.VirtualMachine(art.module, tvm.cpu())
    agg: dict[str, float] = {}
    start: dict[str, float] = {}

    def instrument(func, name, before, ret, *args):
        if before:
            start[name] = time.perf_counter()
        else:
            agg[name] = agg.get(name, 0.0) + (time.perf_counter() - start.pop(name, time.perf_counter())) * 1e3 / runs
        return 0
    vm.set_instrument(tvm.runtime.convert(instrument) if hasattr(tvm.runtime, "convert") else instrument)
    arg = tvm.runtime.tensor(np.ascontiguousarray(x), tvm.cpu())
    for _ in range(runs):
        vm["main"](arg)
    return sorted(({"kernel": k, "ms": v} for k, v in agg.items()), key=lambda r: -r["ms"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--tune", type=int, default=0, help="MetaSchedule trials for the tuned variant (0: skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--threads", type=int, default=0, help="internal: measure one thread count in this process")
    ap.add_argument("--rows-json", type=Path, help="internal: where a --threads run writes its rows")
    args = ap.parse_args(argv)
    if not args.threads:
        return _driver(args, argv)

    import onnxruntime as ort
    import torch

    import dyadiq
    from dyadiq.zoo import efficientnet_lite0, photo_crops

    model = efficientnet_lite0()
    calib = photo_crops(32, split="calib")
    x = photo_crops(1, split="eval")
    g = dyadiq.from_torch(model, (torch.from_numpy(x),))
    q, _ = dyadiq.quantize(g, calib, per_channel=True)
    arts = {"dyadiq cpu W8A8 per-channel (untuned)": dyadiq.compile(q, target="cpu")}
    if args.tune:
        arts[f"dyadiq cpu W8A8 per-channel (tuned, {args.tune} trials)"] = dyadiq.compile(q, target="cpu",
                                                                                         tune=args.tune)
    q4, _ = dyadiq.quantize(g, calib, per_channel=True, weight_bits=4, first_last_bits=8)
    arts["dyadiq cpu W4A8 per-channel (untuned)"] = dyadiq.compile(q4, target="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        onnx_paths = ort_models(model, calib, x, Path(d))
        for threads in (args.threads,):
            torch.set_num_threads(threads)
            for label, art in arts.items():
                rows.append({"config": label, "threads": threads, "ms": median_ms(lambda: art.run(x), args.runs)})
                print(rows[-1], flush=True)
            for label, p in onnx_paths.items():
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
                sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
                rows.append({"config": label, "threads": threads,
                             "ms": median_ms(lambda: sess.run(None, {"input": x}), args.runs)})
                print(rows[-1], flush=True)
            with torch.no_grad():
                xt = torch.from_numpy(x)
                rows.append({"config": "torch fp32", "threads": threads,
                             "ms": median_ms(lambda: model(xt), args.runs)})
                print(rows[-1], flush=True)
    import json
    args.rows_json.write_text(json.dumps(rows))
    if args.threads == 1:
        layer_rows = per_layer(next(iter(arts.values())), x)
        print(write_results("cpu_latency_layers", layer_rows[:40], ["kernel", "ms"],
                            {"artifact": next(iter(arts)), "cpu": cpu_description()["model"], "threads": 1},
                            args.out))


def _driver(args, argv) -> None:
    """Run each thread count in its own process (TVM fixes its thread pool at start-up), then merge."""
    import json
    import subprocess
    rows = []
    for threads in (1, 2):
        env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run([sys.executable, __file__, "--threads", str(threads), "--rows-json", f.name,
                            "--runs", str(args.runs), "--tune", str(args.tune), "--out", str(args.out)],
                           env=env, check=True)
            rows += json.loads(Path(f.name).read_text())
    cpu = cpu_description()
    meta = {"model": "EfficientNet-Lite0 batch 1", "cpu": cpu["model"], "features": " ".join(cpu["features"]),
            "runs": f"median of {args.runs} after 5 warm-up",
            "note": "each thread count runs in its own process (TVM_NUM_THREADS set before start-up)",
            "command": "python bench/cpu_latency.py " + " ".join(argv or sys.argv[1:])}
    print(write_results("cpu_latency", rows, ["config", "threads", "ms"], meta, args.out))


if __name__ == "__main__":
    main()
