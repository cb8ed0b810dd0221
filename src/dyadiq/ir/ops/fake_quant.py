# SPDX-License-Identifier: Apache-2.0
"""Float-domain quantization ops of imported pre-quantized models (ONNX QDQ / QOperator, torch QAT, PT2E).

They exist only between a frontend and ``passes.fold_fake_quant``, which turns them into QuantTypes:

- ``quantize_linear(x:f32) {scale, zero_point, axis?, bits, signed, qmin?, qmax?}`` -> integer
  ``q = clamp(round_half_even(x / scale) + zp, qmin, qmax)`` (``x / scale`` in float64), stored in the
  smallest dyadiq integer dtype of ``bits`` (``i4``, ``u8``, ``i16``, ...) or in ``dtype`` when given
  (torch keeps 4-bit codes in an int8 tensor);
- ``dequantize_linear(q:int) {scale, zero_point, axis?, bits, signed}`` -> f32 ``scale * (q - zp)``;
- ``fake_quant(x:f32) {same as quantize_linear}`` -> f32 ``dequantize(quantize(x))`` (torch
  ``fake_quantize_*``; also a dequantized constant weight, so folding sees its grid).

``scale`` / ``zero_point`` are tuples (one entry per tensor, or per slice along ``axis``); ``qmin`` /
``qmax`` default to the full range of ``bits`` and may narrow it (torch ``quant_min`` / ``quant_max``).
``quant_type(attrs, shape)`` validates them (positive finite scales, zero points in range, one scale per
slice) and returns the QuantType the values are stored as.
"""
from __future__ import annotations

import numpy as np

from ...errors import IRError
from ..types import QuantType, TensorType, int_dtype, int_range
from .registry import norm_axis, register

QUANT_OPS = frozenset({"quantize_linear", "dequantize_linear", "fake_quant"})
INT_RANGES = {f"{'i' if s else 'u'}{b}": int_range(b, s) for b in (4, 8, 16, 32) for s in (True, False)}
INT_RANGES["i64"] = int_range(64, True)


def quant_type(a: dict, shape: tuple[int, ...]) -> QuantType:
    """The QuantType described by the attributes ``a`` of a quantization op on a tensor of ``shape``."""
    bits, signed = int(a["bits"]), bool(a["signed"])
    if not 2 <= bits <= 32:
        raise IRError(f"bitwidth {bits} out of range 2..32")
    scale = np.asarray(a["scale"], np.float64).reshape(-1)
    zp = np.asarray(a["zero_point"], np.int64).reshape(-1)
    if scale.size == 0:
        raise IRError("no scale given")
    axis = a.get("axis")
    if axis is not None:
        axis = norm_axis(int(axis), len(shape))
        if scale.size != shape[axis]:
            raise IRError(f"{scale.size} scales for axis {axis} of length {shape[axis]} (shape {list(shape)})")
    elif scale.size != 1:
        raise IRError(f"{scale.size} scales but no axis (per-tensor needs one)")
    if zp.size not in (1, scale.size):
        raise IRError(f"{zp.size} zero points for {scale.size} scales")
    bad = ~(np.isfinite(scale) & (scale > 0))
    if bad.any():
        raise IRError(f"scale must be positive and finite, got {scale[bad][0]:.6g}")
    lo, hi = qrange(a)
    if zp.min() < lo or zp.max() > hi:
        z = int(zp[(zp < lo) | (zp > hi)][0])
        raise IRError(f"zero point {z} is out of range [{lo}, {hi}] of {'' if signed else 'u'}int{bits}")
    return QuantType.make(bits, signed, scale, zp, axis)


def qrange(a: dict) -> tuple[int, int]:
    """The clamp range ``[qmin, qmax]`` of a quantization op (inside the range of its ``bits``)."""
    lo, hi = int_range(int(a["bits"]), bool(a["signed"]))
    qmin, qmax = int(a.get("qmin", lo)), int(a.get("qmax", hi))
    if not lo <= qmin <= qmax <= hi:
        raise IRError(f"clamp range [{qmin}, {qmax}] is not inside [{lo}, {hi}]")
    return qmin, qmax


def _shaped(a: dict, rank: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(a["scale"], np.float64)
    zp = np.asarray(a["zero_point"], np.int64)
    shape = [1] * rank
    if a.get("axis") is not None:
        shape[int(a["axis"]) % rank] = -1
    return scale.reshape(shape), (zp.reshape(shape) if zp.size > 1 else zp.reshape(()))


def quantize_codes(x: np.ndarray, a: dict) -> np.ndarray:
    """``clamp(round_half_even(x / scale) + zp, qmin, qmax)`` as int64."""
    scale, zp = _shaped(a, x.ndim)
    lo, hi = qrange(a)
    return np.clip(np.rint(np.asarray(x, np.float64) / scale) + zp, lo, hi).astype(np.int64)


def dequantize_codes(q: np.ndarray, a: dict) -> np.ndarray:
    """``scale * (q - zp)`` as float32 (one rounding of the exact float64 product)."""
    scale, zp = _shaped(a, q.ndim)
    return ((np.asarray(q, np.int64) - zp) * scale).astype(np.float32)


def _check(t: TensorType, a: dict, want_float: bool) -> None:
    if t.is_float != want_float:
        raise IRError(f"expected a {'float' if want_float else 'integer'} operand, got {t.dtype}")
    quant_type(a, t.shape)


@register("quantize_linear", 1)
def _quantize_linear():
    """Float -> integer codes (round half to even, clamp)."""
    def infer(t, a):
        _check(t[0], a, True)
        dt = a.get("dtype") or int_dtype(int(a["bits"]), bool(a["signed"]))
        if dt not in INT_RANGES or INT_RANGES[dt][0] > qrange(a)[0] or INT_RANGES[dt][1] < qrange(a)[1]:
            raise IRError(f"dtype {dt!r} cannot hold the codes [{qrange(a)[0]}, {qrange(a)[1]}]")
        return [t[0].with_dtype(dt)]

    def kernel(x, a):
        return [quantize_codes(x[0], a).astype(infer([TensorType(x[0].shape, "f32")], a)[0].np_dtype)]
    return infer, kernel


@register("dequantize_linear", 1)
def _dequantize_linear():
    """Integer codes -> float32 ``scale * (q - zp)``."""
    def infer(t, a):
        _check(t[0], a, False)
        return [t[0].with_dtype("f32")]

    def kernel(x, a):
        return [dequantize_codes(x[0], a)]
    return infer, kernel


@register("fake_quant", 1)
def _fake_quant():
    """``dequantize(quantize(x))`` in float."""
    def infer(t, a):
        _check(t[0], a, True)
        return [t[0]]

    def kernel(x, a):
        return [dequantize_codes(quantize_codes(x[0], a), a).astype(x[0].dtype, copy=False)]
    return infer, kernel
