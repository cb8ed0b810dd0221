# SPDX-License-Identifier: Apache-2.0
"""Cross-layer equalization (DFQ, Nagel et al. 2019) with clamped scales and high-bias absorption.

Pairs are chains ``layer1 -> act* -> layer2`` with both layers conv2d (any groups, depthwise included) or
both linear, constant unquantized weights, each act one of relu / clip / minimum(., c) / maximum(., c)
(c scalar or per-channel), and every value between the layers read by exactly one node and not a graph
output: a layer feeding a residual ``add``, a branch or an output is never scaled. Output channel i of
layer1 is divided by s_i, input channel i of layer2 multiplied by s_i:

    W1[i] /= s_i,  b1[i] /= s_i,  W2[:, i] *= s_i,   s_i = sqrt(r1_i * r2_i) / r2_i = sqrt(r1_i / r2_i)

with r1_i = max|W1[i]| and r2_i = max|W2[:, i]| (grouped conv: input channel i's slice of its group; a
depthwise conv's input and output channel coincide, so it is layer2 of conv -> dw and layer1 of
dw -> conv). One step makes both ranges sqrt(r1_i r2_i); all pairs are swept in order until every
|s_i - 1| < 1e-5 or ``iterations`` sweeps have run.

The chain between the layers sees layer1's output divided by s per channel. relu(x/s) = relu(x)/s; a
clamp is exact only with per-channel bounds: clip(x/s, lo/s, hi/s) = clip(x, lo, hi)/s. The IR clip has
scalar bounds, so the chain of a scaled pair is rewritten as one per-channel clamp: ``relu`` (lo = 0) or
``maximum(., lo/s)``, then ``minimum(., hi/s)``, constants shaped [C, 1, 1] (conv) or [C] (linear).
ReLU6 = clip(0, 6) becomes ``minimum(relu(x), 6/s)``: exact, and integerize fuses it into one
per-channel integer clamp.

``clamp_scales`` (default) uses max(s_i, 1): channels are only scaled down, so no activation range ever
grows. Unclamped CLE widens EfficientNet-Lite0's ReLU6 outputs from 6 to 35-316, which ruins per-tensor
activation quantization (findings.md).

High-bias absorption (``absorb_bias`` and ``act_stats``: layer1 output name -> per-channel (mean, std) of
that pre-activation value, e.g. from calibration data; skipped without stats): for a chain clamping at
[lo, hi] (relu: lo = 0; needs a finite lo), c_i = clip(m_i - 3 d_i - lo_i, 0, hi_i - lo_i) in the scaled
space is moved across: b1 -= c, hi -= c, b2 += sum of W2[:, i] (all taps) * c_i. Exact wherever
x >= lo + c (99.9% of a Gaussian channel), up to layer2's zero padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node, verify
from ..ir.ops.registry import is_weighted
from .rewrite import bias_hint, fresh_name, splice, use_counts

TOL = 1e-5
Stats = Mapping[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Pair:
    l1: Node
    acts: tuple[Node, ...]
    l2: Node
    lo: np.ndarray          # the chain as one per-channel clamp [lo, hi] (unscaled, float64)
    hi: np.ndarray


def equalize(g: Graph, *, clamp_scales: bool = True, iterations: int = 20, absorb_bias: bool = True,
             act_stats: Stats | None = None) -> Graph:
    """Cross-layer equalization (and high-bias absorption) of conv/linear pairs; ``g`` if nothing changes."""
    if not isinstance(iterations, int) or iterations < 0:
        raise PassError(f"equalize: iterations must be a non-negative int, got {iterations!r}")
    pairs = _find_pairs(g)
    if not pairs:
        return g
    layers = {n.name: n for p in pairs for n in (p.l1, p.l2)}
    W = {k: g.const(n.inputs[1]).astype(np.float64) for k, n in layers.items()}
    B = {k: g.const(n.inputs[2]).astype(np.float64) if len(n.inputs) == 3 else np.zeros(W[k].shape[0])
         for k, n in layers.items()}
    S = [np.ones(p.lo.shape) for p in pairs]
    for _ in range(iterations):
        moved = False
        for k, p in enumerate(pairs):
            r1, r2 = _out_range(W[p.l1.name]), _in_range(W[p.l2.name], _groups(p.l2))
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / r2), 1.0)
            s = np.maximum(s, 1.0) if clamp_scales else s
            s = np.where(np.abs(s - 1.0) < TOL, 1.0, s)
            if np.any(s != 1.0):
                moved = True
                W[p.l1.name] /= s.reshape((-1,) + (1,) * (W[p.l1.name].ndim - 1))
                B[p.l1.name] /= s
                W[p.l2.name] = _scale_in(W[p.l2.name], _groups(p.l2), s)
                S[k] *= s
        if not moved:
            break
    bounds = {k: (p.lo / S[k], p.hi / S[k]) for k, p in enumerate(pairs) if np.any(S[k] != 1.0)}
    if absorb_bias and act_stats:
        for k, p in enumerate(pairs):
            c = _absorbable(p, S[k], act_stats)
            if c is not None:
                B[p.l1.name] -= c
                B[p.l2.name] += _in_contract(W[p.l2.name], _groups(p.l2), c)
                bounds[k] = (p.lo / S[k], p.hi / S[k] - c)
    if not bounds:
        return g
    return verify(_rebuild(g, pairs, bounds, layers, W, B))


# ---- finding pairs ------------------------------------------------------------------------------
def _find_pairs(g: Graph) -> list[_Pair]:
    uses, cons = use_counts(g), g.consumers()
    pairs = []
    for l1 in g.nodes:
        if not _layer_ok(g, l1, uses):
            continue
        axis = 1 if l1.op == "conv2d" else -1
        c = g.type_of(l1.name).shape[axis]
        lo, hi, acts, v = np.full(c, -np.inf), np.full(c, np.inf), [], l1.name
        while uses.get(v) == 1 and v not in g.outputs and g.quant_of(v) is None:
            n = cons[v][0]
            if n.op == l1.op and n.inputs[0] == v and _layer_ok(g, n, uses):
                pairs.append(_Pair(l1, tuple(acts), n, lo, hi))
                break
            ab = clamp_bounds(g, n, v, c, axis)
            if ab is None:
                break
            lo, hi = np.clip(lo, *ab), np.clip(hi, *ab)     # clip(clip(x, lo, hi), a, b)
            acts.append(n)
            v = n.name
    return pairs


def _layer_ok(g: Graph, n: Node, uses: dict[str, int]) -> bool:
    """A conv2d/linear whose weight (and bias) are unquantized float constants read only by it."""
    if not is_weighted(n.op) or len(n.inputs) < 2:
        return False
    return all(g.is_const(i) and g.quant_of(i) is None and uses.get(i) == 1 and g.const(i).dtype.kind == "f"
               for i in n.inputs[1:])


def clamp_bounds(g: Graph, n: Node, v: str, c: int, axis: int):
    """Per-channel (lo, hi) when node ``n`` clamps ``v`` (``c`` channels on ``axis``), else None."""
    if g.type_of(n.name) != g.type_of(v):
        return None
    if n.op == "relu":
        return 0.0, np.inf
    if n.op == "clip":
        return float(n.attr("min", -np.inf)), float(n.attr("max", np.inf))
    if n.op not in ("minimum", "maximum") or len(n.inputs) != 2 or v not in n.inputs:
        return None
    other = n.inputs[1] if n.inputs[0] == v else n.inputs[0]
    if other == v or not g.is_const(other) or g.quant_of(other) is not None:
        return None
    b = g.const(other)
    t = g.type_of(v)
    shape = (1,) * (t.rank - b.ndim) + b.shape
    ax = axis % t.rank
    if b.ndim > t.rank or any(d != 1 for i, d in enumerate(shape) if i != ax):
        return None
    b = np.broadcast_to(b.reshape(-1).astype(np.float64), (c,))
    return (-np.inf, b) if n.op == "minimum" else (b, np.inf)


# ---- weight arithmetic (a linear weight [O, I] is a 1x1 conv with one group) ------------------------
def _groups(n: Node) -> int:
    return n.attr("groups", 1) if n.op == "conv2d" else 1


def _by_group(w: np.ndarray, groups: int) -> np.ndarray:
    """[O, Cg, ...] -> [groups, O/groups, Cg, taps]."""
    return w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)


def _out_range(w: np.ndarray) -> np.ndarray:
    return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)


def _in_range(w: np.ndarray, groups: int) -> np.ndarray:
    return np.abs(_by_group(w, groups)).max(axis=(1, 3)).reshape(-1)


def _scale_in(w: np.ndarray, groups: int, s: np.ndarray) -> np.ndarray:
    return (_by_group(w, groups) * s.reshape(groups, 1, -1, 1)).reshape(w.shape)


def _in_contract(w: np.ndarray, groups: int, c: np.ndarray) -> np.ndarray:
    """The output shift of the layer for a constant input c per input channel (all taps)."""
    return np.einsum("gock,gc->go", _by_group(w, groups), c.reshape(groups, -1)).reshape(-1)


def _absorbable(p: _Pair, s: np.ndarray, stats: Stats) -> np.ndarray | None:
    """The per-channel shift c to absorb for pair ``p`` (scaled space), or None."""
    st = stats.get(p.l1.name)
    if st is None or not np.all(np.isfinite(p.lo)):
        return None
    mean, std = (np.asarray(a, np.float64).reshape(-1) for a in st)
    if mean.shape != s.shape or std.shape != s.shape:
        raise PassError(f"equalize: act_stats[{p.l1.name!r}] must hold {s.size} means and stds", node=p.l1)
    lo, hi = p.lo / s, p.hi / s
    c = np.clip((mean - 3.0 * std) / s - lo, 0.0, hi - lo)
    return c if np.any(c > 0) else None


# ---- the new graph ------------------------------------------------------------------------------
def _rebuild(g: Graph, pairs: list[_Pair], bounds: dict, layers: dict, W: dict, B: dict) -> Graph:
    consts: dict[str, np.ndarray] = {}
    replace: dict[str, list[Node]] = {}
    redirect: dict[str, str] = {}
    touched = {n.name for k in bounds for n in (pairs[k].l1, pairs[k].l2)}
    for name in sorted(touched):
        n = layers[name]
        dt = g.const(n.inputs[1]).dtype
        consts[n.inputs[1]] = W[name].astype(dt)
        if len(n.inputs) == 3:
            consts[n.inputs[2]] = B[name].astype(dt)
        elif np.any(B[name] != 0):
            b = fresh_name(g, bias_hint(n), consts)
            consts[b] = B[name].astype(dt)
            replace[name] = [Node(n.op, n.inputs + (b,), n.outputs, n.attrs)]
    for k, (lo, hi) in bounds.items():
        p = pairs[k]
        if not p.acts:
            continue
        nodes = _clamp_nodes(g, p, lo, hi, consts)
        replace.update({a.name: [] for a in p.acts})
        if nodes:
            replace[p.acts[0].name] = nodes
        else:
            redirect[p.acts[-1].name] = p.l1.name
    return splice(g, replace, constants=consts, redirect=redirect)


def _clamp_nodes(g: Graph, p: _Pair, lo: np.ndarray, hi: np.ndarray, consts: dict) -> list[Node]:
    """``relu | maximum(., lo)`` then ``minimum(., hi)`` from layer1's output to the chain's last value."""
    t = g.type_of(p.l1.name)
    shape = (-1, 1, 1) if p.l1.op == "conv2d" else (-1,)
    final = p.acts[-1].name
    steps: list[tuple[str, np.ndarray | None]] = []
    if np.all(lo == 0.0):
        steps.append(("relu", None))
    elif np.any(np.isfinite(lo)):
        steps.append(("maximum", lo))
    if np.any(np.isfinite(hi)):
        steps.append(("minimum", hi))
    nodes, x, taken = [], p.l1.name, set(consts)
    for k, (op, bound) in enumerate(steps):
        out = final if k == len(steps) - 1 else fresh_name(g, f"{final}.{op}", taken)
        taken.add(out)
        ins = (x,)
        if bound is not None:
            c = fresh_name(g, f"{final}.{'hi' if op == 'minimum' else 'lo'}", taken)
            taken.add(c)
            consts[c] = bound.reshape(shape).astype(t.np_dtype)
            ins += (c,)
        nodes.append(Node.make(op, ins, out))
        x = out
    return nodes
