# SPDX-License-Identifier: Apache-2.0
"""Exact TOSA forms of dyadiq's ``requantize`` and ``qadd`` (pure integer math; no MLIR here).

``requantize``: ``y = clamp(((v * m + 2^(s-1)) >> s) + zp, lo, hi)`` with ``v = acc - in_zp`` is TOSA
``rescale`` (``scale32``, ``SINGLE_ROUND``, ``per_channel``), whose spec computes
``(v * m + 2^(s-1)) >> s`` in int64 and then adds ``zp`` in int32, provided (its REQUIREs)

    2 <= s <= 62,   -2^(s-1) <= v < 2^(s-1),   |(v * m + 2^(s-1)) >> s| + |zp| < 2^31.

``rescale_plan`` checks them for the largest ``|v|`` the input can hold (its dtype, or a qconv/qlinear's
proven ``acc_bits``). Where they fail, ``v`` is first clamped to ``[A_lo, A_hi]``: ``y`` is monotone in
``v`` (``m >= 0``), ``A_hi`` is the smallest ``v`` whose output already reaches ``hi`` and ``A_lo`` the
largest whose output is still ``<= lo``, so the clamp changes no output and bounds ``|v|`` by about
``2^16 / M``, inside every REQUIRE (``m >= 2^30`` gives ``2^16 * 2^s / m < 2^(s-1)``). ``s = 1``
(``M >= 2^29``) has no TOSA form and is refused.

``qadd``: ``y = clamp(((va * a_m + vb * b_m + 2^(sh-1)) >> sh) + zp)`` with ``va = a - a_zp``,
``vb = b - b_zp`` (8-bit operands: ``|va|, |vb| <= 255``) in int32 arithmetic only. Split each multiplier
in base 2^16: ``a_m = a1 * 2^16 + a0`` (``0 <= a0 < 2^16``, ``a1 < 2^15``); then

    P0 = va * a0 + vb * b0          |P0| < 2 * 255 * 2^16 < 2^25
    P1 = va * a1 + vb * b1          |P1| < 2 * 255 * 2^15 < 2^24
    T + 2^(sh-1) = 2^16 * (P1 + 2^(sh-17)) + P0                   (17 <= sh)
    floor((T + 2^(sh-1)) / 2^sh) = (P1 + 2^(sh-17) + (P0 >> 16)) >> (sh - 16)

because ``floor((2^16 X + P0) / 2^sh) = floor((X + floor(P0 / 2^16)) / 2^(sh-16))`` for integer ``X``.
The sum is below ``2^24 + 2^9 + 2^(sh-17) < 2^31`` for ``sh <= 47`` and every shift is in [0, 31];
``qadd_plan`` refuses other shifts (``M >= 2^14`` or ``<= 2^-16``: no real add has them). 16-bit
operands take three base-2^13 digits the same way (``qadd_plan``).
"""
from __future__ import annotations

import numpy as np

INT32_MAX = (1 << 31) - 1


def _y(v: int, m: int, s: int) -> int:
    return (v * m + (1 << (s - 1))) >> s


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def saturating_bounds(m: int, s: int, zp: int, lo: int, hi: int) -> tuple[int, int]:
    """``(A_lo, A_hi)``: every ``v >= A_hi`` gives ``hi`` and every ``v <= A_lo`` gives ``lo``."""
    a_hi = _ceil_div((hi - zp) * (1 << s) - (1 << (s - 1)), m)           # smallest v with y + zp >= hi
    a_lo = _ceil_div((lo - zp + 1) * (1 << s) - (1 << (s - 1)), m) - 1   # largest v with y + zp <= lo
    return a_lo, a_hi


def rescale_fits(vmax: int, m: int, s: int, zp: int) -> bool:
    """True when ``|v| <= vmax`` meets every REQUIRE of TOSA ``rescale`` for ``(m, s, zp)``."""
    if not 2 <= s <= 62 or vmax >= (1 << (s - 1)):
        return False
    return max(abs(_y(vmax, m, s)), abs(_y(-vmax, m, s))) + abs(zp) <= INT32_MAX


def rescale_plan(vmax: int, m: np.ndarray, s: np.ndarray, zp: int, lo: np.ndarray, hi: np.ndarray):
    """``None`` when a plain rescale is exact for ``|v| <= vmax``, else per-channel ``(A_lo, A_hi)`` int64
    arrays (shape of ``m``) to clamp ``v`` to first. ValueError for a shift outside [2, 62]."""
    m, s = np.asarray(m, np.int64), np.asarray(s, np.int64)
    if s.size and (s.min() < 2 or s.max() > 62):
        raise ValueError(f"requantize shift {int(s.min()) if s.min() < 2 else int(s.max())} is outside "
                         f"TOSA rescale's [2, 62] (multiplier >= 2^29)")
    mb, sb, lob, hib = np.broadcast_arrays(m, s, np.asarray(lo, np.int64), np.asarray(hi, np.int64))
    if all(rescale_fits(vmax, int(a), int(b), zp) for a, b in zip(mb.reshape(-1), sb.reshape(-1))):
        return None
    bounds = [saturating_bounds(int(a), int(b), zp, int(c), int(d))
              for a, b, c, d in zip(mb.reshape(-1), sb.reshape(-1), lob.reshape(-1), hib.reshape(-1))]
    a_lo = np.array([b[0] for b in bounds], np.int64).reshape(mb.shape)
    a_hi = np.array([b[1] for b in bounds], np.int64).reshape(mb.shape)
    for a, b, x, y in zip(mb.reshape(-1), sb.reshape(-1), a_lo.reshape(-1), a_hi.reshape(-1)):
        if not rescale_fits(max(abs(int(x)), abs(int(y))), int(a), int(b), zp):      # cannot happen (docstring)
            raise ValueError(f"requantize (m={a}, s={b}) has no exact TOSA rescale")
    return a_lo, a_hi


def qadd_plan(a_m: int, b_m: int, shift: int, vmax: int) -> dict:
    """Digits and shifts of the int32 ``qadd`` form (module docstring); ValueError when it does not apply.

    8-bit operands (``vmax <= 255``): two base-2^16 digits; 16-bit (``vmax <= 65535``): three base-2^13
    digits, ``|P_j| < 2 * 2^16 * 2^13 = 2^30``, shift in [27, 56] (same argument, one more carry step)."""
    if vmax <= 255:
        k, d = 16, 2
    elif vmax <= 65535:
        k, d = 13, 3
    else:
        raise ValueError("qadd of operands wider than 16 bits has no int32 TOSA form here")
    lo, hi = k * (d - 1) + 1, k * (d - 1) + 31
    if not lo <= shift <= hi:
        raise ValueError(f"qadd shift {shift} is outside [{lo}, {hi}] (the int32 TOSA form's range)")
    for mm in (a_m, b_m):
        if not 0 <= mm < (1 << 31):
            raise ValueError(f"qadd multiplier {mm} is not in [0, 2^31)")
    mask = (1 << k) - 1
    return {"k": k, "a": [(a_m >> (k * j)) & mask for j in range(d - 1)] + [a_m >> (k * (d - 1))],
            "b": [(b_m >> (k * j)) & mask for j in range(d - 1)] + [b_m >> (k * (d - 1))],
            "round": 1 << (shift - 1 - k * (d - 1)), "shift": shift - k * (d - 1)}


def qadd_int32(va: np.ndarray, vb: np.ndarray, p: dict) -> np.ndarray:
    """The int32 form of ``qadd_plan`` in numpy, each step checked against int32 (reference for tests):
    ``c = 0; for j < d-1: c = (P_j + c) >> k``; then ``(P_top + c + round) >> shift``."""
    def i32(x):
        x = np.asarray(x, np.int64)
        assert x.size == 0 or (x.min() >= -(1 << 31) and x.max() <= INT32_MAX), "int32 overflow"
        return x
    va, vb = np.asarray(va, np.int64), np.asarray(vb, np.int64)
    carry = np.zeros(np.broadcast_shapes(va.shape, vb.shape), np.int64)
    for j, (da, db) in enumerate(zip(p["a"], p["b"])):
        pj = i32(i32(i32(va * da) + i32(vb * db)) + carry)
        if j < len(p["a"]) - 1:
            carry = pj >> p["k"]
    return i32(pj + p["round"]) >> p["shift"]
