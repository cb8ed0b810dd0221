# SPDX-License-Identifier: Apache-2.0
"""Weight rounding by layer-wise reconstruction: choose each quantized weight's integer code so that the
layer output on calibration data moves as little as possible (GPTQ; also AdaRound, exact, nearest).

Every ``conv2d`` / ``linear`` whose constant float weight ``W`` carries a QuantType keeps that QuantType
(its scales are fixed); only the codes ``q`` change, chosen to minimize

    ||W X - Wq X||^2 = sum_r d_r^T H d_r,     d_r = w_r - s_r q_r,     H = sum over columns x of x x^T,

``X`` the layer's input columns: im2col patches of a conv's (zero-padded) input, per group ([groups,
C/groups*KH*KW, positions]; a depthwise conv is one tiny problem per channel, all solved together), rows
of a linear's input. ``H`` is summed batch by batch (float64), so it does not grow with the calibration
set. Solvers and their math: ``gptq.py``. Row by row the result is the better of the solver's codes and
round-to-nearest on the objective, so no output channel gets worse than round-to-nearest on the
calibration data. Codes lie in ``[-(2^(b-1)-1), 2^(b-1)-1]`` for symmetric signed weights (``qmin``
too where round-to-nearest already uses it: imported weights), in ``[qmin - zp, qmax - zp]`` otherwise.
The weights become ``dequantize(q)``, on their grid.

- ``sequential`` (default): one walk over the graph in topological order with every calibration batch
  (memory: the calibration set times the live activations) solves each layer when it reaches it and
  then runs it with its rounded weights, so later layers see the quantized-weight model's inputs ``Xq``
  (float activations), as in GPTQ. Otherwise every layer sees the float model's inputs.
- ``compensate`` (sequential only; GPTAQ-style "asymmetric" reconstruction): minimize
  ``||W X - Wq Xq||^2`` instead, ``X`` from the float model (walked alongside), so a layer also undoes
  the error of the layers before it: rounds the ridge target ``W* = W (C^T + lam I)(H + lam I)^-1``,
  ``H = Xq Xq^T``, ``C = Xq X^T``, ``lam = damp * mean(diag H)`` (see ``solve_layer``).
- ``correct_bias``: also choose the bias: the codes minimize the error left after the mean output shift
  is removed (``H`` and ``C`` centered), and ``b -= Wq mean(Xq) - W mean(X)`` per output channel (a bias
  constant is created when the layer has none or shares it; layers with a computed bias are not
  corrected). Rounding discards the float weights that ``bias_correct`` needs, so use this instead.
- ``quantized_acts`` (sequential only): the walk also fake-quantizes every activation that carries a
  QuantType (as simulated mode does), so ``Xq`` is the fully quantized model's input and, with
  ``compensate`` / ``correct_bias``, each layer also absorbs the mean shift and the correlated part of
  the activation rounding before it (BRECQ/AdaRound-style inputs).
- ``float_mean`` (with ``correct_bias``, sequential only): the shift is measured against the float model's
  mean output, ``b -= Wq mean(Xq) - W mean(X)`` with ``X`` from the float model walked alongside (as
  ``compensate`` does, which implies it), instead of ``W mean(Xq)``; the codes still round ``W``. With
  ``quantized_acts`` each layer then also absorbs the mean output shift of every rounding before it
  (weights and activations): ``bias_correct(..., quantized_acts=True)`` is this walk with round-to-nearest.
  With ``quantized_acts`` too, the walk adds each bias on the integer code's grid ``s_x s_w`` (as simulated
  mode does), so the mean it matches is the integer code's.

Held-out validation: a Hessian estimated from few columns lets the solver fit the calibration data
rather than the layer (EfficientNet-Lite0's 7x7 projections: 64 crops give 3136 columns for 1152 inputs).
With ``validate`` (default), where a layer has fewer than ``VALIDATE_BELOW`` columns per input and at
least two batches, the solver is also run on the even and on the odd batches alone and scored on the
other half; unless its codes beat round-to-nearest there (summed over both folds), the layer keeps
round-to-nearest (with its bias correction). EfficientNet-Lite0 W8A8 per-channel GPTQ+BC, 256 eval crops:
23.7 -> 25.6 dB.

Nodes that feed no quantized layer are not run. A weight shared by several layers is rounded at its
first use, from that layer's inputs. Round-to-nearest needs the float values: quantize with
``quantize_weights(..., snap=False)`` first (weights already on the grid stay as they are).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node, verify
from ..ir.numerics import dequantize, fake_quant, quantize
from ..ir.ops import op_def
from ..ir.ops.registry import is_weighted
from ..ir.ops.window import hw_attrs, out_size, pad_nchw, windows
from . import gptq as solvers
from .calibrate import Progress, prepare_calib
from .rewrite import bias_hint, fresh_name, splice, use_counts

METHODS = ("gptq", "adaround", "exhaustive", "nearest")
VALIDATE_BELOW = 32        # held-out check where a layer has fewer calibration columns per Hessian row


def round_weights(g: Graph, calib, *, method: str = "gptq", damp: float = 0.01, block: int = 128,
                  sequential: bool = True, compensate: bool = False, act_order: bool = False,
                  correct_bias: bool = False, quantized_acts: bool = False, float_mean: bool = False,
                  validate: bool = True, progress: Progress | None = None, report: dict | None = None) -> Graph:
    """Choose the integer codes of quantized conv/linear weights to minimize each layer's output error.
    ``report`` (a dict, optional) receives ``"nearest"``: the layers held-out validation left at
    round-to-nearest."""
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
    if compensate and not sequential:
        raise PassError("round_weights: compensate needs sequential=True (it fits the float model's outputs "
                        "from the quantized-weight model's inputs)")
    if quantized_acts and not sequential:
        raise PassError("round_weights: quantized_acts needs sequential=True")
    if float_mean and not sequential:
        raise PassError("round_weights: float_mean needs sequential=True")
    new, shifts, nearest = _walk(g, cs.batches(), layers, solve, sequential=bool(sequential),
                                 compensate=bool(compensate), correct_bias=bool(correct_bias), damp=float(damp),
                                 quantized_acts=bool(quantized_acts), float_mean=bool(float_mean),
                                 hessian=method != "nearest" or bool(compensate), validate=bool(validate),
                                 progress=progress)
    if report is not None:
        report["nearest"] = nearest
    changed = {k: w for k, w in new.items() if not np.array_equal(w, g.const(k))}
    shifts = {k: d for k, d in shifts.items() if np.any(d != 0)}
    if not changed and not shifts:
        return g
    return verify(_with_biases(g.replace(constants={**g.constants, **changed}), layers, shifts))


def _with_biases(g: Graph, layers: dict[str, Node], shifts: dict[str, np.ndarray]) -> Graph:
    """Subtract ``shifts[layer]`` from each layer's bias (a new constant when it has none or shares it)."""
    if not shifts:
        return g
    uses = use_counts(g)
    consts: dict[str, np.ndarray] = {}
    replace: dict[str, list[Node]] = {}
    for name, d in shifts.items():
        n = layers[name]
        dtype = g.const(n.inputs[1]).dtype
        if len(n.inputs) > 2 and uses.get(n.inputs[2]) == 1:
            consts[n.inputs[2]] = (g.const(n.inputs[2]) - d).astype(dtype)
            continue
        b = g.const(n.inputs[2]) - d if len(n.inputs) > 2 else -d
        b_name = fresh_name(g, bias_hint(n), consts)
        consts[b_name] = b.astype(dtype)
        replace[name] = [Node(n.op, n.inputs[:2] + (b_name,), n.outputs, n.attrs)]
    return splice(g, replace, constants=consts)


def _rounded_layers(g: Graph) -> dict[str, Node]:
    """First conv2d/linear reading each quantized float constant weight: node name -> node."""
    out: dict[str, Node] = {}
    seen: set[str] = set()
    for n in g.nodes:
        if not is_weighted(n.op) or len(n.inputs) < 2:
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


@dataclass
class LayerStats:
    """Sums over a layer's calibration columns: ``H = sum xq xq^T``, ``C = sum xq x^T``, ``sq = sum xq``,
    ``sf = sum x``, ``M`` columns; ``xq`` the input the layer sees, ``x`` the float model's (compensate, or
    float_mean: then ``sf`` only)."""

    H: np.ndarray | float = 0.0
    C: np.ndarray | float | None = None
    sq: np.ndarray | float | None = None
    sf: np.ndarray | float | None = None
    M: int = 0

    def add(self, cq: np.ndarray, cf: np.ndarray | None, centered: bool, cross: bool = True,
            hessian: bool = True) -> None:
        if hessian:                                # round-to-nearest of W needs no H (it stays 0.0)
            self.H = self.H + (cq @ cq.swapaxes(1, 2)).astype(np.float64)    # in the activations' dtype
        self.M += cq.shape[2]
        if cf is not None and cross:
            self.C = (0.0 if self.C is None else self.C) + (cq @ cf.swapaxes(1, 2)).astype(np.float64)
        if centered:
            self.sq = (0.0 if self.sq is None else self.sq) + cq.sum(axis=2, dtype=np.float64)
            self.sf = (0.0 if self.sf is None else self.sf) + (cq if cf is None else cf).sum(axis=2, dtype=np.float64)

    def __add__(self, o: "LayerStats") -> "LayerStats":
        def plus(a, b):
            return a if b is None else b if a is None else a + b
        return LayerStats(self.H + o.H, plus(self.C, o.C), plus(self.sq, o.sq), plus(self.sf, o.sf), self.M + o.M)


def _means(st: LayerStats):
    """``(mq, mf)``: the column means of the quantized and float inputs (None without bias correction)."""
    return (None, None) if st.sq is None else (st.sq / st.M, st.sf / st.M)


def _problem(st: LayerStats, W: np.ndarray, damp: float):
    """``(T, H, mq, mf)``: the target the solver rounds, the Hessian it weighs by and the column means
    (``_means``), from the sums ``st`` (see ``solve_layer``)."""
    H, C = st.H, st.C
    mq, mf = _means(st)
    if st.sq is not None:                          # center: H - M mq mq^T, C - M mq mf^T
        H = H - st.sq[:, :, None] * mq[:, None, :] if np.ndim(H) else H
        C = None if C is None else C - st.sq[:, :, None] * mf[:, None, :]
    T = W if C is None else solvers.ridge_target(W, H, C, damp)
    return T, H, mq, mf


def _solved(T: np.ndarray, H: np.ndarray, Qn: np.ndarray, grid: solvers.Grid, solve: Callable) -> np.ndarray:
    """The solver's codes for target ``T``, row by row the better of them and ``Qn`` on the objective."""
    Q = np.clip(solve(T, H, grid), grid.lo, grid.hi).astype(np.int64)
    worse = solvers.objective(T, Q, H, grid) > solvers.objective(T, Qn, H, grid)
    return np.where(worse[..., None], Qn, Q)


def generalizes(halves: tuple[LayerStats, LayerStats], W: np.ndarray, Qn: np.ndarray, grid: solvers.Grid,
                solve: Callable, damp: float) -> bool:
    """Two-fold check: codes solved on one half of the calibration batches beat round-to-nearest ``Qn`` on
    the other half's objective (summed over both folds and all rows)."""
    gain = 0.0
    for fit, test in ((0, 1), (1, 0)):
        Tf, Hf, _, _ = _problem(halves[fit], W, damp)
        Tt, Ht, _, _ = _problem(halves[test], W, damp)
        Qf = _solved(Tf, Hf, Qn, grid, solve)
        gain += float((solvers.objective(Tt, Qn, Ht, grid) - solvers.objective(Tt, Qf, Ht, grid)).sum())
    return gain > 0


def solve_layer(g: Graph, n: Node, st: LayerStats, solve: Callable, damp: float = 0.01,
                halves: tuple[LayerStats, LayerStats] | None = None) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Rounded (on-grid) weight of layer ``n``, its output shift per channel with bias correction, and
    whether the solver's codes were kept (False: round-to-nearest).

    Minimizes ``||W x - Wq xq - delta||^2`` over the codes of ``Wq`` (``x = xq`` unless compensating) and,
    when ``st`` has column sums, the shift ``delta = Wq mean(xq) - W mean(x)`` (both sides centered).
    Compensating, ``||W X - Wq Xq||^2 = const + ||(W* - Wq) Xq||^2`` with the least-squares target
    ``W* = W C^T H^-1`` (ridge towards ``W``, as dampened as GPTQ), so the solver rounds ``W*``.
    With ``halves`` (the same sums over two halves of the batches) the layer keeps round-to-nearest
    unless the solver's codes also win on held-out data (``generalizes``), and when its Hessian cannot be
    factored even after dampening (a layer whose inputs barely vary: a 1x1 map late in a small-input
    network)."""
    name = n.inputs[1]
    w, q = g.const(name), g.quant_of(name)
    G, O = _groups(n), w.shape[0]
    W = w.astype(np.float64).reshape(G, O // G, -1)
    grid = grid_of(g, n, quantize(w, q) - q.zp_array(w.ndim))
    Qn = solvers.nearest(W, grid)
    try:
        T, H, mq, mf = _problem(st, W, damp)
        kept = halves is None or generalizes(halves, W, Qn, grid, solve, damp)
        Q = (_solved(T, H, Qn, grid, solve) if kept and np.ndim(H) else Qn).reshape(w.shape)
    except np.linalg.LinAlgError:      # a degenerate Hessian (inputs constant over the calibration set)
        mq, mf = _means(st)
        Q, kept = Qn.reshape(w.shape), False
    wq = dequantize(Q + q.zp_array(w.ndim), q, w.dtype)
    if st.sq is None:
        return wq, None, kept
    Wq = wq.astype(np.float64).reshape(W.shape)
    return wq, (np.einsum("grk,gk->gr", Wq, mq) - np.einsum("grk,gk->gr", W, mf)).reshape(-1), kept


# ---- the walk ----------------------------------------------------------------------------------------
def _walk(g: Graph, batches, layers: dict[str, Node], solve: Callable, *, sequential: bool, compensate: bool,
          correct_bias: bool, damp: float, quantized_acts: bool = False, float_mean: bool = False,
          hessian: bool = True, validate: bool = False, progress: Progress | None = None
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Rounded weights by constant name, bias shifts by layer name, and the layers held-out validation
    left at round-to-nearest (see module docstring)."""
    needed = _ancestors(g, layers)
    last = {v: i for i, n in enumerate(g.nodes) if n.name in needed for v in n.inputs}
    consts = dict(g.constants)                   # the weights the (quantized-prefix) walk runs with
    biases: dict[str, np.ndarray] = {}           # layer -> corrected bias, for the layers after it
    envs = [dict(b) for b in batches]
    walk_float = compensate or (correct_bias and float_mean)
    fenvs = [dict(e) for e in envs] if walk_float else []      # the float model, alongside
    if quantized_acts:
        envs = [_fake_quant_acts(g, e, list(e)) for e in envs]
    new: dict[str, np.ndarray] = {}
    nearest: list[str] = []
    shifts: dict[str, np.ndarray] = {}
    for i, n in enumerate(g.nodes):
        if n.name not in needed:
            continue
        if n.name in layers:
            wname, x = n.inputs[1], n.inputs[0]
            centered = correct_bias and (len(n.inputs) < 3 or g.is_const(n.inputs[2]))
            halves = (LayerStats(), LayerStats())          # even and odd batches
            wshape = consts[wname].shape
            for k, env in enumerate(envs):
                cf = columns(n, fenvs[k].get(x, consts.get(x)), wshape) if fenvs else None
                halves[k % 2].add(columns(n, env.get(x, consts.get(x)), wshape), cf, centered, compensate, hessian)
            st = halves[0] + halves[1]
            check = validate and hessian and len(envs) > 1 and st.M < VALIDATE_BELOW * st.H.shape[-1]
            try:
                new[wname], shift, kept = solve_layer(g, n, st, solve, damp, halves if check else None)
            except (np.linalg.LinAlgError, ValueError) as e:
                raise PassError(f"round_weights: {e}", node=n) from None
            if not kept:
                nearest.append(n.name)
            if shift is not None:
                shifts[n.name] = shift
            if sequential:
                consts[wname] = new[wname]
                if shift is not None:
                    biases[n.name] = (consts[n.inputs[2]] if len(n.inputs) > 2 else 0) - shift
            if progress is not None:
                progress("round_weights", len(new), len(layers))
            if len(new) == len(layers):
                break
        for env in envs:
            _run_node(n, env, consts, biases, g if quantized_acts and float_mean else None)
            if quantized_acts:
                _fake_quant_acts(g, env, n.outputs)
        for env in fenvs:
            _run_node(n, env, g.constants, {})
        for env in envs + fenvs:
            for v in n.inputs:
                if last.get(v) == i:
                    env.pop(v, None)
    return new, shifts, nearest


def _run_node(n: Node, env: dict, consts, biases: dict, grid: Graph | None = None) -> None:
    """Evaluate ``n`` into ``env``; conv/linear from their columns, with a corrected bias if there is one
    (with ``grid``, the graph of the QuantTypes: the bias on the grid ``s_x s_w`` the integer code adds)."""
    args = [env[v] if v in env else consts[v] for v in n.inputs]
    if is_weighted(n.op) and n.inputs[1] in consts:
        b = biases.get(n.name, args[2] if len(args) > 2 else None)
        if grid is not None and b is not None:
            b = _bias_on_grid(grid, n, b)
        outs = [apply(n, args[1], columns(n, args[0], args[1].shape), args[0], b).astype(args[0].dtype)]
    else:
        outs = op_def(n.op).kernel(args, n.attr_dict)
    env.update(zip(n.outputs, outs))


def _bias_on_grid(g: Graph, n: Node, b: np.ndarray) -> np.ndarray:
    """``round(b / (s_x s_w)) s_x s_w`` where input and weight are quantized (simulated mode's bias)."""
    qx, qw = g.quant_of(n.inputs[0]), g.quant_of(n.inputs[1])
    if qx is None or qw is None or qx.per_channel:
        return b
    step = qx.scale[0] * np.asarray(qw.scale, np.float64)
    return (np.rint(np.asarray(b, np.float64) / step) * step).astype(np.asarray(b).dtype)


def _fake_quant_acts(g: Graph, env: dict, names) -> dict:
    """Fake-quantize the float values ``names`` of ``env`` that carry a QuantType, in place."""
    for v in names:
        q = g.quant_of(v)
        if q is not None and v in env and env[v].dtype.kind == "f":
            env[v] = fake_quant(env[v], q)
    return env


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
