# SPDX-License-Identifier: Apache-2.0
"""The numerics contract (see docs/numerics.md), shared by passes, interpreter and code generators.

- quantize:  ``q = clamp(round_half_even(x / scale) + zp, qmin, qmax)`` (division in float64)
- dequantize: ``x = scale * (q - zp)``
"""
from __future__ import annotations

import numpy as np

from .types import QuantType


def quantize(x: np.ndarray, q: QuantType) -> np.ndarray:
    """Float -> integers of ``q`` (held in int64)."""
    r = x.ndim
    v = np.rint(np.asarray(x, np.float64) / q.scale_array(r)) + q.zp_array(r)
    lo, hi = q.qrange
    return np.clip(v, lo, hi).astype(np.int64)


def dequantize(v: np.ndarray, q: QuantType, dtype=np.float32) -> np.ndarray:
    """Integers of ``q`` -> float."""
    r = v.ndim
    return ((np.asarray(v, np.int64) - q.zp_array(r)) * q.scale_array(r)).astype(dtype)


def fake_quant(x: np.ndarray, q: QuantType) -> np.ndarray:
    """``dequantize(quantize(x))`` in x's float dtype."""
    return dequantize(quantize(x, q), q, x.dtype if x.dtype.kind == "f" else np.float32)


def dyadic(multiplier, *, what: str = "multiplier") -> tuple[np.ndarray, np.ndarray]:
    """Real multipliers ``M`` -> (int32 ``m`` in [2^30, 2^31), shift ``s`` in [1, 62]) with ``M ~ m / 2^s``.

    Raises ValueError when some ``M`` is not positive-finite or needs a shift outside [1, 62].
    """
    M = np.asarray(multiplier, np.float64)
    if not np.all(np.isfinite(M)) or np.any(M <= 0):
        raise ValueError(f"{what} must be positive and finite, got {M.min() if M.size else M}")
    mant, exp = np.frexp(M)                         # M = mant * 2^exp, mant in [0.5, 1)
    m = np.rint(mant * (1 << 31)).astype(np.int64)
    carry = m == (1 << 31)
    m = np.where(carry, m >> 1, m)
    exp = exp + carry
    s = 31 - exp.astype(np.int64)
    if np.any(s < 1) or np.any(s > 62):
        bad = M.reshape(-1)[np.argmax(((s < 1) | (s > 62)).reshape(-1))]
        raise ValueError(f"{what} {bad:.6g} is outside the dyadic range [2^-31, 2^30)")
    return m.astype(np.int32), s


def requantize_ref(acc, m, s, out_zp: int, qmin: int, qmax: int, in_zp: int = 0) -> np.ndarray:
    """Reference dyadic requantize in int64 (the contract's formula)."""
    v = (np.asarray(acc, np.int64) - in_zp) * np.asarray(m, np.int64)
    s = np.asarray(s, np.int64)
    return np.clip(((v + (np.int64(1) << (s - 1))) >> s) + out_zp, qmin, qmax)
