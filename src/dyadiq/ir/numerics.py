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
