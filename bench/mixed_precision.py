# SPDX-License-Identifier: Apache-2.0
"""Mixed-precision weights for EfficientNet-Lite0: ILP plans vs hand-made and random plans of equal size.

At each weight-size budget (mean width 4.5 and 5 bits, parameter-weighted, and the size of the
hand-made plan) it compares

- ILP (hessian):  ``choose_bits`` on Hutchinson-trace sensitivities,
- ILP (measured): ``choose_bits`` on measured single-layer KL sensitivities,
- random, best of R: ILP plans for random per-layer importances ``u_l ~ LogNormal(0, 1)``
  (sensitivity ``u_l * n_l * 4^-b``), so they fill the same budget; the best by top-1 (then SQNR),
- uniform W4 with the first and last layer at 8 bits (its own size), and uniform W8 for reference.

Every plan goes through the same pipeline (``dyadiq.quantize`` defaults: per-channel weights, bias
correction, 8-bit minmax activations) and is evaluated in simulated mode (torch) on the proxy crops against the float model:
top-1 / top-5 agreement and mean logit SQNR. Writes bench/results/mixed_precision.{json,md}.

    python bench/mixed_precision.py [--n 256] [--calib 32] [--random 5] [--avg 4.5 5.0]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import agreement, cpu_description, write_results  # noqa: E402
from dyadiq.passes.pipeline import FAST_OPTIONS  # noqa: E402 - the pre-default fast settings

BATCH = 16


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="evaluation crops")
    ap.add_argument("--calib", type=int, default=32, help="calibration crops (quantize and sensitivities)")
    ap.add_argument("--random", type=int, default=5, help="random plans per budget")
    ap.add_argument("--avg", type=float, nargs="+", default=[4.5, 5.0], help="mean weight widths (bits)")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--measured-samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse-sens", action="store_true", help="read sensitivities saved by an earlier run")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    import torch

    import dyadiq
    from dyadiq.pareto import evaluate
    from dyadiq.passes.canonicalize import canonicalize
    from dyadiq.passes.choose_bits import Budget, choose_bits, layer_costs, plan_stats
    from dyadiq.passes.sensitivity import prepare_graph, sensitivities
    from dyadiq.zoo import efficientnet_lite0, photo_crops

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    model = efficientnet_lite0()
    calib = photo_crops(args.calib, split="calib")
    evalx = photo_crops(args.n, split="eval")
    g = canonicalize(dyadiq.from_torch(model, (evalx[:BATCH],)))
    prep = prepare_graph(g)                      # as quantize's defaults prepare it (per-channel: no CLE)
    costs = layer_costs(prep)
    names = list(costs)
    params = sum(c.params for c in costs.values())
    ref = evaluate(g, evalx, simulated=False)

    sens_file = args.out / "mixed_precision_sensitivity.json"
    timings = {}
    if args.reuse_sens and sens_file.exists():
        saved = json.loads(sens_file.read_text())
        sens = {m: {k: {int(b): v for b, v in s.items()} for k, s in saved[m].items()} for m in ("hessian", "measured")}
        timings = saved.get("timings_s", {})
        log("sensitivities read from", sens_file)
    else:
        sens = {}
        for method, kw in (("hessian", dict(probes=args.probes, samples=args.calib)),
                           ("measured", dict(samples=args.measured_samples))):
            t = time.perf_counter()
            last = [0.0]

            def progress(stage, done, total):
                if time.perf_counter() - last[0] > 30 or done == total:
                    last[0] = time.perf_counter()
                    log(f"{stage} {done}/{total}")
            sens[method] = sensitivities(prep, calib, method, progress=progress, prepared=True, **kw)
            timings[f"{method}_s"] = round(time.perf_counter() - t, 1)
            log(method, "sensitivities in", timings[f"{method}_s"], "s")
        args.out.mkdir(parents=True, exist_ok=True)
        sens_file.write_text(json.dumps({"timings_s": timings, **{m: {k: {str(b): v for b, v in s.items()}
                                                                        for k, s in sens[m].items()}
                                                                    for m in sens}}, indent=1))

    done: dict[tuple, dict] = {}

    def run_plan(plan: dict) -> dict:
        key = tuple(sorted(plan.items()))
        if key not in done:
            t = time.perf_counter()
            q, report = dyadiq.quantize(g, calib, weight_bits=plan, **FAST_OPTIONS)
            tq = time.perf_counter() - t
            out = evaluate(q, evalx, simulated=True)
            done[key] = {**agreement(ref, out), "quantize_s": round(tq, 1),
                         "weight_bytes": report["weight_bytes"]}
        st = plan_stats(plan, costs)
        return {**done[key], "avg_bits": round(st["avg_bits"], 3), "size_kb": round(st["size_bytes"] / 1e3, 1),
                "pred_hessian": sum(sens["hessian"][n][b] for n, b in plan.items()),
                "pred_measured": sum(sens["measured"][n][b] for n, b in plan.items()), "plan": dict(plan)}

    rows = []
    ends = {n: 4 for n in names}
    ends[names[0]] = ends[names[-1]] = 8
    ends_bytes = plan_stats(ends, costs)["size_bytes"]
    budgets = [(f"{a:g} bits", int(math.floor(params * a / 8))) for a in args.avg]
    budgets.append((f"{ends_bytes * 8 / params:.2f} bits (= W4, 8-bit ends)", ends_bytes))
    solve_s = []
    rng = np.random.default_rng(0)
    for label, size in budgets:
        budget = Budget(size_bytes=size)
        for method in ("hessian", "measured"):
            t = time.perf_counter()
            plan = choose_bits(sens[method], costs, budget)
            solve_s.append(time.perf_counter() - t)
            rows.append({"budget": label, "config": f"ILP ({method})", **run_plan(plan)})
            log(rows[-1]["config"], label, {k: rows[-1][k] for k in ("avg_bits", "top1", "sqnr_db")})
        rand = []
        for r in range(args.random):
            u = rng.lognormal(0.0, 1.0, len(names))
            fake = {n: {b: float(u[i] * costs[n].params * 4.0 ** -b) for b in (2, 3, 4, 5, 6, 8)}
                    for i, n in enumerate(names)}
            rand.append(run_plan(choose_bits(fake, costs, budget)))
            log("random", r, label, {k: rand[-1][k] for k in ("avg_bits", "top1", "sqnr_db")})
        best = max(rand, key=lambda d: (d["top1"], d["sqnr_db"]))
        rows.append({"budget": label, "config": f"random, best of {args.random}", **best,
                     "random_top1_mean": float(np.mean([d["top1"] for d in rand])),
                     "random_sqnr_mean": float(np.mean([d["sqnr_db"] for d in rand]))})
    rows.append({"budget": budgets[-1][0], "config": "uniform W4, first/last 8-bit", **run_plan(ends)})
    rows.append({"budget": "8 bits", "config": "uniform W8", **run_plan({n: 8 for n in names})})
    for r in rows:
        log(r["budget"], r["config"], r["top1"], r["sqnr_db"])

    meta = {"model": "EfficientNet-Lite0 (50 conv/linear layers, %d weights)" % params,
            "eval crops": args.n, "calibration crops": args.calib,
            "pipeline": "dyadiq.quantize defaults (per-channel symmetric weights, no CLE, bias correction, "
                        "round-to-nearest, A8 minmax); simulated in torch",
            "sensitivity": f"hessian: {args.calib} crops x {args.probes} probes/chunk; measured: "
                           f"{args.measured_samples} crops, bias-corrected",
            "sensitivity time (s)": timings, "ILP solve time max (s)": round(max(solve_s), 3),
            "cpu": cpu_description()["model"], "threads": args.threads,
            "load average at start": [round(v, 1) for v in load0],
            "command": "python bench/mixed_precision.py " + " ".join(argv or sys.argv[1:])}
    print(write_results("mixed_precision", rows, ["budget", "config", "avg_bits", "size_kb", "top1", "top5",
                                                  "sqnr_db", "pred_hessian", "pred_measured"], meta, args.out))


if __name__ == "__main__":
    main()
