# SPDX-License-Identifier: Apache-2.0
"""Rounding solvers for ``round_weights``: choose integer codes for a layer from its input Gram matrix.

A layer is a batch of ``G`` independent problems (conv groups; a depthwise conv has one per channel),
each with weights ``W[g]`` of ``R`` rows (output channels) by ``K`` columns (inputs) and the Gram matrix
``H[g] = sum_x x x^T`` of its input columns. Row ``r`` has the grid ``scale_r * c``, ``c`` an integer in
``[lo_r, hi_r]``. The output error of codes ``Q`` separates by row:

    ||W X - Wq X||^2 = sum_r d_r^T H d_r,      d_r = w_r - scale_r q_r

- ``nearest``: ``q = clamp(round_half_even(w / scale))`` (the numerics contract).
- ``gptq`` (Frantar et al. 2022, OBQ with Cholesky): with ``H`` dampened by ``damp * mean(diag H)``
  and ``U`` the upper Cholesky factor of ``H^-1``, quantize column ``i`` and spread its error over the
  columns not yet quantized, ``W[:, j] -= (w_i - q_i s) / U_ii * U_ij`` for ``j > i``; updates outside
  the current block of ``block`` columns are applied lazily, once per block. This is Babai's nearest
  plane algorithm for the lattice problem below. Columns in input order, or by decreasing ``H_ii``
  (``act_order``). Dead inputs (``H_ii = 0``) decouple and get round-to-nearest.
- ``exhaustive``: the exact minimizer of ``(q - z)^T H (q - z)``, ``z = w / scale``, over the boxed
  integer lattice by Schnorr-Euchner enumeration (sphere decoding) on ``H = R^T R``, started from the
  GPTQ solution. Exponential in ``K``: tiny layers only (``K <= MAX_EXHAUSTIVE_K``).
- ``adaround`` (Nagel et al. 2020): ``q = floor(z) + h(V)``, ``h = clip(sigmoid(V) (zeta - gamma) + gamma,
  0, 1)``; Adam on ``V`` minimizes, in code units, ``sum_r e_r^T (H / mean diag H) e_r + lam sum(1 -
  |2h - 1|^beta)``, ``e = z - floor(z) - h``, ``beta`` annealed 20 -> 2 after a warm-up without the
  regularizer; then ``h`` is rounded to {0, 1}. Deterministic (no sampling, no random init).

``ridge_target`` gives the target a compensating ``round_weights`` rounds instead of ``W``. ``objective``
gives the per-row error; ``round_weights`` keeps, row by row, the better of a solver's codes
and round-to-nearest, so no row gets worse than round-to-nearest on the calibration data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

MAX_EXHAUSTIVE_K = 16
MAX_EXHAUSTIVE_NODES = 2_000_000     # search nodes per row before exhaustive gives up


@dataclass(frozen=True)
class Grid:
    """Per-row scale and inclusive code bounds, each ``[G, R, 1]``."""

    scale: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def nearest(W: np.ndarray, grid: Grid) -> np.ndarray:
    """Round-to-nearest (half even) codes, clamped to the grid."""
    return np.clip(np.rint(W / grid.scale), grid.lo, grid.hi).astype(np.int64)


def objective(W: np.ndarray, Q: np.ndarray, H: np.ndarray, grid: Grid) -> np.ndarray:
    """``d_r^T H d_r`` per row ``[G, R]``, ``d = W - scale * Q``."""
    D = W - grid.scale * Q
    return np.einsum("grk,grk->gr", D @ H, D)


def _diag(H: np.ndarray) -> np.ndarray:
    return np.diagonal(H, axis1=1, axis2=2)


def _undead(H: np.ndarray) -> np.ndarray:
    """A copy of ``H`` (float64) with ``H_ii = 1`` where input ``i`` is dead (``H_ii = 0``)."""
    H = np.array(H, np.float64)
    k = np.arange(H.shape[1])
    H[:, k, k] += _diag(H) == 0
    return H


def damped(H: np.ndarray, damp: float) -> np.ndarray:
    """``H`` (dead inputs set to 1) plus ``damp * mean(|diag H|)`` on the diagonal (a centred ``H`` of
    nearly constant inputs can have a slightly negative diagonal by cancellation; its mean would then
    take the damping the wrong way)."""
    H = _undead(H)
    k = np.arange(H.shape[1])
    H[:, k, k] += damp * np.abs(_diag(H)).mean(axis=1, keepdims=True)
    return H


def ridge_target(W: np.ndarray, H: np.ndarray, C: np.ndarray, damp: float) -> np.ndarray:
    """``argmin_V ||W X - V Xq||^2 + lam ||V - W||^2 = W (C^T + lam I) (H + lam I)^-1`` (``H = Xq Xq^T``,
    ``C = Xq X^T``, ``lam = damp * mean(diag H)``); dead inputs keep ``W``."""
    Hd = damped(H, damp)
    lam = Hd - _undead(H)
    T = np.linalg.solve(Hd, C @ W.swapaxes(1, 2) + lam @ W.swapaxes(1, 2)).swapaxes(1, 2)
    dead = (_diag(H) == 0)[:, None, :]
    return np.where(dead, W, T)


def _inv_chol_upper(H: np.ndarray, damp: float) -> np.ndarray:
    """Upper ``U`` with ``U^T U = (H + damp mean(diag H) I)^-1``; damping grows x10 until it factors.

    With ``J`` the reversal, ``J H J = L L^T`` gives ``H = (J L J)(J L J)^T``, so ``U = J L^-1 J``.
    """
    for _ in range(8):
        try:
            L = np.linalg.cholesky(damped(H, damp)[:, ::-1, ::-1])
            Li = np.linalg.inv(L) if len(L) > 1 else lapack.dtrtri(L[0], lower=1)[0][None]
            return np.ascontiguousarray(Li[:, ::-1, ::-1])
        except np.linalg.LinAlgError:
            damp = max(damp * 10, 1e-6)
    raise np.linalg.LinAlgError("Gram matrix is not positive definite even after dampening")


def gptq(W: np.ndarray, H: np.ndarray, grid: Grid, *, damp: float = 0.01, block: int = 128,
         act_order: bool = False) -> np.ndarray:
    """GPTQ codes ``[G, R, K]`` (see module docstring)."""
    G, R, K = W.shape
    W = np.array(W, np.float64)
    H = _undead(H)
    perm = None
    if act_order:
        perm = np.argsort(-_diag(H), axis=1, kind="stable")
        W = np.take_along_axis(W, perm[:, None, :], axis=2)
        H = np.take_along_axis(np.take_along_axis(H, perm[:, :, None], axis=1), perm[:, None, :], axis=2)
    U = _inv_chol_upper(H, damp)
    s, lo, hi = (np.broadcast_to(a, (G, R, 1))[..., 0] for a in (grid.scale, grid.lo, grid.hi))
    Q = np.empty((G, R, K), np.int64)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1 = W[:, :, i1:i2].copy()
        E1 = np.empty_like(W1)
        for i in range(i2 - i1):
            w = W1[:, :, i]
            q = np.clip(np.rint(w / s), lo, hi)
            Q[:, :, i1 + i] = q
            e = (w - q * s) / U[:, None, i1 + i, i1 + i]
            W1[:, :, i + 1:] -= e[:, :, None] * U[:, None, i1 + i, i1 + i + 1:i2]
            E1[:, :, i] = e
        if i2 < K:
            W[:, :, i2:] -= E1 @ U[:, i1:i2, i2:]
    if perm is not None:
        out = np.empty_like(Q)
        np.put_along_axis(out, np.broadcast_to(perm[:, None, :], Q.shape), Q, axis=2)
        Q = out
    return Q


# ---- exact: sphere decoding ------------------------------------------------------------------------
def exhaustive(W: np.ndarray, H: np.ndarray, grid: Grid, *, start: np.ndarray | None = None) -> np.ndarray:
    """Exact minimizer per row by enumeration (tiny ``K`` only), starting from ``start`` (default GPTQ)."""
    G, R, K = W.shape
    if K > MAX_EXHAUSTIVE_K:
        raise ValueError(f"exhaustive rounding enumerates codes: {K} inputs per row is more than "
                         f"{MAX_EXHAUSTIVE_K}; use gptq")
    H = _undead(H)
    k = np.arange(K)
    Q = np.array(gptq(W, H, grid, damp=0.0) if start is None else start, np.int64)
    s, lo, hi = (np.broadcast_to(a, (G, R, 1))[..., 0] for a in (grid.scale, grid.lo, grid.hi))
    for g in range(G):
        Hg = H[g] + np.eye(K) * (1e-12 * H[g, k, k].mean())     # exact up to a 1e-12 ridge
        Rm = np.linalg.cholesky(Hg).T                              # H = R^T R, R upper
        for r in range(R):
            z = W[g, r] / s[g, r]
            Q[g, r] = _closest(Rm, z, int(lo[g, r]), int(hi[g, r]), Q[g, r])
    return Q


def _closest(Rm: np.ndarray, z: np.ndarray, lo: int, hi: int, q0: np.ndarray) -> np.ndarray:
    """argmin over integer ``q`` in ``[lo, hi]^K`` of ``||R (q - z)||^2``, no worse than ``q0``."""
    K = z.size
    rd = np.diag(Rm) ** 2
    best_q = q0.copy()
    best = [float(np.sum((Rm @ (q0 - z)) ** 2))]
    q = np.zeros(K, np.float64)
    visited = [0]

    def search(i: int, partial: float) -> None:
        visited[0] += 1
        if visited[0] > MAX_EXHAUSTIVE_NODES:
            raise ValueError(f"exhaustive rounding visited more than {MAX_EXHAUSTIVE_NODES} search nodes for "
                             "one row; the layer is too large for it (use gptq)")
        if i < 0:
            if partial < best[0]:
                best[0] = partial
                best_q[:] = q
            return
        c = z[i] - (Rm[i, i + 1:] @ (q[i + 1:] - z[i + 1:])) / Rm[i, i]
        room = (best[0] - partial) / rd[i]
        if room <= 0:
            return
        rad = math.sqrt(room)
        cands = range(max(lo, math.ceil(c - rad)), min(hi, math.floor(c + rad)) + 1)
        for v in sorted(cands, key=lambda v: abs(v - c)):
            cost = partial + rd[i] * (v - c) ** 2
            if cost >= best[0]:
                break
            q[i] = v
            search(i - 1, cost)

    search(K - 1, 0.0)
    return best_q


# ---- learned: AdaRound on the Gram matrix ---------------------------------------------------------
ZETA, GAMMA = 1.1, -0.1


def adaround(W: np.ndarray, H: np.ndarray, grid: Grid, *, iters: int = 500, lr: float = 0.05,
             lam: float = 1.0, warmup: float = 0.2) -> np.ndarray:
    """AdaRound codes (see module docstring); Adam in numpy, deterministic."""
    Z = np.array(W, np.float64) / grid.scale                        # in code units
    F = np.floor(Z)
    Hn = _undead(H)
    Hn /= _diag(Hn).mean(axis=1)[:, None, None]
    frac = np.clip(Z - F, 0.01, 0.99)
    V = -np.log((ZETA - GAMMA) / (frac - GAMMA) - 1)              # h(V) = frac
    m, v = np.zeros_like(V), np.zeros_like(V)
    start = int(warmup * iters)
    for t in range(1, iters + 1):
        sig = 1 / (1 + np.exp(-V))
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(raw, 0, 1)
        grad = -2 * ((Z - F - h) @ Hn)                              # d/dh of e^T Hn e, e = z - f - h
        if t > start:                                               # + lam sum(1 - |2h - 1|^beta)
            beta = 20 - 18 * (t - start) / max(1, iters - start)
            u = 2 * h - 1
            grad -= lam * 2 * beta * np.sign(u) * np.abs(u) ** (beta - 1)
        grad *= ((raw > 0) & (raw < 1)) * (ZETA - GAMMA) * sig * (1 - sig)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        V -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    h = np.clip(1 / (1 + np.exp(-V)) * (ZETA - GAMMA) + GAMMA, 0, 1)
    return np.clip(F + (h >= 0.5), grid.lo, grid.hi).astype(np.int64)
