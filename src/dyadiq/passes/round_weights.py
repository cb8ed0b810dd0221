# SPDX-License-Identifier: Apache-2.0
"""Weight rounding by layer-wise reconstruction: choose each quantized weight's integer code so that the
layer output on calibration data moves as little as possible (GPTQ, optionally AdaRound or exact).

Every ``conv2d`` / ``linear`` whose constant weight ``W`` carries a QuantType keeps that QuantType (its
scales are fixed); only the codes ``q`` change, chosen to minimize

    ||W X - s q X||^2 = sum_r d_r^T H d_r,     H = sum over calibration columns x of x x^T,

``X`` the layer's input columns: im2col patches of a conv's (zero-padded) input, per group ([groups,
C/groups*KH*KW, positions]; a depthwise conv is one tiny problem per channel, solved together), rows of
a linear's input. ``H`` is accumulated batch by batch in float64, so memory does not grow with the
calibration set. Solvers and their math: ``gptq.py``. Row by row the result is the better of the
solver's codes and round-to-nearest on this objective, so no output channel gets worse than
round-to-nearest on the calibration data. Codes lie in ``[-(2^(b-1)-1), 2^(b-1)-1]`` for symmetric
signed weights (``qmin`` too when round-to-nearest already uses it, e.g. an imported model), in
``[qmin - zp, qmax - zp]`` otherwise. The weights are replaced by ``dequantize(q)``: on their grid.

Inputs ``X`` come from one walk over the graph in topological order holding every calibration batch
(memory: the calibration set times the widest live activations): when the walk reaches a layer it
solves that layer, and with ``sequential`` the layer then runs with its rounded weights, so later layers
see the quantized-weight model (float activations), as in GPTQ; otherwise the float model. Nodes that
feed no quantized layer are not run. A weight shared by several layers is rounded at its first use,
from that layer's inputs. Round-to-nearest of a weight requires its float values: run
``quantize_weights(..., snap=False)`` first (snapped weights are already on the grid and stay there).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node, verify
from ..ir.numerics import dequantize, quantize
from ..ir.ops import op_def
from ..ir.ops.window import hw_attrs, out_size, pad_nchw, windows
from . import gptq as solvers
from .calibrate import Progress, prepare_calib

METHODS = ("gptq", "adaround", "exhaustive", "nearest")


def round_weights(g: Graph, calib, *, method: str = "gptq", damp: float = 0.01, block: int = 128,
                  sequential: bool = True, act_order: bool = False, progress: Progress | None = None) -> Graph:
    """Choose the integer codes of quantized conv/linear weights to minimize each layer's output error."""
    if method not in METHODS:
        raise PassError(f"round_weights: unknown method {method!r} (choose from {', '.join(METHODS)})")
    if not (isinstance(damp, (int, float)) and 0 <= damp < np.inf) or isinstance(damp, bool):
        raise PassError(f"round_weights: damp must be a non-negative number, got {damp!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise PassError(f"round_weights: block must be a positive int, got {block!r}")
    layers = _rounded_layers(g)
    if not layers:
        return g
    cs = prepare_calib(g, calib)
    solve = _solver(method, float(damp), int(block), bool(act_order))
    new = _walk(g, cs.batches(), layers, solve, bool(sequential), progress)
    changed = {k: w for k, w in new.items() if not np.array_equal(w, g.const(k))}
    return verify(g.replace(constants={**g.constants, **changed})) if changed else g


def _rounded_layers(g: Graph) -> dict[str, Node]:
    """First conv2d/linear reading each quantized float constant weight: node name -> node."""
    out: dict[str, Node] = {}
    seen: set[str] = set()
    for n in g.nodes:
        if n.op not in ("conv2d", "linear") or len(n.inputs) < 2:
            continue
        w = n.inputs[1]
        q = g.quant_of(w)
        if w in seen or not g.is_const(w) or q is None or g.const(w).dtype.kind != "f":
            continue
        if q.axis not in (None, 0):
            raise PassError(f"weight %{w} is quantized along axis {q.axis}; round_weights needs per-tensor "
                            "or per-output-channel (axis 0) scales", node=n)
        seen.add(w)
        out[n.name] = n
    return out


def _solver(method: str, damp: float, block: int, act_order: bool) -> Callable:
    if method == "gptq":
        return lambda W, H, grid: solvers.gptq(W, H, grid, damp=damp, block=block, act_order=act_order)
    if method == "adaround":
        return solvers.adaround
    if method == "exhaustive":
        return solvers.exhaustive
    return lambda W, H, grid: solvers.nearest(W, grid)


# ---- one layer as G problems of R rows by K columns -------------------------------------------------
def _groups(n: Node) -> int:
    return int(n.attr("groups", 1)) if n.op == "conv2d" else 1


def columns(n: Node, x: np.ndarray, wshape: tuple[int, ...]) -> np.ndarray:
    """The layer's input columns ``[G, K, M]`` (K in the weight's flattening order, M = all positions)."""
    if n.op == "linear":
        return x.reshape(-1, x.shape[-1]).T[None]
    G = _groups(n)
    _, s, p, d = hw_attrs(n.attr_dict)
    N, C, _, _ = x.shape
    kh, kw = wshape[2:]
    oh = out_size(x.shape[2], kh, s[0], p[0], p[2], d[0])
    ow = out_size(x.shape[3], kw, s[1], p[1], p[3], d[1])
    if (kh, kw) == (1, 1) and not any(p):
        xs = x[:, :, ::s[0], ::s[1]][:, :, :oh, :ow]
        return xs.reshape(N, G, C // G, oh * ow).transpose(1, 2, 0, 3).reshape(G, C // G, N * oh * ow)
    win = windows(pad_nchw(x, p), (kh, kw), s, d, (oh, ow)).reshape(N, G, C // G, oh, ow, kh, kw)
    return win.transpose(1, 2, 5, 6, 0, 3, 4).reshape(G, C // G * kh * kw, N * oh * ow)


def apply(n: Node, w: np.ndarray, cols: np.ndarray, x: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The layer's output from its columns (same value as the op's kernel, up to float rounding)."""
    O = w.shape[0]
    y = w.reshape(cols.shape[0], O // cols.shape[0], -1).astype(x.dtype) @ cols      # [G, O/G, M]
    if n.op == "linear":
        y = y[0].T.reshape(x.shape[:-1] + (O,))
        return y + b if b is not None else y
    N = x.shape[0]
    y = y.reshape(O, N, -1).swapaxes(0, 1)
    y = y.reshape((N, O) + _out_hw(n, x.shape, w.shape))
    return y + b.reshape(1, -1, 1, 1) if b is not None else y


def _out_hw(n: Node, xshape, wshape) -> tuple[int, int]:
    _, s, p, d = hw_attrs(n.attr_dict)
    return (out_size(xshape[2], wshape[2], s[0], p[0], p[2], d[0]),
            out_size(xshape[3], wshape[3], s[1], p[1], p[3], d[1]))


def grid_of(g: Graph, n: Node, codes_near: np.ndarray) -> solvers.Grid:
    """Per-row scale and code bounds ``[G, R, 1]`` of the layer's weight QuantType."""
    q = g.quant_of(n.inputs[1])
    O = g.type_of(n.inputs[1]).shape[0]
    G = _groups(n)
    scale = np.broadcast_to(np.asarray(q.scale, np.float64), (O,))
    zp = np.broadcast_to(np.asarray(q.zero_point, np.int64), (O,))
    qmin, qmax = q.qrange
    lo, hi = qmin - zp, qmax - zp
    if q.signed:        # symmetric range, unless round-to-nearest already uses qmin (imported weights)
        uses_min = (codes_near.reshape(O, -1) == qmin).any(axis=1)
        lo = np.where((zp == 0) & ~uses_min, qmin + 1, lo)
    return solvers.Grid(*(a.reshape(G, O // G, 1).astype(dt) for a, dt in
                          ((scale, np.float64), (lo, np.float64), (hi, np.float64))))


def solve_layer(g: Graph, n: Node, H: np.ndarray, solve: Callable) -> np.ndarray:
    """Rounded (on-grid) weight array of layer ``n`` given its Gram matrices ``H`` [G, K, K]."""
    name = n.inputs[1]
    w, q = g.const(name), g.quant_of(name)
    G, O = _groups(n), w.shape[0]
    W = w.astype(np.float64).reshape(G, O // G, -1)
    near_codes = quantize(w, q) - q.zp_array(w.ndim)
    grid = grid_of(g, n, near_codes)
    Qn = solvers.nearest(W, grid)
    Q = solve(W, H, grid)
    Q = np.clip(Q, grid.lo, grid.hi).astype(np.int64)
    worse = solvers.objective(W, Q, H, grid) > solvers.objective(W, Qn, H, grid)
    Q = np.where(worse[..., None], Qn, Q).reshape(w.shape)
    return dequantize(Q + q.zp_array(w.ndim), q, w.dtype)


# ---- the walk ----------------------------------------------------------------------------------------
def _walk(g: Graph, batches, layers: dict[str, Node], solve: Callable, sequential: bool,
          progress: Progress | None) -> dict[str, np.ndarray]:
    """Rounded weight arrays by constant name (see module docstring)."""
    needed = _ancestors(g, layers)
    last = {}
    for i, n in enumerate(g.nodes):
        if n.name in needed:
            for v in n.inputs:
                last[v] = i
    consts = dict(g.constants)
    envs = [dict(b) for b in batches]
    new: dict[str, np.ndarray] = {}
    done = 0
    for i, n in enumerate(g.nodes):
        if n.name not in needed:
            continue
        wname = n.inputs[1] if n.name in layers else None
        if wname is not None:
            H = None
            for env in envs:
                c = columns(n, env[n.inputs[0]], consts[wname].shape).astype(np.float64)
                Hb = c @ c.swapaxes(1, 2)
                H = Hb if H is None else H + Hb
            try:
                new[wname] = solve_layer(g, n, H, solve)
            except (np.linalg.LinAlgError, ValueError) as e:
                raise PassError(f"round_weights: {e}", node=n) from None
            if sequential:
                consts[wname] = new[wname]
            done += 1
            if progress is not None:
                progress("round_weights", done, len(layers))
            if done == len(layers):
                break
        for env in envs:
            args = [env[v] if v in env else consts[v] for v in n.inputs]
            if n.op in ("conv2d", "linear") and n.inputs[1] in consts:
                outs = [apply(n, args[1], columns(n, args[0], args[1].shape), args[0],
                              args[2] if len(args) > 2 else None).astype(args[0].dtype)]
            else:
                outs = op_def(n.op).kernel(args, n.attr_dict)
            env.update(zip(n.outputs, outs))
            for v in n.inputs:
                if last.get(v) == i:
                    env.pop(v, None)
    return new


def _ancestors(g: Graph, layers: dict[str, Node]) -> set[str]:
    """Names of the nodes that must run to give every layer its input (the layers included)."""
    prod = g.producers()
    todo = [n.inputs[0] for n in layers.values()] + list(layers)
    seen: set[str] = set()
    while todo:
        v = todo.pop()
        p = prod.get(v)
        if p is None or p.name in seen:
            continue
        seen.add(p.name)
        todo.extend(p.inputs)
    return seen
