# SPDX-License-Identifier: Apache-2.0
"""EfficientNet-Lite0 (batch 1) on an NVIDIA GPU: dyadiq's cuda artifact (W8A8 per-channel, dlight
schedules, nvcc) next to torch fp16 and onnxruntime's CUDA execution provider (fp32 and int8 QDQ) where
they are installed; median call in alternating rounds, synchronized. Needs a GPU and a CUDA-enabled TVM
(the dyadiq row is skipped with its reason otherwise; so is every peer whose package lacks CUDA).
Column ``exact``: the dyadiq output against the integer interpreter. Writes
bench/results/cuda_latency.{json,md}.

    python bench/cuda_latency.py [--arch sm_90] [--runs 100] [--models DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results
from cpu_latency import interleaved_ms
from tosa_latency import build


def _torch_fp16(x):
    import torch
    if not torch.cuda.is_available():
        return None, "torch has no CUDA device"
    from dyadiq.zoo import efficientnet_lite0
    model = efficientnet_lite0().eval().half().cuda()
    xt = torch.from_numpy(x).half().cuda()

    def call():
        with torch.no_grad():
            model(xt)
        torch.cuda.synchronize()
    return call, torch.cuda.get_device_name(0)


def _ort_cuda(path, x):
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    return lambda: sess.run(None, {"input": x})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    d = args.models or Path(tempfile.mkdtemp(prefix="dyadiq-cuda-bench-"))
    d.mkdir(parents=True, exist_ok=True)

    from dyadiq import targets
    from dyadiq.interp import run
    from dyadiq.targets.cuda import gpu_status
    ig, x, ort = build(d)
    fns, skipped, exact = {}, {}, {}
    label = f"dyadiq cuda W8A8 per-channel ({args.arch}, dlight)"
    why = gpu_status()
    if why is None:
        art = targets.compile(ig, target="cuda", arch=args.arch)
        exact[label] = str(np.array_equal(art.run(x), run(ig, x)))
        fns[label] = ((lambda: art.run(x)), 1)
        k = art.manifest["kernels"]
        skipped["dyadiq kernels"] = f"{k['kernels']} kernels, {k.get('dp4a', 0)} dp4a, {k.get('mma', 0)} mma in the PTX"
    else:
        skipped[label] = why
    try:
        call, dev = _torch_fp16(x)
        if call is None:
            skipped["torch fp16"] = dev
        else:
            fns["torch fp16"] = (call, 1)
            skipped["device"] = dev
    except ImportError:
        skipped["torch fp16"] = "torch not installed"
    for name, p in ort.items():
        if "u8" in name or "fp32" in name:
            call = _ort_cuda(p, x)
            if call is None:
                skipped[name + " (CUDA EP)"] = "onnxruntime has no CUDAExecutionProvider"
            else:
                fns[name + " (CUDA EP)"] = (call, 1)
    rows = []
    if fns:
        ms = interleaved_ms(fns, args.runs)
        rows = [{"config": k, "ms": v, "exact": exact.get(k, "")} for k, v in ms.items()]
    meta = {"model": "EfficientNet-Lite0 (dyadiq.zoo), batch 1, 224x224", "arch": args.arch,
            "runs": f"median of {args.runs} calls in alternating rounds of 5, after 3 warm-up calls",
            **{f"note: {k}": v for k, v in skipped.items()},
            "load average (1/5/15 min) at start": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    print(write_results("cuda_latency", rows, ["config", "ms", "exact"], meta, args.out))


if __name__ == "__main__":
    main()
