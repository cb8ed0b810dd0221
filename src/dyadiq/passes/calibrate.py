# SPDX-License-Identifier: Apache-2.0
"""Calibration: run the float graph on sample inputs and choose a clipping range ``(lo, hi)`` per value.

Samples are an array ``[N, ...]`` (one-input graphs) or a dict ``input name -> [N, ...]``, fed in slices
of the graph's batch size (``shape[0]`` of its inputs; a remainder that fills no batch is dropped).

Methods (every range is finally widened to contain 0 and clamped to the observed min/max):

- ``minmax``: observed minimum and maximum.
- ``percentile``: the ``100 - p`` and ``p`` percentiles of the histogram (linear inside a bin).
- ``mse``: the ``[lo, hi]`` minimizing the expected squared error of the ``bits``-bit asymmetric
  quantizer ``Q(x) = s * clamp(round(x / s), qmin - z, qmax - z)`` over the histogram, density taken
  uniform inside each bin (the rounding error integrates in closed form); exact zeros count as
  error-free. Coordinate search: ``hi`` with ``lo`` fixed, then ``lo``, then ``hi`` again.
- ``entropy``: TensorRT-style KL divergence: ``P`` = histogram clipped to ``[lo, hi]`` (outliers added to
  the end bins), ``Q`` = ``P`` merged into ``2^bits - 1`` levels and spread back over the non-empty bins;
  choose the range minimizing ``KL(P || Q)`` (same coordinate search). Exact zeros are left out of ``P``
  as in ``mse`` (a ReLU output's spike at 0 otherwise dominates the divergence and the search clips the
  range to a fifth of the data), and a range may clip at most ``ENTROPY_MAX_CLIPPED`` of the other
  values (on discrete data, e.g. 17-level digit images, the divergence is smallest with nearly all of
  the data piled into the clipped end bin). Falls back to min/max when the histogram has fewer bins than levels
  (e.g. 16-bit activations).

Histograms (``NBINS`` bins with 0 on a bin edge) are accumulated batch by batch; when a batch falls
outside the current range the range grows and old bins merge exactly (the new bin width is an integer
multiple of the old one), so memory stays bounded and one pass over the data suffices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from ..errors import DyadiqWarning, InputError, PassError
from ..ir.graph import Graph

METHODS = ("minmax", "percentile", "mse", "entropy")
NBINS = 4096
Progress = Callable[[str, int, int], None]      # progress(stage, done, total)


# ---- calibration data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibSet:
    """Validated calibration samples: ``arrays[name]`` is ``[n, *input_shape[1:]]``, fed ``batch`` at a time."""

    arrays: Mapping[str, np.ndarray]
    batch: int
    n: int                 # samples used (a multiple of ``batch``)
    dropped: int           # trailing samples that fill no batch

    @property
    def n_batches(self) -> int:
        return self.n // self.batch

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, self.n, self.batch):
            yield {k: v[i:i + self.batch] for k, v in self.arrays.items()}


def _kind_ok(want, got: np.dtype) -> bool:
    if want.kind == "f":
        return got.kind == "f"
    if want.kind in "iu":
        return got.kind in "iu"
    return got.kind == want.kind


def prepare_calib(g: Graph, calib) -> CalibSet:
    """Check calibration data against the graph's inputs (raises ``InputError``); see module docstring."""
    if isinstance(calib, CalibSet):
        return calib
    if isinstance(calib, Mapping):
        arrays = dict(calib)
        missing = [n for n in g.inputs if n not in arrays]
        extra = sorted(set(arrays) - set(g.inputs))
        if missing or extra:
            raise InputError(f"calibration data must have one array per graph input ({', '.join(g.inputs)}); "
                             + (f"missing {missing}" if missing else f"unknown {extra}"))
    else:
        if len(g.inputs) != 1:
            raise InputError(f"the graph has {len(g.inputs)} inputs ({', '.join(g.inputs)}): "
                             "give calibration data as a dict (or .npz) with one array per input")
        arrays = {g.inputs[0]: calib}
    if not arrays:
        raise InputError("calibration set is empty")
    out, batch, n = {}, None, None
    for name in g.inputs:
        a = arrays[name]
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except Exception:
                raise InputError(f"calibration input {name!r}: expected an array, got {type(a).__name__}") from None
        t = g.type_of(name)
        if t.rank == 0:
            raise InputError(f"graph input {name!r} is a scalar: it has no batch axis to calibrate over")
        want = f"[N, {', '.join(map(str, t.shape[1:]))}]" if t.rank > 1 else "[N]"
        if a.ndim == 0 or a.shape[0] == 0:
            raise InputError("calibration set is empty")
        if tuple(a.shape[1:]) != t.shape[1:]:
            raise InputError(f"calibration input {name!r}: expected samples of shape {want} ({t.dtype}), "
                             f"got [{', '.join(map(str, a.shape))}] ({a.dtype}); samples are the first axis")
        if not _kind_ok(t.np_dtype, a.dtype):
            raise InputError(f"calibration input {name!r}: expected {t.dtype} samples of shape {want}, "
                             f"got {a.dtype} (preprocess the data first)")
        if n is not None and a.shape[0] != n:
            raise InputError(f"calibration inputs have different sample counts ({n} vs {a.shape[0]} for {name!r})")
        n = a.shape[0]
        if a.dtype != t.np_dtype and a.dtype.kind == "f":
            warn_input(f"calibration input {name!r}: {a.dtype} samples are cast to {t.np_dtype}")
        if batch is not None and t.shape[0] != batch:
            raise InputError(f"graph inputs have different batch sizes ({batch} vs {t.shape[0]} for {name!r})")
        batch = t.shape[0]
        out[name] = np.ascontiguousarray(a, dtype=t.np_dtype)
    if batch == 0:
        raise InputError("graph inputs have batch size 0")
    if n < batch:
        raise InputError(f"calibration set has {n} samples but the model's batch size is {batch}")
    used = n - n % batch
    if not any(np.any(v) for v in out.values()):
        raise InputError("calibration data is all zeros: every activation range would be empty "
                         "(give preprocessed samples of real inputs)")
    if used == 1:
        warn_input("1 calibration sample: ranges and rounding statistics from one sample are unreliable "
                   "(give a few dozen)")
    return CalibSet({k: v[:used] for k, v in out.items()}, batch, used, n - used)


def warn_input(msg: str) -> None:
    """Questionable but usable input: a DyadiqWarning (one ``warning:`` line on the CLI)."""
    import warnings
    warnings.warn(msg, DyadiqWarning, stacklevel=3)


# ---- histograms ---------------------------------------------------------------------------------
class Histogram:
    """``NBINS`` equal bins with edges ``(i - zero) * width``, i.e. 0 is edge ``zero``; grows by exact merges."""

    def __init__(self, nbins: int = NBINS):
        self.nbins = nbins
        self.counts = np.zeros(nbins, np.int64)
        self.width = 0.0
        self.zero = 0               # index of the edge at 0
        self.zeros = 0              # exact zeros seen (quantized without error)
        self.pending = 0            # zeros seen before the first non-zero value fixed the bins
        self.lo, self.hi = math.inf, -math.inf

    @property
    def edges(self) -> np.ndarray:
        return (np.arange(self.nbins + 1) - self.zero) * self.width

    def add(self, x: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        """Count the elements of ``x`` (``lo``/``hi``: its min and max, when already known)."""
        x = np.asarray(x).ravel()
        if x.size == 0:
            return
        lo = float(x.min()) if lo is None else lo
        hi = float(x.max()) if hi is None else hi
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        zeros = int(np.count_nonzero(x == 0))
        self.zeros += zeros
        if lo == hi == 0.0 and self.width == 0.0:          # nothing but zeros so far: no scale yet
            self.pending += zeros
            return
        self._cover(min(lo, 0.0), max(hi, 0.0))
        v = np.divide(x, self.width, dtype=np.float64)     # bin index floor(x / width) + zero, clamped
        np.floor(v, out=v)
        np.clip(v, -self.zero, self.nbins - 1 - self.zero, out=v)
        idx = v.astype(np.int64)
        idx += self.zero
        self.counts += np.bincount(idx, minlength=self.nbins)

    def _cover(self, lo: float, hi: float) -> None:
        n = self.nbins
        if self.width == 0.0:
            w = max((hi - lo) / (n - 1), max(-lo, hi) * 1e-12)
            self.width, self.zero = w, min(n - 1, math.ceil(-lo / w))
            while (n - self.zero) * self.width < hi:      # float slack
                self.width *= 1 + 1e-12
            self.counts[min(self.zero, n - 1)] += self.pending
            self.pending = 0
            return
        w, z = self.width, self.zero
        if -z * w <= lo and (n - z) * w >= hi:
            return
        # size the new bins for the data seen (self.lo/hi include this batch), not the old bins' span:
        # old bins outside it are empty, so clipping their new index loses nothing
        neg = math.ceil(-min(self.lo, 0.0) / w)           # old-width bins needed below 0
        pos = math.ceil(max(self.hi, 0.0) / w)            # ... and above
        k = max(2, -(-(neg + pos) // n))
        while -(-neg // k) + -(-pos // k) > n:            # the zero edge must stay an edge
            k += 1
        nz = -(-neg // k)
        nz += (n - nz - -(-pos // k)) // 2                # split the spare bins between both sides
        idx = [min(max((m - z) // k + nz, 0), n - 1) for m in range(n)]   # old bin m -> new bin
        new = np.zeros(n, np.int64)
        np.add.at(new, np.array(idx, np.int64), self.counts)
        self.counts, self.width, self.zero = new, w * k, nz

    def range(self, method: str, bits: int, percentile: float) -> tuple[float, float]:
        """The clipping range of ``method`` (before widening to 0 and clamping to min/max)."""
        if self.width == 0.0:                              # empty or all zeros
            return 0.0, 0.0
        if method == "percentile":
            return _percentile_range(self, percentile)
        if method == "mse":
            return _mse_range(self, bits)
        if method == "entropy":
            return _entropy_range(self, bits)
        raise PassError(f"unknown calibration method {method!r}")


def _percentile_range(h: Histogram, p: float) -> tuple[float, float]:
    cum = np.concatenate([[0], np.cumsum(h.counts)]).astype(np.float64)
    e = h.edges

    def at(t):
        i = int(np.searchsorted(cum, t, side="left"))     # first edge with cum >= t
        if i == 0:
            return e[0]
        f = (t - cum[i - 1]) / max(cum[i] - cum[i - 1], 1)
        return e[i - 1] + f * (e[i] - e[i - 1])
    total = cum[-1]
    return float(at(total * (1 - p / 100))), float(at(total * p / 100))


# ---- mse ----------------------------------------------------------------------------------------
def _saw(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``int_{-d/2}^{x} (t - d*round(t/d))^2 dt`` (an antiderivative of the squared rounding error)."""
    k = np.floor(x / d + 0.5)
    t = x - k * d
    return k * d ** 3 / 12 + (t ** 3 + (d / 2) ** 3) / 3


def quant_mse(counts: np.ndarray, edges, lo, hi, bits: int) -> np.ndarray:
    """Expected summed squared error of quantizing a histogram to ``[lo, hi]`` (arrays of candidates).

    ``edges``: the ``n + 1`` bin edges, or a pair (lower edges, upper edges) of the ``n`` bins.
    """
    lo, hi = np.asarray(lo, np.float64)[:, None], np.asarray(hi, np.float64)[:, None]
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    s = np.maximum(hi - lo, 1e-300) / (qmax - qmin)
    z = np.clip(qmin - np.rint(lo / s), qmin, qmax)
    L, H = s * (qmin - z), s * (qmax - z)                 # exact representable ends
    u, v = (edges[:-1], edges[1:]) if isinstance(edges, np.ndarray) else edges
    u, v = u[None, :], v[None, :]
    a, b = np.clip(u, L, H), np.clip(v, L, H)
    err = _saw(b, s) - _saw(a, s)                          # inside the range
    err += (np.maximum(L - u, 0) ** 3 - np.maximum(L - v, 0) ** 3) / 3     # clipped below
    err += (np.maximum(v - H, 0) ** 3 - np.maximum(u - H, 0) ** 3) / 3     # clipped above
    return (err / (v - u) * counts[None, :]).sum(axis=1)


def _argmin(cost: Callable[[np.ndarray], np.ndarray], full: float) -> float | None:
    """The best of the candidates ``full * f``, ``f`` in (0, 1]: a 1/64 grid, then 1/1024 around its best."""
    best_c, best = math.inf, None
    coarse = np.arange(1, 65) / 64
    for frac in (coarse, None):
        if frac is None:
            if best is None:
                return None
            f0 = best / full
            frac = f0 + np.arange(-15, 16) / 1024
            frac = frac[(frac > 0) & (frac <= 1)]
        c = np.asarray(cost(full * frac), np.float64)
        c = np.where(np.isfinite(c), c, np.inf)
        i = int(np.argmin(c))
        if c[i] < best_c:
            best_c, best = c[i], float(full * frac[i])
    return best


def _coordinate_search(h: Histogram, cost: Callable) -> tuple[float, float]:
    """Minimize ``cost(lo_candidates, hi_candidates)``: hi with lo fixed, then lo, then hi again."""
    lo, hi = min(h.lo, 0.0), max(h.hi, 0.0)
    for side in ("hi", "lo", "hi"):
        full = max(h.hi, 0.0) if side == "hi" else min(h.lo, 0.0)
        if full == 0.0:
            continue
        if side == "hi":
            hi = _argmin(lambda c: cost(np.full_like(c, lo), c), full) or hi
        else:
            lo = _argmin(lambda c: cost(c, np.full_like(c, hi)), full) or lo
    return float(lo), float(hi)


def _mse_range(h: Histogram, bits: int) -> tuple[float, float]:
    counts = h.counts.astype(np.float64)
    counts[min(h.zero, h.nbins - 1)] -= h.zeros           # exact zeros: no error at any range
    edges = h.edges
    keep = counts > 0                                      # empty bins add nothing
    lo_e, hi_e, c = edges[:-1][keep], edges[1:][keep], counts[keep]
    return _coordinate_search(h, lambda lo, hi: quant_mse(c, (lo_e, hi_e), lo, hi, bits))


# ---- entropy ------------------------------------------------------------------------------------
def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Give empty bins ``eps`` taken from the others (None when impossible)."""
    zero = p == 0
    nz = p.size - int(zero.sum())
    if nz == 0:
        return None
    eps1 = eps * (p.size - nz) / nz
    if eps1 >= 1.0:
        return None
    return p + eps * zero - eps1 * ~zero


def kl_divergence(counts: np.ndarray, start: int, stop: int, levels: int) -> float:
    """KL(P || Q) for the clip window ``counts[start:stop]`` quantized to ``levels`` merged bins.

    As in MXNet/TVM's version of TensorRT's calibration: ``P`` is the window with the outlier counts
    added to its end bins; ``Q`` merges the window's bins (``m // levels`` each, the last level takes
    the remainder) and spreads each merged count evenly over the bins where ``P`` is non-zero.
    """
    sliced = counts[start:stop].astype(np.float64)
    p = sliced.copy()
    p[0] += counts[:start].sum()
    p[-1] += counts[stop:].sum()
    m = stop - start
    merged = m // levels
    starts = np.arange(levels) * merged
    qsum = np.add.reduceat(sliced, starts)
    nonzero = p != 0
    norm = np.add.reduceat(nonzero.astype(np.float64), starts)
    group = np.minimum(np.arange(m) // merged, levels - 1)
    q = np.where(nonzero, (qsum / np.maximum(norm, 1))[group], 0.0)
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None:
        return math.inf
    ps, qs = ps / ps.sum(), qs / qs.sum()
    return float(np.sum(ps * np.log(ps / qs)))


ENTROPY_MAX_CLIPPED = 0.01     # the KL range may clip at most this share of the non-zero values


def _entropy_range(h: Histogram, bits: int) -> tuple[float, float]:
    levels = (1 << bits) - 1
    if h.nbins < levels:
        return h.lo, h.hi
    w, z = h.width, h.zero
    counts = h.counts.copy()
    counts[min(z, h.nbins - 1)] -= h.zeros                 # exact zeros: on the grid at any range
    cum = np.concatenate([[0], np.cumsum(counts)])
    most = ENTROPY_MAX_CLIPPED * cum[-1]

    def cost(lo, hi):
        out = np.full(len(lo), np.inf)
        for i, (a, b) in enumerate(zip(lo, hi)):
            start = z + int(math.floor(a / w + 1e-9))
            stop = z + int(math.ceil(b / w - 1e-9))
            start, stop = max(start, 0), min(stop, h.nbins)
            if stop - start >= levels and cum[start] + cum[-1] - cum[stop] <= most:
                out[i] = kl_divergence(counts, start, stop, levels)
        return out
    return _coordinate_search(h, cost)


# ---- the pass -----------------------------------------------------------------------------------
def _float_values(g: Graph) -> list[str]:
    names = list(g.inputs) + [o for n in g.nodes for o in n.outputs]
    return [v for v in names if g.type_of(v).is_float]


def collect_ranges(g: Graph, calib, method: str = "minmax", *, bits: int = 8, percentile: float = 99.99,
                   progress: Progress | None = None, values: Iterable[str] | None = None,
                   value_bits: Mapping[str, int] | None = None) -> dict[str, tuple[float, float]]:
    """Run the float graph over ``calib`` and return ``value name -> (lo, hi)`` with ``lo <= 0 <= hi``
    (``mse`` / ``entropy`` fit each value's width: ``value_bits`` by name, else ``bits``)."""
    from ..interp import run_all

    if method not in METHODS:
        raise PassError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
    if not 2 <= bits <= 16:
        raise PassError(f"activation bits must be 2..16, got {bits}")
    if not 50 < percentile <= 100:
        raise PassError(f"percentile must be in (50, 100], got {percentile}")
    cs = prepare_calib(g, calib)
    names = _float_values(g) if values is None else list(values)
    stats = {v: Histogram() for v in names} if method != "minmax" else None
    lo = {v: math.inf for v in names}
    hi = {v: -math.inf for v in names}
    total = cs.n_batches
    for k, batch in enumerate(cs.batches()):
        env = run_all(g, batch, mode="float")
        for v in names:
            x = env[v]
            a, b = float(x.min()), float(x.max())
            if not (math.isfinite(a) and math.isfinite(b)):
                raise PassError(f"value %{v} is not finite on calibration batch {k} (min {a}, max {b})")
            lo[v], hi[v] = min(lo[v], a), max(hi[v], b)
            if stats is not None:
                stats[v].add(x, a, b)
        if progress is not None:
            progress("calibrate", k + 1, total)
    out = {}
    for v in names:
        a, b = lo[v], hi[v]
        if stats is not None:
            ra, rb = stats[v].range(method, (value_bits or {}).get(v, bits), percentile)
            a, b = max(a, ra), min(b, rb)
        out[v] = (min(float(a), 0.0), max(float(b), 0.0))
    return out


def calibrate(g: Graph, calib, method: str = "minmax", *, bits: int = 8, percentile: float = 99.99,
              progress: Progress | None = None) -> Graph:
    """Collect activation ranges on ``calib`` and annotate every activation with its QuantType."""
    from .annotate_quant import annotate_activations
    ranges = collect_ranges(g, calib, method, bits=bits, percentile=percentile, progress=progress)
    return annotate_activations(g, ranges, bits=bits)
