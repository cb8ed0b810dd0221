# SPDX-License-Identifier: Apache-2.0
"""Size (or BOPs) vs accuracy of mixed-precision plans: the ``dyadiq pareto`` sweep.

For each budget (by default a mean weight width ``a`` in ``avg_bits``, i.e. a packed size of
``sum_l params_l * a / 8`` bytes, or ``sum_l macs_l * a * act_bits`` BOPs), ``choose_bits`` picks the
plan of least summed sensitivity; ``quantize`` (the PTQ pipeline, ``weight_bits=plan``) quantizes with
it; the simulated quantized model is compared with the float model on held-out inputs:

    top1    = mean_n [argmax y_q(n) == argmax y(n)]                  (agreement with float)
    sqnr_db = mean_n 10 log10(||y(n)||^2 / ||y_q(n) - y(n)||^2)      (per-sample output SQNR)

Uniform plans (every layer at 8, 6, 4 bits) are added for reference; each point is marked on or off
the Pareto frontier of all plans per metric. Writes a JSON file and a PNG (matplotlib, Agg) drawn from
the JSON's numbers alone (``plot(json.load(f), png)`` redraws it); both are written to a temporary file
first, then renamed. docs/mixed-precision.md explains the plot.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import PassError
from .ir.graph import Graph

Progress = Callable[[str, int, int], None]
AVG_BITS = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)
KINDS = ("size", "bops")


def output_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean per-sample SQNR (dB) of ``got`` against ``ref`` (first axis = samples)."""
    r = ref.reshape(ref.shape[0], -1).astype(np.float64)
    q = got.reshape(got.shape[0], -1).astype(np.float64)
    noise = ((r - q) ** 2).sum(1)
    sqnr = 10 * np.log10(np.maximum((r ** 2).sum(1), 1e-30) / np.maximum(noise, 1e-30))
    return {"top1": float((r.argmax(1) == q.argmax(1)).mean()), "sqnr_db": float(sqnr.mean())}


def evaluate(g: Graph, x, *, simulated: bool, mode: str = "torch", chunk: int = 32) -> np.ndarray:
    """First output of ``g`` on the samples ``x``.

    ``mode="torch"`` runs ``torch_eval`` (fast; ``simulated`` fake-quantizes like the interpreter);
    ``"interp"`` runs the numpy interpreter (``simulated`` or float). The two round the same way but
    accumulate in different orders, so a value within float error of a rounding boundary can round to a
    neighbouring level; in a deep network such flips spread, and the two simulations differ like two
    equally good quantizations (EfficientNet-Lite0 W8A8: ~29 dB apart), so use either for statistics.
    """
    from .passes.calibrate import prepare_calib
    if mode == "interp":
        from .interp.run import run_batched
        return run_batched(g, x, "simulated" if simulated else "float")
    if mode != "torch":
        raise PassError(f"unknown evaluation mode {mode!r} (choose torch or interp)")
    import torch
    from .passes.torch_eval import TorchGraph
    cs = prepare_calib(g, x)
    tg = TorchGraph(g, outputs=g.outputs[:1], simulated=simulated)
    step = max(cs.batch, chunk - chunk % cs.batch)
    outs = []
    with torch.no_grad():
        for i in range(0, cs.n, step):
            outs.append(tg({k: v[i:i + step] for k, v in cs.arrays.items()}).numpy())
    return np.concatenate(outs)


def holdout(g: Graph, calib, fraction: float = 0.25) -> tuple[dict, dict]:
    """Split calibration samples into (calibration, evaluation): the last ``fraction`` (whole batches,
    at least one) is held out for evaluation; ``InputError`` when fewer than two batches are given."""
    from .errors import InputError
    from .passes.calibrate import prepare_calib
    cs = prepare_calib(g, calib)
    if cs.n_batches < 2:
        raise InputError(f"{cs.n} calibration samples: need at least two batches of {cs.batch} "
                         "to hold some out for evaluation (or give evaluation data)")
    k = min(cs.n_batches - 1, max(1, round(cs.n_batches * fraction)))
    cut = cs.n - k * cs.batch
    return ({n: a[:cut] for n, a in cs.arrays.items()}, {n: a[cut:] for n, a in cs.arrays.items()})


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pareto(g: Graph, calib, evalx, out_png: str | os.PathLike | None, out_json: str | os.PathLike | None, *,
           avg_bits: Sequence[float] = AVG_BITS, kind: str = "size", method: str = "hessian",
           sens: Mapping[str, Mapping[int, float]] | None = None, sens_options=None, options=None,
           candidates: Sequence[int] = (2, 3, 4, 5, 6, 8), uniform: Sequence[int] = (8, 6, 4),
           eval_mode: str = "torch", progress: Progress | None = None, name: str | None = None) -> dict:
    """Sweep budgets, solve, quantize, evaluate; write ``out_png`` / ``out_json`` (if given); return the JSON.

    ``evalx`` (held-out inputs, like ``calib``): None holds out the last quarter of ``calib`` (``holdout``).
    ``name``: the model's name in the JSON and the plot's title (default: the graph's name). The PNG is
    drawn from the JSON's numbers alone (``plot``).
    """
    from .passes.calibrate import prepare_calib
    from .passes.canonicalize import canonicalize
    from .passes.choose_bits import Budget, choose_bits, layer_costs, plan_stats
    from .passes.pipeline import make_options, quantize
    from .passes.sensitivity import make_sensitivity_options, prepare_graph, sensitivities

    if kind not in KINDS:
        raise PassError(f"unknown pareto budget kind {kind!r} (choose from {', '.join(KINDS)})")
    opts = make_options(options)
    sopts = make_sensitivity_options(sens_options, method=method, candidates=tuple(candidates),
                                     per_channel=opts.per_channel, equalize=opts.equalize)
    gc = canonicalize(g)
    if evalx is None:
        calib, evalx = holdout(gc, calib)
    prep = prepare_graph(gc, equalize=opts.equalize, per_channel=opts.per_channel)
    if sens is None:
        sens = sensitivities(prep, calib, options=sopts, progress=progress, prepared=True)
    sens = {k: {int(b): float(v) for b, v in s.items()} for k, s in sens.items()}
    costs = layer_costs(prep, act_bits=opts.act_bits)
    missing = sorted(set(costs) - set(sens))
    if missing:
        raise PassError(f"no sensitivity for layer(s) {missing}")
    params = sum(c.params for c in costs.values())
    macs_bits = sum(c.macs * c.act_bits for c in costs.values())
    ref = evaluate(gc, evalx, simulated=False, mode=eval_mode)

    jobs: list[dict] = []
    for a in avg_bits:
        budget = Budget(size_bytes=int(math.floor(params * a / 8))) if kind == "size" else Budget(bops=macs_bits * a)
        jobs.append({"label": f"ILP {a:g} bits", "kind": "ilp", "target_avg_bits": float(a),
                     "budget": {k: v for k, v in budget.items()}, "_budget": budget})
    for b in uniform:
        jobs.append({"label": f"uniform W{b}", "kind": "uniform", "target_avg_bits": float(b),
                     "_plan": {name: int(b) for name in costs}})
    done_plans: dict[tuple, dict] = {}
    points = []
    for k, job in enumerate(jobs):
        if progress:
            progress("pareto", k, len(jobs))
        point = {key: v for key, v in job.items() if not key.startswith("_")}
        try:
            plan = job.get("_plan") or choose_bits(sens, costs, job["_budget"], candidates)
        except PassError as e:
            point["error"] = str(e)
            points.append(point)
            continue
        key = tuple(sorted(plan.items()))
        if key not in done_plans:
            q, report = quantize(gc, calib, make_options(opts, weight_bits=plan))
            done_plans[key] = {**output_metrics(ref, evaluate(q, evalx, simulated=True, mode=eval_mode)),
                               "report_weight_bytes": int(report["weight_bytes"])}
        stats = plan_stats(plan, costs)
        point.update(stats)
        point.update(done_plans[key])
        point["size_mb"] = stats["size_bytes"] / 1e6
        point["predicted"] = float(sum(sens[n][b] for n, b in plan.items()))
        point["plan"] = dict(plan)
        points.append(point)
    if progress:
        progress("pareto", len(jobs), len(jobs))
    result = {
        "model": name or g.name, "method": method, "kind": kind, "eval_mode": eval_mode,
        "samples": {"calibration": prepare_calib(gc, calib).n, "evaluation": int(ref.shape[0])},
        "params": int(params), "float_size_bytes": int(4 * params), "macs_x_act_bits": int(macs_bits),
        "options": opts.to_dict(),
        "sensitivity": {n: {str(b): v for b, v in s.items()} for n, s in sens.items()},
        "points": points,
    }
    mark_frontier(points, "bops" if kind == "bops" else "size_bytes")
    if out_json is not None:
        text = json.dumps(result, indent=1, sort_keys=True)
        _atomic_write(Path(out_json), lambda p: Path(p).write_text(text))
    if out_png is not None:
        _atomic_write(Path(out_png), lambda p: plot(result, p))
    return result


METRICS = (("top1", "top-1 agreement with the float model"), ("sqnr_db", "output SQNR vs float (dB)"))


def mark_frontier(points: list[dict], xkey: str) -> None:
    """Set ``point["frontier"][metric]``: True when no other evaluated point is at most as large (``xkey``)
    and at least as good, one of the two strictly (the Pareto frontier of all plans, ILP and uniform)."""
    ok = [p for p in points if "error" not in p]
    for p in ok:
        p["frontier"] = {m: not any(o is not p and o[xkey] <= p[xkey] and o[m] >= p[m]
                                    and (o[xkey] < p[xkey] or o[m] > p[m]) for o in ok)
                         for m, _ in METRICS}


def series(result: Mapping) -> dict:
    """What ``plot`` draws, from a ``pareto`` result (or its JSON file's contents) alone: the x axis
    (key, label, scale) and per metric the ``ilp``, ``uniform`` and ``frontier`` points as (x, y) in
    plotted units, with their labels."""
    bops = result.get("kind") == "bops"
    ok = [p for p in result["points"] if "error" not in p]
    if bops:
        xkey, xlabel, scale = "bops", "bit operations (GBOPs = MACs x weight bits x activation bits / 1e9)", 1e-9
    elif max((p["size_bytes"] for p in ok), default=0) < 100_000:
        xkey, xlabel, scale = "size_bytes", "packed weight size (kB = 1000 bytes)", 1e-3
    else:
        xkey, xlabel, scale = "size_bytes", "packed weight size (MB = 10^6 bytes)", 1e-6
    out = {"xkey": xkey, "xlabel": xlabel, "scale": scale, "metrics": {}}
    for m, _ in METRICS:
        def xy(pts):
            return [(p[xkey] * scale, p[m]) for p in pts]
        ilp = sorted((p for p in ok if p["kind"] == "ilp"), key=lambda p: p[xkey])
        uni = sorted((p for p in ok if p["kind"] == "uniform"), key=lambda p: p[xkey])
        front = sorted((p for p in ok if p.get("frontier", {}).get(m)), key=lambda p: p[xkey])
        out["metrics"][m] = {"ilp": xy(ilp), "ilp_labels": [f"{p['avg_bits']:.2f} b" for p in ilp],
                             "uniform": xy(uni), "uniform_labels": [p["label"].replace("uniform ", "") for p in uni],
                             "frontier": xy(front)}
    return out


def figure(result: Mapping):
    """The matplotlib Figure of a ``pareto`` result: size (or BOPs) vs top-1 agreement and vs SQNR."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    s = series(result)
    ok = [p for p in result["points"] if "error" not in p]
    fig = Figure(figsize=(12, 4.8), dpi=120)
    axes = fig.subplots(1, 2)
    per_bit = None                                   # x units per mean weight bit (for the top axis)
    if s["xkey"] == "size_bytes" and result.get("params"):
        per_bit = result["params"] / 8 * s["scale"]
    elif s["xkey"] == "bops" and result.get("macs_x_act_bits"):
        per_bit = result["macs_x_act_bits"] * s["scale"]
    for ax, (m, ylabel) in zip(axes, METRICS):
        d = s["metrics"][m]
        if d["frontier"]:
            fx, fy = zip(*d["frontier"])
            ax.step(fx, fy, where="post", color="0.6", lw=4, alpha=0.35, zorder=1, label="Pareto frontier")
        if d["ilp"]:
            x, y = zip(*d["ilp"])
            ax.plot(x, y, "o-", color="tab:blue", ms=6, zorder=3,
                    label=f"ILP mixed precision ({result.get('method')} sensitivity)")
            for (px, py), text in zip(d["ilp"], d["ilp_labels"]):
                ax.annotate(text, (px, py), textcoords="offset points", xytext=(0, -15), ha="center",
                            fontsize=7.5, color="tab:blue", zorder=5,
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        if d["uniform"]:
            x, y = zip(*d["uniform"])
            ax.plot(x, y, "s", color="tab:red", ms=7, zorder=4, label="uniform weight width")
            for (px, py), text in zip(d["uniform"], d["uniform_labels"]):
                ax.annotate(text, (px, py), textcoords="offset points", xytext=(0, -17), ha="center",
                            fontsize=8.5, color="tab:red", fontweight="bold", zorder=5,
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        ys = [p[m] for p in ok]
        if ys:
            lo, hi = min(ys), max(ys)
            pad = 0.08 * (hi - lo or 1.0)
            ax.set_ylim(lo - 2 * pad, hi + pad)
        ax.margins(x=0.06)
        ax.set_xlabel(s["xlabel"])
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
        if per_bit:
            top = ax.secondary_xaxis("top", functions=(lambda v, k=per_bit: v / k, lambda b, k=per_bit: b * k))
            top.set_xlabel("mean weight bits (parameter-weighted)", fontsize=8.5)
            top.tick_params(labelsize=8)
    samples = result.get("samples", {})
    fig.suptitle(f"{result.get('model', 'model')}: mixed-precision weight plans vs uniform widths "
                 f"(A{result.get('options', {}).get('act_bits', 8)}, {samples.get('evaluation', '?')} held-out "
                 f"inputs)", fontsize=11)
    fig.tight_layout()
    return fig


def plot(result: Mapping, path: str | os.PathLike) -> None:
    """Write ``figure(result)`` as a PNG to ``path`` (atomically: rendered in memory, then renamed into place)."""
    import io

    from .ir.serialize import atomic_write
    buf = io.BytesIO()
    figure(result).savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
