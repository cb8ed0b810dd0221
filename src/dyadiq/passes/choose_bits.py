# SPDX-License-Identifier: Apache-2.0
"""Per-layer weight bitwidths by integer linear program (HAWQ-V3): least total sensitivity within budgets.

One binary ``x[l, b]`` per layer ``l`` and candidate width ``b``:

    minimize    sum_{l,b} s[l][b] x[l,b]                          (s: ``sensitivity.sensitivities``)
    subject to  sum_b x[l,b] = 1                                  for every layer
                sum_{l,b} ceil(params_l * b / 8) x[l,b] <= size_bytes
                sum_{l,b} macs_l * b * act_bits_l x[l,b] <= bops
                sum_{l,b} latency_l[b] x[l,b] <= latency_ms       (per-layer tables, e.g. measured on the
                                                                  target by ``dyadiq.latency_table``)
                sum_{l,b} dsp_l[b] x[l,b] <= dsp, lut_l[b] ...<= lut  (FPGA MAC arrays by the HLS resource
                                                                  model, ``codegen.hls.resources``)
                x[l,b] = x[m,b]                                   when l and m share one weight tensor

solved exactly by HiGHS (``scipy.optimize.milp``). The size is the packed weight size the artifact
manifest reports (``weights`` of ``weight_bytes``: ``ceil(bits * numel / 8)`` per weight tensor, each
tensor counted once), i.e. the manifest's ``weight_bytes_detail["weights"]``, exactly; biases and
requantization constants (``quant_params``) are not included: they depend on the layer shapes, not on the
widths. A budget no plan meets is a ``PassError`` that names the smallest plan's cost.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node
from .quantize_weights import check_weight_bits, weighted_layers

CANDIDATES = (2, 3, 4, 5, 6, 8)


@dataclass(frozen=True)
class Budget:
    """Upper bounds for a plan; ``None`` = unconstrained."""

    size_bytes: int | None = None        # packed weight bytes
    bops: float | None = None            # bit operations: sum of MACs * weight bits * activation bits
    latency_ms: float | None = None      # sum of the caller's per-layer latency tables
    dsp: float | None = None             # FPGA DSPs of the MAC arrays (codegen.hls.resources)
    lut: float | None = None             # FPGA LUTs of the MAC arrays

    def __post_init__(self):
        for name in ("size_bytes", "bops", "latency_ms", "dsp", "lut"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v) or v <= 0:
                raise PassError(f"{name.replace('_', ' ')} budget must be a positive number, got {v!r}")

    def items(self) -> list[tuple[str, float]]:
        return [(k, getattr(self, k)) for k in ("size_bytes", "bops", "latency_ms", "dsp", "lut")
                if getattr(self, k) is not None]


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs at each width."""

    params: int                                  # weight elements
    macs: int = 0                                # multiply-accumulates per inference
    act_bits: int = 8                            # width of the layer's input activation (BOPs)
    weight: str = ""                             # weight tensor name: layers sharing one get one width
    latency_ms: Mapping[int, float] | None = None    # bits -> measured latency
    resources: Mapping[str, Mapping[int, float]] | None = None    # "dsp" / "lut" -> bits -> count


def weight_bytes(params: int, bits: int) -> int:
    """Packed bytes of a ``bits``-wide tensor of ``params`` elements (the manifest's count)."""
    return -(-int(params) * int(bits) // 8)


def layer_macs(g: Graph, n: Node) -> int:
    """Multiply-accumulates of a conv2d / linear / matmul node."""
    y = g.type_of(n.name)
    if n.op == "conv2d":                       # every output element takes C/groups * KH * KW products
        return y.size * int(np.prod(g.type_of(n.inputs[1]).shape[1:]))
    return y.size * int(g.type_of(n.inputs[0]).shape[-1])     # linear / matmul: the reduced axis


def layer_costs(g: Graph, *, act_bits: int = 8, latency: Mapping[str, Mapping[int, float]] | None = None,
                resources: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None) -> dict[str, LayerCost]:
    """Parameters and MACs of every conv2d/linear layer of ``g`` (names as in the graph); ``resources``:
    ``{"dsp"|"lut": {layer: {bits: count}}}`` (``codegen.hls.resources.layer_tables``)."""
    out = {}
    for n in weighted_layers(g):
        w = g.type_of(n.inputs[1])
        res = {k: dict(t[n.name]) for k, t in (resources or {}).items() if n.name in t}
        out[n.name] = LayerCost(w.size, layer_macs(g, n), act_bits, n.inputs[1],
                                dict(latency[n.name]) if latency and n.name in latency else None, res or None)
    return out


def _cost(kind: str, c: LayerCost, b: int, first: bool) -> float:
    if kind == "size_bytes":
        return float(weight_bytes(c.params, b)) if first else 0.0
    if kind == "bops":
        return float(c.macs) * b * c.act_bits
    if kind in ("dsp", "lut"):
        if not c.resources or kind not in c.resources or b not in c.resources[kind]:
            raise PassError(f"a {kind} budget needs the FPGA resource model of every layer (missing {b} bits)")
        return float(c.resources[kind][b])
    if c.latency_ms is None or b not in c.latency_ms:
        raise PassError(f"a latency budget needs latency tables for every layer and width (missing {b} bits)")
    return float(c.latency_ms[b])


def plan_stats(plan: Mapping[str, int], costs: Mapping[str, LayerCost]) -> dict:
    """Predicted packed weight bytes, BOPs, latency (when every layer has a table) and mean bits of a plan."""
    unknown = sorted(set(plan) - set(costs))
    if unknown:
        raise PassError(f"plan names layers without costs: {unknown}")
    seen: set[str] = set()
    size = params = bits_params = 0
    bops = 0.0
    lat: float | None = 0.0
    for name, b in plan.items():
        c = costs[name]
        key = c.weight or name
        if key not in seen:
            seen.add(key)
            size += weight_bytes(c.params, b)
            params += c.params
            bits_params += c.params * b
        bops += float(c.macs) * b * c.act_bits
        lat = lat + float(c.latency_ms[b]) if lat is not None and c.latency_ms and b in c.latency_ms else None
    out = {"size_bytes": int(size), "bops": bops, "params": int(params),
           "avg_bits": bits_params / params if params else 0.0}
    if lat is not None and plan:
        out["latency_ms"] = lat
    for kind in ("dsp", "lut"):
        if plan and all(costs[n].resources and kind in costs[n].resources for n in plan):
            out[kind] = float(sum(costs[n].resources[kind][b] for n, b in plan.items()))
    return out


_LABEL = {"size_bytes": ("size", "bytes"), "bops": ("BOPs", "BOPs"), "latency_ms": ("latency", "ms"),
          "dsp": ("DSP", "DSPs"), "lut": ("LUT", "LUTs")}


def _fmt(kind: str, v: float) -> str:
    return f"{v:,.0f} {_LABEL[kind][1]}" if kind != "latency_ms" else f"{v:,.3f} ms"


def choose_bits(sens: Mapping[str, Mapping[int, float]], costs: Mapping[str, LayerCost], budget: Budget,
                candidates: Sequence[int] = CANDIDATES, *, fixed: Mapping[str, int] | None = None,
                time_limit: float = 30.0) -> dict[str, int]:
    """The width per layer (keys of ``sens``) of least total sensitivity within ``budget``."""
    cands = sorted({check_weight_bits(b, " (candidate)") for b in candidates})
    if not cands:
        raise PassError("no candidate bitwidths")
    if not isinstance(budget, Budget):
        raise PassError(f"budget must be a Budget, got {type(budget).__name__}")
    layers = list(sens)
    missing = sorted(set(layers) - set(costs))
    if missing:
        raise PassError(f"no costs for layer(s) {missing}")
    fixed = dict(fixed or {})
    bad = sorted(set(fixed) - set(layers))
    if bad:
        raise PassError(f"fixed widths given for unknown layer(s) {bad}")
    if not layers:
        return {}
    # variables: (layer, width) for the widths the layer may take
    var: list[tuple[str, int]] = []
    for name in layers:
        widths = [check_weight_bits(fixed[name], f" for layer %{name}")] if name in fixed else cands
        for b in widths:
            if b not in sens[name]:
                raise PassError(f"no sensitivity for layer %{name} at {b} bits")
            s = float(sens[name][b])
            if not math.isfinite(s):
                raise PassError(f"sensitivity of layer %{name} at {b} bits is {s}")
            var.append((name, b))
    nv = len(var)
    col = {v: i for i, v in enumerate(var)}
    first: dict[str, str] = {}
    for name in layers:
        first.setdefault(costs[name].weight or name, name)
    owner = {name: first[costs[name].weight or name] for name in layers}
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    rows, cols, vals, lo, hi = [], [], [], [], []

    def row(entries: list[tuple[int, float]], lb: float, ub: float) -> None:
        r = len(lo)
        for c, v in entries:
            rows.append(r), cols.append(c), vals.append(v)
        lo.append(lb), hi.append(ub)

    for name in layers:                                  # one width per layer
        row([(col[name, b], 1.0) for (n, b) in var if n == name], 1.0, 1.0)
    for name in layers:                                  # shared weights: one width
        o = owner[name]
        if o != name:
            for b in cands:
                e = [(col[v], s) for v, s in (((name, b), 1.0), ((o, b), -1.0)) if v in col]
                if e:                                    # x[l,b] - x[o,b] = 0 (or = 0 alone if fixed)
                    row(e, 0.0, 0.0)
    cost_rows, budget_row = {}, {}
    for kind, limit in budget.items():
        coef = np.array([_cost(kind, costs[n], b, owner[n] == n) for n, b in var])
        cost_rows[kind], budget_row[kind] = coef, len(lo)
        row([(i, float(v)) for i, v in enumerate(coef) if v], -np.inf, float(limit))
    A = coo_matrix((vals, (rows, cols)), shape=(len(lo), nv)).tocsr()
    cons = LinearConstraint(A, np.array(lo), np.array(hi))
    # each layer takes exactly one width, so subtracting its least sensitivity changes no plan's rank;
    # it leaves the coefficients that matter (the excess over each layer's best) at full relative precision
    s = np.array([float(sens[n][b]) for n, b in var])
    least = {n: min(float(sens[n][b]) for m, b in var if m == n) for n in layers}
    s = s - np.array([least[n] for n, _ in var])
    c = s / (float(s.max()) or 1.0)
    _check_each_budget(budget, cost_rows, var, layers, fixed)
    with _quiet_stdout():
        res = milp(c, constraints=cons, integrality=np.ones(nv), bounds=Bounds(0, 1),
                   options={"time_limit": float(time_limit), "mip_rel_gap": 0.0, "disp": False})
    if res.x is None:
        if res.status == 2:
            raise PassError(_joint_message(budget, cost_rows, A, lo, hi, budget_row))
        raise PassError(f"the bit allocation program was not solved: {res.message}")
    x = np.rint(res.x).astype(int)
    plan = {n: b for (n, b), on in zip(var, x) if on}
    return _polish(plan, sens, var, cost_rows, budget, owner)


def _polish(plan: dict[str, int], sens, var, cost_rows, budget: Budget, owner) -> dict[str, int]:
    """Exact 1-opt moves after the solve: HiGHS stops within an absolute gap (1e-6 of the largest
    sensitivity), so differences below it (e.g. 6 vs 8 bits of an insensitive layer when budget is left)
    are settled here, in float64, never breaking a budget."""
    col = {v: i for i, v in enumerate(var)}
    groups: dict[str, list[str]] = {}
    for name in plan:
        groups.setdefault(owner[name], []).append(name)
    limits = dict(budget.items())
    used = {k: sum(cost_rows[k][col[n, b]] for n, b in plan.items()) for k in limits}
    for _ in range(64 * len(groups)):
        best = None
        for members in groups.values():
            cur = plan[members[0]]
            for b in {bb for (n, bb) in var if n == members[0]} - {cur}:
                if any((m, b) not in col for m in members):
                    continue
                ds = sum(float(sens[m][b]) - float(sens[m][cur]) for m in members)
                dc = {k: sum(cost_rows[k][col[m, b]] - cost_rows[k][col[m, cur]] for m in members) for k in limits}
                if ds < 0 and all(used[k] + dc[k] <= limits[k] for k in limits) and (best is None or ds < best[0]):
                    best = (ds, members, b, dc)
        if best is None:
            break
        _, members, b, dc = best
        for m in members:
            plan[m] = b
        for k in limits:
            used[k] += dc[k]
    return plan


@contextlib.contextmanager
def _quiet_stdout():
    """Silence file descriptor 1 around a solve: the HiGHS bundled with scipy prints a debug line
    (``HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();``) from C for some
    programs even with ``disp=False``."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _check_each_budget(budget: Budget, cost_rows, var, layers, fixed) -> None:
    """PassError when one budget alone is below its cheapest plan (each layer at its cheapest width)."""
    for kind, limit in budget.items():
        coef = cost_rows[kind]
        best = 0.0
        for name in layers:
            best += min(coef[i] for i, (n, _) in enumerate(var) if n == name)
        if best > limit * (1 + 1e-12):
            label, unit = _LABEL[kind]
            low = min(b for _, b in var)
            where = "each layer at its cheapest width" if kind in ("latency_ms", "dsp", "lut") else \
                (f"all layers at {low} bits" if not fixed else f"all free layers at {low} bits")
            raise PassError(f"{label} budget {_fmt(kind, limit)} is infeasible: the smallest plan needs "
                            f"{_fmt(kind, best)} ({where})")


def _joint_message(budget: Budget, cost_rows, A, lo, hi, budget_row) -> str:
    """Budgets each feasible alone but not together: the least of the first one within the others."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    kind = budget.items()[0][0]
    keep = [r for r in range(len(lo)) if r != budget_row[kind]]
    sub = LinearConstraint(A[keep], np.array(lo)[keep], np.array(hi)[keep])
    nv = A.shape[1]
    with _quiet_stdout():
        res = milp(cost_rows[kind], constraints=sub, integrality=np.ones(nv), bounds=Bounds(0, 1),
                   options={"time_limit": 30.0, "disp": False})
    label, _ = _LABEL[kind]
    others = " and ".join(f"{_LABEL[k][0]} {_fmt(k, v)}" for k, v in budget.items() if k != kind)
    if res.x is None:
        return f"the budgets ({', '.join(f'{_LABEL[k][0]} {_fmt(k, v)}' for k, v in budget.items())}) are infeasible"
    return (f"{label} budget {_fmt(kind, getattr(budget, kind))} is infeasible together with the {others} "
            f"budget: the smallest plan within the other budgets needs {_fmt(kind, res.fun)}")


def plan_bits(g: Graph, calib, budget: Budget, *, options=None, method: str = "hessian",
              candidates: Sequence[int] = CANDIDATES, sens_options=None, progress=None,
              latency: Mapping[str, Mapping[int, float]] | Callable[[Graph, tuple[int, ...]], Mapping] | None = None,
              resources: Callable[[Graph, tuple[int, ...]], Mapping] | None = None
              ) -> tuple[dict[str, int], dict]:
    """``--weight-bits auto``: sensitivities of ``g`` as ``quantize(options)`` will see it, then the ILP.

    Returns ``(plan, info)``; pass ``weight_bits=plan`` to ``quantize`` with the same ``options``. ``info``
    holds the sensitivities, the plan's predicted size / BOPs / latency and the solve time (JSON-ready).

    - ``latency``: per-layer tables (layer -> bits -> ms), or a function ``(prepared graph, widths) ->
      tables`` such as ``latency_table.measure``, called before the sensitivities.
    - ``resources``: a function ``(prepared graph, widths) -> {"dsp"|"lut": {layer: {bits: count}}}``
      (``codegen.hls.resources.layer_tables``), for the ``dsp`` / ``lut`` budgets.
    - ``first_last_bits`` in ``options`` fixes the first and last layer at that width, as ``quantize`` will.
    - Budgets that no plan meets raise ``PassError`` before the (slow) sensitivities are computed.
    - The predicted ``size_bytes`` is the packed weight size that the compiled artifact's manifest
      reports as ``weight_bytes_detail["weights"]``, exactly (``weight_bytes``; each tensor once).
    """
    from .pipeline import make_options
    from .sensitivity import make_sensitivity_options, prepare_graph, sensitivities
    opts = make_options(options)
    prep = prepare_graph(g, equalize=opts.equalize, per_channel=opts.per_channel)
    names = [n.name for n in weighted_layers(prep)]
    flb = opts.first_last_bits             # quantize() puts the first and last layer at this width
    fixed = {names[0]: flb, names[-1]: flb} if flb is not None and names else {}
    widths = tuple(sorted({*candidates, *fixed.values()}))
    t = time.perf_counter()
    tables = latency(prep, widths) if callable(latency) else latency
    t_lat = time.perf_counter() - t
    costs = layer_costs(prep, act_bits=opts.act_bits, latency=tables,
                        resources=resources(prep, widths) if resources is not None else None)
    # the budgets alone (all sensitivities equal): infeasible ones fail here, before the sensitivities
    choose_bits({n: {b: 0.0 for b in widths} for n in names}, costs, budget, candidates, fixed=fixed)
    sopts = make_sensitivity_options(sens_options, method=method, candidates=widths,
                                     per_channel=opts.per_channel, equalize=opts.equalize,
                                     **({} if sens_options is not None else {"seed": opts.seed}))
    t = time.perf_counter()
    sens = sensitivities(prep, calib, options=sopts, progress=progress, prepared=True)
    t_sens = time.perf_counter() - t
    t = time.perf_counter()
    plan = choose_bits(sens, costs, budget, candidates, fixed=fixed)
    info = {"method": sopts.method, "budget": dict(budget.items()), "plan": dict(plan),
            "predicted": plan_stats(plan, costs), "sensitivity": {k: {str(b): v for b, v in s.items()}
                                                                  for k, s in sens.items()},
            "timings_s": {"sensitivity": round(t_sens, 3), "solve": round(time.perf_counter() - t, 4)}}
    if tables is not None:
        info["latency_ms"] = {k: {str(b): float(v) for b, v in s.items()} for k, s in tables.items()}
        info["timings_s"]["latency_table"] = round(t_lat, 3)
    return plan, info
