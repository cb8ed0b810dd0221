# SPDX-License-Identifier: Apache-2.0
"""EfficientNet-Lite0 (batch 1, one thread) through MLIR TOSA -> IREE llvm-cpu, next to dyadiq's TVM
cpu artifact, onnxruntime int8 (QDQ per-channel from quantize_static, u8 and s8 activations) and
onnxruntime fp32, all timed in one process in alternating rounds (median call).

dyadiq W8A8 per-channel: the same integer graph compiled for ``tosa`` (IREE ``local-sync`` driver: one
thread, module built with ``--iree-llvmcpu-target-cpu=host``) and for ``cpu`` (TVM, hand-scheduled x86
kernels, ``TVM_NUM_THREADS=1``). Both rows include the numpy/TVM quantize of the float input and the
dequantize of the logits; column ``exact`` compares each dyadiq artifact with the integer interpreter.
Writes bench/results/tosa_latency.{json,md}.

    python bench/tosa_latency.py [--runs 40] [--models DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")          # before tvm is imported

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_description, write_results
from cpu_latency import interleaved_ms, ort_models, ort_session

TOSA, CPU = "dyadiq tosa W8A8 per-channel (IREE llvm-cpu, local-sync)", "dyadiq cpu W8A8 per-channel (TVM, x86 kernels)"


def build(d: Path):
    """The integer graph (W8A8 per-channel), the input and the onnxruntime models, cached in ``d``."""
    import torch

    import dyadiq
    from dyadiq.ir.serialize import load, save
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    model = efficientnet_lite0()
    calib = photo_crops(32, split="calib")
    if not (d / "w8.dyq").exists():
        x = photo_crops(1, split="eval")
        np.save(d / "x.npy", x)
        g = dyadiq.from_torch(model, (torch.from_numpy(x),))
        q, _ = dyadiq.quantize(g, calib, per_channel=True)
        save(dyadiq.integerize(q), d / "w8.dyq")
    x = np.load(d / "x.npy")
    return load(d / "w8.dyq"), x, ort_models(model, calib, x, d)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--models", type=Path, default=None, help="cache folder for the quantized models")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    d = args.models or Path(tempfile.mkdtemp(prefix="dyadiq-tosa-bench-"))
    d.mkdir(parents=True, exist_ok=True)

    import time

    from dyadiq import targets
    from dyadiq.interp import run
    from dyadiq.targets.tosa import TosaArtifact
    ig, x, ort = build(d)
    t = time.perf_counter()
    tosa = targets.compile(ig, target="tosa")
    tosa_build_s = time.perf_counter() - t
    tosa = TosaArtifact(tosa.manifest, tosa.mlir, tosa.vmfb, driver="local-sync")       # one thread
    cpu = targets.compile(ig, target="cpu")
    ref = run(ig, x)
    exact = {TOSA: str(np.array_equal(tosa.run(x), ref)), CPU: str(np.array_equal(cpu.run(x), ref))}
    fns = {TOSA: ((lambda: tosa.run(x)), 1), CPU: ((lambda: cpu.run(x)), 1)}
    for label, p in ort.items():
        sess = ort_session(p, 1)
        fns[label] = ((lambda s=sess: s.run(None, {"input": x})), 1)
    ms = interleaved_ms(fns, args.runs)
    rows = [{"config": k, "threads": 1, "ms": v, "exact": exact.get(k, "")} for k, v in ms.items()]
    cpu_d = cpu_description()
    from dyadiq.targets.tosa import _version
    meta = {"model": "EfficientNet-Lite0 (dyadiq.zoo), batch 1, 224x224, one thread",
            "cpu": cpu_d["model"], "features": " ".join(cpu_d["features"]),
            "iree": f"iree-base-compiler {_version('iree-base-compiler')}, iree-base-runtime "
                    f"{_version('iree-base-runtime')}, flags "
                    f"{' '.join(tosa.manifest['iree_flags'])}, TOSA -> vmfb build {tosa_build_s:.1f} s",
            "runs": f"median of {args.runs} calls in alternating rounds of 5, after 3 warm-up calls",
            "load average (1/5/15 min) at start": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    print(write_results("tosa_latency", rows, ["config", "threads", "ms", "exact"], meta, args.out))


if __name__ == "__main__":
    main()
