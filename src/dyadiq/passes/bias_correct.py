# SPDX-License-Identifier: Apache-2.0
"""Bias correction (DFQ, Nagel et al. 2019, section 4.2): remove the mean output shift of rounded weights.

A conv2d/linear whose weight W carries a QuantType computes with Wq = fake_quant(W), i.e. y_q = y + dW x
with dW = Wq - W, so output channel o is shifted by E[dW x]_o on average. The pass subtracts that:

    b'_o = b_o - E[dW x]_o            (a bias is created when the layer has none)

and stores Wq as the weight (numerics.md: quantized weights lie on their grid), so running it again finds
dW = 0 and returns ``g``. Layers whose float weight is already on the grid carry no information and are
left alone (run the pass before rounding, or on a graph whose weights are still the float ones).

- ``empirical`` (default): over the calibration samples (``[N, ...]`` fed in slices of the graph's batch
  size, or a dict per input), exactly: for a conv E[dW x]_o = sum_{i,k} dW[o,i,k] M[i,k], M[i,k] the mean
  over samples and output positions of tap k of input channel i's zero-padded window; for a linear
  dW @ mean(x). The layer inputs come from the float graph (``interp.run_all(g, mode="float")``).
- ``empirical`` with ``quantized_acts``: one walk over the quantized model in topological order (weights
  rounded to nearest, every activation with a QuantType fake-quantized, as simulated mode runs it), the
  float model walked alongside; each layer's bias is set when the walk reaches it so that its mean output
  per channel equals the float model's, ``b'_o = b_o - (Wq E[xq] - W E[x])_o``, and the layers after it see
  the corrected output. So a layer also removes the mean shift that the rounding of the activations (and
  of the weights) before it leaves in its input: where a channel's values vary little between inputs, an
  activation's rounding error is nearly the same offset on every input, which the float-input form above
  leaves in place. It is ``round_weights(method="nearest", correct_bias=True, quantized_acts=True,
  float_mean=True)``; every quantized layer is corrected (also one whose weight is on its grid) once
  some layer's weight is off its grid (a graph whose weights are all rounded is returned as it is).
- ``analytic``: no data. ``stats`` maps a value name to per-channel (mean m, std d) of a Gaussian (e.g.
  BN beta and gamma of its producer); walking back from the layer input through relu / clip /
  minimum(., c) / maximum(., c) to a value with stats gives a clamp [a, b] and

      E[clip(x, a, b)] = a Phi(al) + m (Phi(be) - Phi(al)) + d (phi(al) - phi(be)) + b (1 - Phi(be)),
      al = (a - m) / d, be = (b - m) / d;   relu (a = 0, b = inf): m Phi(m/d) + d phi(m/d).

  Then E[dW x]_o = sum_{i,k} dW[o,i,k] E[x_i] (zero padding ignored). Layers without stats are skipped.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import special

from ..errors import PassError
from ..interp import run_all
from ..ir.graph import Graph, Node, verify
from ..ir.numerics import fake_quant
from ..ir.ops.registry import is_weighted
from ..ir.ops.window import hw_attrs, out_size, pad_nchw, windows
from .calibrate import prepare_calib
from .equalize import clamp_bounds
from .rewrite import bias_hint, fresh_name, splice, use_counts

MODES = ("empirical", "analytic")
Stats = Mapping[str, tuple[np.ndarray, np.ndarray]]


def bias_correct(g: Graph, calib=None, *, mode: str = "empirical", stats: Stats | None = None,
                 quantized_acts: bool = False) -> Graph:
    """Subtract the expected output error of quantized weights (with ``quantized_acts``: of the quantized
    model, layer by layer) from each layer's bias; ``g`` if none."""
    if mode not in MODES:
        raise PassError(f"bias_correct: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if quantized_acts and mode != "empirical":
        raise PassError("bias_correct: quantized_acts needs mode='empirical' (it measures the quantized model)")
    layers = _quantized_layers(g)
    if not layers:
        return g
    if mode == "empirical":
        if calib is None:
            raise PassError("bias_correct: empirical mode needs calibration data")
        if quantized_acts:
            from .round_weights import round_weights
            return round_weights(g, calib, method="nearest", correct_bias=True, quantized_acts=True,
                                 float_mean=True, validate=False)
        means = _empirical_means(g, calib, layers)
    else:
        if stats is None:
            raise PassError("bias_correct: analytic mode needs stats (value name -> (mean, std))")
        means = _analytic_means(g, stats, layers)
    if not means:
        return g
    return verify(_corrected(g, layers, means))


def _quantized_layers(g: Graph) -> dict[str, tuple[Node, np.ndarray]]:
    """conv2d/linear nodes with a quantized constant weight off its grid: name -> (node, dW in float64)."""
    out = {}
    for n in g.nodes:
        if not is_weighted(n.op) or not g.is_const(n.inputs[1]):
            continue
        q, w = g.quant_of(n.inputs[1]), g.const(n.inputs[1])
        if q is None or w.dtype.kind != "f" or (len(n.inputs) == 3 and not g.is_const(n.inputs[2])):
            continue
        dw = fake_quant(w, q).astype(np.float64) - w.astype(np.float64)
        if np.any(dw != 0):
            out[n.name] = (n, dw)
    return out


def _by_group(w: np.ndarray, groups: int) -> np.ndarray:
    """[O, Cg, ...] -> [groups, O/groups, Cg, taps] (a linear weight is a 1x1 conv with one group)."""
    return w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)


def _shift(n: Node, dw: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E[dW x] per output channel from the mean input M [C_in, taps] (or [C_in] for every tap)."""
    groups = n.attr("groups", 1) if n.op == "conv2d" else 1
    taps = dw[0, 0].size
    m = np.broadcast_to(m.reshape(m.shape[0], -1), (m.shape[0], taps))
    return np.einsum("gock,gck->go", _by_group(dw, groups), m.reshape(groups, -1, taps)).reshape(-1)


# ---- empirical: mean input windows over the calibration data -------------------------------------
def _empirical_means(g: Graph, calib, layers: dict) -> dict[str, np.ndarray]:
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for batch in prepare_calib(g, calib).batches():
        env = run_all(g, batch, mode="float")
        for name, (n, dw) in layers.items():
            s, k = _window_sum(n, env[n.inputs[0]], dw.shape[2:])
            sums[name] = sums.get(name, 0.0) + s
            counts[name] = counts.get(name, 0) + k
    return {name: sums[name] / counts[name] for name in layers}


def _window_sum(n: Node, x: np.ndarray, kernel: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Sum over samples and output positions of each input tap ([C, KH, KW] or [C]), and the count."""
    x = x.astype(np.float64)
    if n.op == "linear":
        rows = x.reshape(-1, x.shape[-1])
        return rows.sum(axis=0), rows.shape[0]
    _, s, p, d = hw_attrs(n.attr_dict)
    oh = out_size(x.shape[2], kernel[0], s[0], p[0], p[2], d[0])
    ow = out_size(x.shape[3], kernel[1], s[1], p[1], p[3], d[1])
    win = windows(pad_nchw(x, p), kernel, s, d, (oh, ow))
    return win.sum(axis=(0, 2, 3)), x.shape[0] * oh * ow


# ---- analytic: clamped-Gaussian means ------------------------------------------------------------
def clamped_gaussian_mean(m, d, lo, hi) -> np.ndarray:
    """E[clip(x, lo, hi)] for x ~ N(m, d^2), elementwise; lo/hi may be infinite, d may be 0."""
    m, d, lo, hi = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (m, d, lo, hi)))
    safe = np.where(d > 0, d, 1.0)
    al, be = (lo - m) / safe, (hi - m) / safe
    cdf_a, cdf_b = special.ndtr(al), special.ndtr(be)
    fin = lambda v: np.where(np.isfinite(v), v, 0.0)  # noqa: E731  (an infinite bound has mass 0 there)
    e = fin(lo) * cdf_a + m * (cdf_b - cdf_a) + d * (_pdf(al) - _pdf(be)) + fin(hi) * (1.0 - cdf_b)
    return np.where(d > 0, e, np.clip(m, lo, hi))


def _pdf(z: np.ndarray) -> np.ndarray:
    """Standard normal density, 0 at +-inf."""
    z = np.where(np.isfinite(z), z, np.inf)
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _analytic_means(g: Graph, stats: Stats, layers: dict) -> dict[str, np.ndarray]:
    prod = g.producers()
    out = {}
    for name, (n, _) in layers.items():
        x = n.inputs[0]
        axis = 1 if n.op == "conv2d" else -1
        c = g.type_of(x).shape[axis]
        lo, hi, v = np.full(c, -np.inf), np.full(c, np.inf), x
        while v not in stats:
            p = prod.get(v)
            data = [i for i in p.inputs if not g.is_const(i)] if p is not None else []
            ab = clamp_bounds(g, p, data[0], c, axis) if len(data) == 1 else None
            if ab is None:
                break
            lo, hi = np.clip(ab[0], lo, hi), np.clip(ab[1], lo, hi)     # clip(clip(u, a, b), lo, hi)
            v = data[0]
        if v not in stats:
            continue
        m, d = (np.asarray(a, np.float64).reshape(-1) for a in stats[v])
        if m.shape != (c,) or d.shape != (c,):
            raise PassError(f"bias_correct: stats[{v!r}] must hold {c} means and stds", node=n)
        out[name] = clamped_gaussian_mean(m, d, lo, hi)
    return out


# ---- the corrected graph ------------------------------------------------------------------------
def _corrected(g: Graph, layers: dict, means: dict) -> Graph:
    uses = use_counts(g)
    consts: dict[str, np.ndarray] = {}
    quants = {}
    replace: dict[str, list[Node]] = {}
    for name, m in means.items():
        n, dw = layers[name]
        w_name = n.inputs[1]
        w, q = g.const(w_name), g.quant_of(w_name)
        consts[w_name], quants[w_name] = fake_quant(w, q), q
        shift = _shift(n, dw, m)
        if len(n.inputs) == 3:
            b_name = n.inputs[2]
            b = g.const(b_name).astype(np.float64) - shift
            if uses.get(b_name) != 1:
                b_name = fresh_name(g, bias_hint(n), consts)
                replace[name] = [Node(n.op, n.inputs[:2] + (b_name,), n.outputs, n.attrs)]
        else:
            b_name, b = fresh_name(g, bias_hint(n), consts), -shift
            replace[name] = [Node(n.op, n.inputs + (b_name,), n.outputs, n.attrs)]
        consts[b_name] = b.astype(w.dtype)
    return splice(g, replace, constants=consts, quants=quants)
