# SPDX-License-Identifier: Apache-2.0
"""The integer dialect: what ``integerize`` emits and every backend implements bit-exactly.

- ``quantize(x:f32) {scale, zero_point, bits, signed}`` -> int; ``dequantize(q) {scale, zero_point, axis}`` -> f32.
- ``qconv2d(x, w[, b]) {x_zp, stride, pad, dilation, groups}`` -> i32 ``sum((x - x_zp) * w) + b``,
  padding with ``x_zp`` (real zero). ``qlinear(x, w[, b]) {x_zp}`` -> i32 (``w`` is [out, in]).
  ``qmatmul(a, b) {a_zp, b_zp}`` -> i32 ``(a - a_zp) @ (b - b_zp)``.
- ``requantize(acc, m, s[, lo, hi]) {in_zp, out_zp, qmin, qmax, dtype}``: the dyadic rescale
  ``clamp(((acc - in_zp) * m + 2^(s-1)) >> s) + out_zp, max(qmin, lo), min(qmax, hi))`` in int64;
  ``m`` (int32 in [2^30, 2^31)), ``s`` (in [1, 62]), ``lo``, ``hi`` are constants broadcastable to ``acc``.
- ``qadd(a, b) {a_zp, b_zp, a_m, b_m, shift, out_zp, qmin, qmax, dtype}``:
  ``clamp((((a - a_zp) * a_m + (b - b_zp) * b_m + 2^(shift-1)) >> shift) + out_zp)`` (one rounding).
- ``qmul(a, b) {a_zp, b_zp}`` -> i32 ``(a - a_zp) * (b - b_zp)`` (then ``requantize``).
- ``qsum(x) {axes, x_zp}`` -> i32 window-free sum of ``x - x_zp`` (keepdims);
  ``qavgpool(x) {kernel, stride, pad, ceil_mode, x_zp}`` -> i32 window sums of ``x - x_zp`` (pads add 0).
- ``lut(x, table) {in_min}``: ``table[x - in_min]`` (any unary function, exact by construction).
Data movement (``reshape``, ``transpose``, ``concat``, ``slice``, ``pad``, ``maxpool``) reuses the float ops.

Each op's ``acc_bound(types, ranges, consts, attrs) -> (bound, limit)`` gives the largest magnitude its
arithmetic reaches over operand integer ranges ``ranges[i] = (lo, hi)`` (constants: their own values), and
the limit it must stay below (2^31 for int32 accumulators, 2^63 for the int64 rescale products, the table
length for ``lut``); ``ir.verify_integer`` checks ``bound < limit`` for every node.
"""
from __future__ import annotations

import numpy as np

from ...errors import IRError
from ..types import TensorType, int_range
from .nn import conv2d_nchw, conv_out_type, pool_out_type
from .registry import broadcast_shape, register
from .window import hw_attrs, out_size, pad_nchw, pool_geometry, windows

EXACT_F64 = 1 << 53   # float64 BLAS is exact for integer sums below this bound


def _qparams(a: dict, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a quantize/dequantize node, shaped to broadcast over a rank-``ndim`` tensor."""
    scale = np.asarray(a["scale"], np.float64)
    zp = np.asarray(a["zero_point"], np.int64)
    shape = [1] * ndim
    if "axis" in a:
        shape[a["axis"]] = -1
    else:
        shape = []
    return scale.reshape(shape), zp.reshape(shape)


def _is_int(t: TensorType) -> bool:
    return t.dtype.startswith(("i", "u")) and t.dtype != "i1"


def _require_int(*ts: TensorType) -> None:
    for t in ts:
        if not _is_int(t):
            raise IRError(f"integer op got a {t.dtype} operand")


I32, I64 = 1 << 31, 1 << 63


def _dev(r: tuple[int, int], zp: int) -> int:
    """max |v - zp| over v in the range r."""
    return max(abs(int(r[1]) - int(zp)), abs(int(zp) - int(r[0])))


def _weighted_bound(types, ranges, consts, a, zp_key="x_zp"):
    """max over output channels of  dmax * sum|w_o| + |b_o|  (weights constant), else dmax * K * max|w|."""
    d = _dev(ranges[0], a.get(zp_key, 0))
    w = consts[1]
    if w is not None:
        w = np.abs(np.asarray(w, np.int64)).reshape(w.shape[0], -1)
        per = d * w.sum(axis=1)
        if len(consts) > 2:
            b = consts[2]
            per = per + (np.abs(np.asarray(b, np.int64)).reshape(-1) if b is not None
                         else max(abs(ranges[2][0]), abs(ranges[2][1])))
        return int(per.max(initial=0)), I32
    k = int(np.prod(types[1].shape[1:]))
    bound = d * k * max(abs(ranges[1][0]), abs(ranges[1][1]))
    if len(ranges) > 2:
        bound += max(abs(ranges[2][0]), abs(ranges[2][1]))
    return bound, I32


def _requantize_bound(types, ranges, consts, a):
    m = max(abs(ranges[1][0]), abs(ranges[1][1]))
    s_max = int(ranges[2][1])
    if s_max < 1 or s_max > 62:
        return I64, I64                                       # shift outside [1, 62]: never valid
    return _dev(ranges[0], a.get("in_zp", 0)) * m + (1 << (s_max - 1)), I64


def _qadd_bound(types, ranges, consts, a):
    sh = int(a["shift"])
    if not 1 <= sh <= 62:
        return I64, I64
    return (_dev(ranges[0], a["a_zp"]) * abs(int(a["a_m"])) + _dev(ranges[1], a["b_zp"]) * abs(int(a["b_m"]))
            + (1 << (sh - 1))), I64


def _lut_bound(types, ranges, consts, a):
    """Table indices: x - in_min must lie in [0, len(table))."""
    n = types[1].shape[0]
    lo, hi = int(ranges[0][0]) - int(a["in_min"]), int(ranges[0][1]) - int(a["in_min"])
    return (hi if lo >= 0 else n), n


def _exact_gemm_bound(x: np.ndarray, w: np.ndarray, k: int) -> None:
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0)) * k
    if bound >= EXACT_F64:
        raise IRError(f"integer accumulation bound {bound:.3g} exceeds 2^53")


@register("quantize", 1, integer=True)
def _quantize():
    """Float -> integer with round-half-even and clamp."""
    def infer(t, a):
        from ..types import int_dtype
        return [t[0].with_dtype(a.get("dtype") or int_dtype(a["bits"], a["signed"]))]

    def kernel(x, a):
        lo, hi = int_range(a["bits"], a["signed"])
        scale, zp = _qparams(a, x[0].ndim)
        q = np.clip(np.rint(x[0].astype(np.float64) / scale) + zp, lo, hi)
        return [q.astype(infer([TensorType(x[0].shape, "f32")], a)[0].np_dtype)]
    return infer, kernel


@register("dequantize", 1, integer=True)
def _dequantize():
    """Integer -> float32: ``scale * (q - zp)``."""
    def infer(t, a):
        _require_int(t[0])
        return [t[0].with_dtype("f32")]

    def kernel(x, a):
        scale, zp = _qparams(a, x[0].ndim)
        return [((x[0].astype(np.int64) - zp) * scale).astype(np.float32)]
    return infer, kernel


@register("qconv2d", (2, 3), integer=True, weight=1, bias=2, acc_bound=_weighted_bound)
def _qconv2d():
    """Integer convolution with int32 accumulation."""
    def infer(t, a):
        _require_int(*t)
        return [conv_out_type(t[0], t[1], a, "i32")]

    def kernel(x, a):
        xz = x[0].astype(np.int64) - a.get("x_zp", 0)
        w = x[1].astype(np.int64)
        _exact_gemm_bound(xz, w, w.shape[1] * w.shape[2] * w.shape[3])
        y = np.rint(conv2d_nchw(xz.astype(np.float64), w.astype(np.float64), a)).astype(np.int64)
        if len(x) == 3:
            y += x[2].astype(np.int64).reshape(1, -1, 1, 1)
        return [_to_i32(y)]
    return infer, kernel


def _to_i32(y: np.ndarray) -> np.ndarray:
    if y.size and (y.max() > np.iinfo(np.int32).max or y.min() < np.iinfo(np.int32).min):
        raise IRError("int32 accumulator overflow")
    return y.astype(np.int32)


@register("qlinear", (2, 3), integer=True, weight=1, bias=2, acc_bound=_weighted_bound)
def _qlinear():
    """Integer ``(x - x_zp) @ w.T + b`` with int32 accumulation."""
    def infer(t, a):
        _require_int(*t)
        if t[1].rank != 2 or t[0].shape[-1] != t[1].shape[1]:
            raise IRError(f"qlinear: input {t[0]} does not match weight {t[1]}")
        return [TensorType(t[0].shape[:-1] + (t[1].shape[0],), "i32")]

    def kernel(x, a):
        xz = x[0].astype(np.int64) - a.get("x_zp", 0)
        w = x[1].astype(np.int64)
        _exact_gemm_bound(xz, w, w.shape[1])
        y = np.rint(xz.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
        if len(x) == 3:
            y += x[2].astype(np.int64)
        return [_to_i32(y)]
    return infer, kernel


@register("qmatmul", 2, integer=True,
          acc_bound=lambda t, r, c, a: (t[0].shape[-1] * _dev(r[0], a.get("a_zp", 0)) * _dev(r[1], a.get("b_zp", 0)),
                                        I32))
def _qmatmul():
    """Integer batched matmul of zero-point-shifted operands."""
    def infer(t, a):
        _require_int(*t)
        if t[0].shape[-1] != t[1].shape[-2]:
            raise IRError(f"qmatmul inner dims differ: {t[0]} x {t[1]}")
        batch = broadcast_shape(t[0].shape[:-2], t[1].shape[:-2])
        return [TensorType(batch + (t[0].shape[-2], t[1].shape[-1]), "i32")]

    def kernel(x, a):
        az = x[0].astype(np.int64) - a.get("a_zp", 0)
        bz = x[1].astype(np.int64) - a.get("b_zp", 0)
        _exact_gemm_bound(az, bz, az.shape[-1])
        return [_to_i32(np.rint(np.matmul(az.astype(np.float64), bz.astype(np.float64))).astype(np.int64))]
    return infer, kernel


def rounding_shift(v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(v + 2^(s-1)) >> s`` in int64 (arithmetic shift, ties toward +inf)."""
    s = np.asarray(s, np.int64)
    return (v + (np.int64(1) << (s - 1))) >> s


@register("requantize", (3, 5), integer=True, acc_bound=_requantize_bound)
def _requantize():
    """Dyadic rescale ``((acc - in_zp) * m) >> s`` with rounding, zero point and clamp."""
    def infer(t, a):
        _require_int(*t)
        for c in t[1:]:
            broadcast_shape(t[0].shape, c.shape)
        return [t[0].with_dtype(a["dtype"])]

    def kernel(x, a):
        acc = x[0].astype(np.int64) - a.get("in_zp", 0)
        y = rounding_shift(acc * x[1].astype(np.int64), x[2]) + a.get("out_zp", 0)
        lo, hi = np.int64(a["qmin"]), np.int64(a["qmax"])
        if len(x) >= 4:
            lo = np.maximum(lo, x[3].astype(np.int64))
        if len(x) == 5:
            hi = np.minimum(hi, x[4].astype(np.int64))
        return [np.minimum(np.maximum(y, lo), hi).astype(TensorType((), a["dtype"]).np_dtype)]
    return infer, kernel


@register("qadd", 2, integer=True, acc_bound=_qadd_bound)
def _qadd():
    """Integer add of two rescaled operands with a single rounding."""
    def infer(t, a):
        _require_int(*t)
        return [TensorType(broadcast_shape(t[0].shape, t[1].shape), a["dtype"])]

    def kernel(x, a):
        va = (x[0].astype(np.int64) - a["a_zp"]) * a["a_m"]
        vb = (x[1].astype(np.int64) - a["b_zp"]) * a["b_m"]
        y = rounding_shift(va + vb, a["shift"]) + a["out_zp"]
        return [np.clip(y, a["qmin"], a["qmax"]).astype(TensorType((), a["dtype"]).np_dtype)]
    return infer, kernel


@register("qmul", 2, integer=True,
          acc_bound=lambda t, r, c, a: (_dev(r[0], a.get("a_zp", 0)) * _dev(r[1], a.get("b_zp", 0)), I32))
def _qmul():
    """Integer product of zero-point-shifted operands (int32)."""
    def infer(t, a):
        _require_int(*t)
        return [TensorType(broadcast_shape(t[0].shape, t[1].shape), "i32")]

    def kernel(x, a):
        y = (x[0].astype(np.int64) - a.get("a_zp", 0)) * (x[1].astype(np.int64) - a.get("b_zp", 0))
        return [_to_i32(y)]
    return infer, kernel


@register("qsum", 1, integer=True,
          acc_bound=lambda t, r, c, a: (int(np.prod([t[0].shape[x] for x in {ax % t[0].rank for ax in a["axes"]}]))
                                        * _dev(r[0], a.get("x_zp", 0)), I32))
def _qsum():
    """Sum of ``x - x_zp`` over ``axes`` (keepdims) in int32."""
    def infer(t, a):
        _require_int(t[0])
        axes = {ax % t[0].rank for ax in a["axes"]}
        return [TensorType(tuple(1 if i in axes else d for i, d in enumerate(t[0].shape)), "i32")]

    def kernel(x, a):
        return [_to_i32((x[0].astype(np.int64) - a.get("x_zp", 0)).sum(axis=tuple(a["axes"]), keepdims=True))]
    return infer, kernel


@register("qavgpool", 1, integer=True,
          acc_bound=lambda t, r, c, a: (int(np.prod(hw_attrs(a)[0])) * _dev(r[0], a.get("x_zp", 0)), I32))
def _qavgpool():
    """Window sums of ``x - x_zp`` (padding contributes 0) in int32."""
    def infer(t, a):
        _require_int(t[0])
        return [pool_out_type(t[0], a).with_dtype("i32")]

    def kernel(x, a):
        k, s, p, d = hw_attrs(a)
        xz = x[0].astype(np.int64) - a.get("x_zp", 0)
        (oh, ow), extra = pool_geometry(x[0].shape[2:], a)
        win = windows(pad_nchw(xz, p, 0, extra), k, s, d, (oh, ow))
        return [_to_i32(win.sum(axis=(4, 5)))]
    return infer, kernel


@register("lut", 2, integer=True, acc_bound=_lut_bound)
def _lut():
    """Table lookup ``table[x - in_min]`` (exact integer unary function)."""
    def infer(t, a):
        _require_int(*t)
        if t[1].rank != 1:
            raise IRError("lut table must be 1-D")
        return [t[0].with_dtype(t[1].dtype)]

    def kernel(x, a):
        idx = x[0].astype(np.int64) - a["in_min"]
        if idx.size and (idx.min() < 0 or idx.max() >= x[1].shape[0]):
            raise IRError("lut index out of table range")
        return [x[1][idx]]
    return infer, kernel


_ = out_size  # re-exported helpers used by codegen
