# SPDX-License-Identifier: Apache-2.0
"""Value types: ``TensorType(shape, dtype)`` and ``QuantType`` (how a float tensor is stored as integers).

A QuantType says ``real = scale * (q - zero_point)`` with ``q`` in ``[qmin, qmax]`` of a ``bits``-wide
integer; per-tensor when ``axis is None`` (one scale/zero point), else per-channel along ``axis``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import IRError

# dyadiq dtype name -> numpy dtype used to hold it (sub-byte ints live in int8/uint8 containers)
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32), "f64": np.dtype(np.float64),
    "i4": np.dtype(np.int8), "u4": np.dtype(np.uint8),
    "i8": np.dtype(np.int8), "u8": np.dtype(np.uint8),
    "i16": np.dtype(np.int16), "u16": np.dtype(np.uint16),
    "i32": np.dtype(np.int32), "i64": np.dtype(np.int64), "i1": np.dtype(np.bool_),
}
FLOAT_DTYPES = frozenset({"f32", "f64"})
DEFAULT_MAX_ELEMENTS = 1 << 30      # a tensor type over this many elements is refused before anything is allocated


def max_elements() -> int:
    """The largest tensor (elements) a type may describe: ``$DYADIQ_MAX_ELEMENTS``, else 2^30."""
    v = os.environ.get("DYADIQ_MAX_ELEMENTS")
    try:
        return int(v) if v else DEFAULT_MAX_ELEMENTS
    except ValueError:
        raise IRError(f"DYADIQ_MAX_ELEMENTS={v!r} is not an integer") from None
_FROM_NUMPY = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.int8): "i8",
               np.dtype(np.uint8): "u8", np.dtype(np.int16): "i16", np.dtype(np.uint16): "u16",
               np.dtype(np.int32): "i32", np.dtype(np.int64): "i64", np.dtype(np.bool_): "i1"}


def dtype_of(arr: np.ndarray) -> str:
    """The dyadiq dtype name of a numpy array."""
    try:
        return _FROM_NUMPY[np.dtype(arr.dtype)]
    except KeyError:
        raise IRError(f"unsupported numpy dtype {arr.dtype}") from None


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """(qmin, qmax) of a ``bits``-wide integer."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def int_dtype(bits: int, signed: bool) -> str:
    """Smallest dyadiq integer dtype that holds ``bits``-wide values."""
    for b in (4, 8, 16, 32, 64):
        if bits <= b:
            return f"{'i' if signed else 'u'}{b}" if b != 64 or signed else "i64"
    raise IRError(f"no integer dtype holds {bits} bits")


@dataclass(frozen=True, slots=True)
class TensorType:
    """A static shape and an element type (``f32``, ``i8``, ``i32``, ...)."""

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise IRError(f"unknown dtype {self.dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise IRError(f"shape {self.shape} must be non-negative ints")
        if math.prod(self.shape) > max_elements():
            raise IRError(f"tensor of shape {list(self.shape)} has {math.prod(self.shape):,} elements, over the "
                          f"limit of {max_elements():,} (set DYADIQ_MAX_ELEMENTS to raise it)")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True, slots=True)
class QuantType:
    """``real = scale * (q - zero_point)``, ``q`` a ``bits``-wide (un)signed int; per-channel on ``axis``."""

    bits: int
    signed: bool
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self):
        if not 2 <= self.bits <= 32:
            raise IRError(f"bitwidth {self.bits} out of range 2..32")
        if len(self.scale) == 0 or len(self.scale) != len(self.zero_point):
            raise IRError(f"scale ({len(self.scale)}) and zero point ({len(self.zero_point)}) lengths differ")
        if self.axis is None and len(self.scale) != 1:
            raise IRError("per-tensor quantization needs exactly one scale")
        if not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise IRError(f"scales must be finite and positive, got min {min(self.scale)}")
        lo, hi = self.qrange
        if not all(lo <= z <= hi for z in self.zero_point):
            raise IRError(f"zero point out of range [{lo}, {hi}]")

    @classmethod
    def make(cls, bits: int, signed: bool, scale, zero_point=0, axis: int | None = None) -> "QuantType":
        """Build from scalars or arrays (converted to tuples of Python floats / ints)."""
        s = tuple(float(v) for v in np.asarray(scale, dtype=np.float64).reshape(-1))
        z = np.asarray(zero_point, dtype=np.int64).reshape(-1)
        if z.size == 1 and len(s) > 1:
            z = np.repeat(z, len(s))
        return cls(int(bits), bool(signed), s, tuple(int(v) for v in z), axis)

    @property
    def qrange(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def storage_dtype(self) -> str:
        return int_dtype(self.bits, self.signed)

    def scale_array(self, rank: int) -> np.ndarray:
        """Scales shaped to broadcast against a tensor of ``rank``."""
        return self._shaped(np.asarray(self.scale, np.float64), rank)

    def zp_array(self, rank: int) -> np.ndarray:
        """Zero points shaped to broadcast against a tensor of ``rank``."""
        return self._shaped(np.asarray(self.zero_point, np.int64), rank)

    def _shaped(self, a: np.ndarray, rank: int) -> np.ndarray:
        if self.axis is None:
            return a.reshape(())
        shape = [1] * rank
        shape[self.axis % rank] = a.size
        return a.reshape(shape)

    def __str__(self) -> str:
        kind = f"{'i' if self.signed else 'u'}{self.bits}"
        if self.axis is None:
            return f"{kind}(s={self.scale[0]:.4g}, z={self.zero_point[0]})"
        return f"{kind}(axis={self.axis}, {len(self.scale)} scales)"
