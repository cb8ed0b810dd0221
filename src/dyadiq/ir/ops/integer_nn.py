# SPDX-License-Identifier: Apache-2.0
"""Integer transformer ops: softmax, LayerNorm and embedding lookups on integer codes (issue 16).

All arithmetic is int64 with floor shifts ``>>`` and the integer division of docs/numerics.md:

    div_round(a, b) = floor((2a + b) / (2b))          (b > 0: round half up, for either sign of a)

- ``qsoftmax(x) {axis, mult, frac, c0..c3, out_mult, out_shift, out_zp, qmin, qmax, dtype}`` along ``axis``:
  ``t = max(x) - x >= 0``; ``w = t * mult`` (``mult = round(s_x log2(e) 2^frac)``), so
  ``e^(s_x (x - max)) = 2^-(w / 2^frac)``; ``q = w >> frac`` (the shift), ``f = w & (2^frac - 1)`` (the
  fraction); ``E = poly(f)`` ~ ``2^30 2^-(f / 2^frac)`` (cubic, Horner with floor shifts by ``frac``);
  ``e = E >> min(q, 62)``; ``S = sum(e)``; code ``= div_round(e * out_mult, S << out_shift) + out_zp``
  with ``out_mult = round(2^out_shift / s_y)``, clamped to ``[qmin, qmax]``. ``qsoftmax(x, keep) {.., qmin_in}``:
  codes where ``keep == 0`` are replaced by ``qmin_in`` (the input's smallest code, so ``t`` keeps its range)
  and their ``e`` by 0; ``S = max(sum(e), 1)`` (a row with nothing kept is all ``out_zp``, probability 0).
- ``qlayernorm(x, g, b) {pre, frac, eps_q, shift, out_zp, qmin, qmax, dtype}`` over the last axis (length D):
  ``d = D x - sum(x)`` (``D`` times the centred codes, exact), ``Q = (sum(d^2) << 2 pre) // D + eps_q``,
  ``r = max(isqrt(Q), 1)`` (Newton, ``ISQRT_STEPS`` fixed steps from a power of two above the root),
  ``n = div_round(d << (frac + pre), r)`` (the normalized value times ``2^frac``), code
  ``= ((n g + b + 2^(shift-1)) >> shift) + out_zp`` clamped, with constants ``g = round(gamma / s_y 2^(shift-frac))``,
  ``b = round(beta / s_y 2^shift)`` (int64 vectors of length D).
- ``qdiv(a, b) {a_zp, b_zp, mult, shift, out_zp, qmin, qmax, dtype}``: ``A = a - a_zp``, ``B = b - b_zp``,
  code ``= div_round(sign(B) A mult, |B| << shift) + out_zp`` clamped, ``mult / 2^shift ~ s_a / (s_b s_y)``
  (about 30 significant bits); ``B = 0`` gives the range end of ``A``'s sign (``x / 0 = +-inf``) or ``out_zp``
  for ``0 / 0`` (F.normalize, ConvNeXt V2's response normalization).
- ``qembed(ids, table)``: ``table[clip(ids, 0, rows - 1)]`` (rows of a quantized constant table).

Each ``acc_bound`` returns the largest int64 intermediate over the operand ranges (limit 2^63); the error
bounds against float are in docs/numerics.md ("Transformer ops") and tested in tests/ir/test_integer_nn.py.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import IRError
from ..types import TensorType
from .nn import check_keep
from .registry import norm_axis, register

I64 = 1 << 63
ISQRT_STEPS = 7           # Newton steps: exact floor sqrt for every 0 <= Q < 2^62 (tested)
EXP_BITS = 30             # E = 2^30 * 2^-f
# cubic fit of 2^-f on [0, 1): |error| < 1.1e-4 (relative < 1.9e-4)
EXP_POLY = (0.99989844, -0.69107551, 0.23059298, -0.03950995)


def div_round(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``floor((2a + b) / (2b))`` for ``b > 0``: a / b rounded half up (int64)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return (2 * a + b) // (2 * b)


def bit_length(q: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values (0 for 0), by comparisons only."""
    q = np.asarray(q, np.int64)
    return sum(((q >> k) > 0).astype(np.int64) for k in range(63))


def isqrt(q: np.ndarray) -> np.ndarray:
    """``floor(sqrt(max(q, 1)))`` for int64 ``q < 2^62``: Newton ``x <- min(x, (x + q // x) >> 1)``
    from ``x0 = 2^ceil(bits(q) / 2) >= sqrt(q)``, ``ISQRT_STEPS`` times."""
    q = np.maximum(np.asarray(q, np.int64), 1)
    x = np.int64(1) << ((bit_length(q) + 1) >> 1)
    for _ in range(ISQRT_STEPS):
        x = np.minimum(x, (x + q // x) >> 1)
    return x


def exp_coeffs() -> tuple[int, ...]:
    """The cubic's coefficients scaled by 2^EXP_BITS."""
    return tuple(int(round(c * 2.0**EXP_BITS)) for c in EXP_POLY)


def softmax_codes(x: np.ndarray, a: dict, keep: np.ndarray | None = None) -> np.ndarray:
    """The ``qsoftmax`` kernel (int64); ``keep``: the mask operand (see the module docstring)."""
    ax = a.get("axis", -1)
    v = np.asarray(x, np.int64)
    if keep is not None:
        keep = np.broadcast_to(np.asarray(keep) != 0, v.shape)
        v = np.where(keep, v, np.int64(a["qmin_in"]))
    t = v.max(axis=ax, keepdims=True) - v
    frac = int(a["frac"])
    w = t * np.int64(a["mult"])
    q, f = w >> frac, w & ((np.int64(1) << frac) - 1)
    c0, c1, c2, c3 = (np.int64(a[k]) for k in ("c0", "c1", "c2", "c3"))
    e = ((((c3 * f) >> frac) + c2) * f >> frac) + c1
    e = ((e * f) >> frac) + c0
    e = e >> np.minimum(q, 62)
    if keep is not None:
        e = np.where(keep, e, np.int64(0))
    s = np.maximum(e.sum(axis=ax, keepdims=True), 1) << np.int64(a["out_shift"])
    y = div_round(e * np.int64(a["out_mult"]), s) + a["out_zp"]
    return np.clip(y, a["qmin"], a["qmax"])


def divide_codes(a: np.ndarray, b: np.ndarray, at: dict) -> np.ndarray:
    """The ``qdiv`` kernel (int64; see the module docstring)."""
    A = np.asarray(a, np.int64) - np.int64(at["a_zp"])
    B = np.asarray(b, np.int64) - np.int64(at["b_zp"])
    num = A * np.int64(at["mult"])
    den = np.abs(B) << np.int64(at["shift"])
    q = div_round(np.where(B < 0, -num, num), np.maximum(den, 1))
    q = np.where(B == 0, np.sign(num) << np.int64(40), q)       # x / 0: +-inf clamp to the range, 0 / 0: 0
    return np.clip(q + np.int64(at["out_zp"]), at["qmin"], at["qmax"])


def layernorm_codes(x: np.ndarray, g: np.ndarray, b: np.ndarray, a: dict) -> np.ndarray:
    """The ``qlayernorm`` kernel (int64)."""
    v = np.asarray(x, np.int64)
    dim = v.shape[-1]
    d = dim * v - v.sum(axis=-1, keepdims=True)
    pre, frac = int(a["pre"]), int(a["frac"])
    q = ((d * d).sum(axis=-1, keepdims=True) << (2 * pre)) // dim + np.int64(a["eps_q"])
    n = div_round(d << (frac + pre), isqrt(q))
    sh = np.int64(a["shift"])
    y = ((n * np.asarray(g, np.int64) + np.asarray(b, np.int64) + (np.int64(1) << (sh - 1))) >> sh) + a["out_zp"]
    return np.clip(y, a["qmin"], a["qmax"])


def _span(r) -> int:
    return int(r[1]) - int(r[0])


def _softmax_bound(types, ranges, consts, a):
    n = types[0].shape[norm_axis(a.get("axis", -1), types[0].rank)]
    frac = int(a["frac"])
    w = _span(ranges[0]) * abs(int(a["mult"]))
    horner = 2 * sum(abs(int(a[k])) for k in ("c0", "c1", "c2", "c3")) << frac     # partial sums * f
    e = 1 << (EXP_BITS + 1)
    s = n * e << int(a["out_shift"])
    return max(w, horner, 2 * e * abs(int(a["out_mult"])) + s, 2 * s), I64


def _layernorm_bound(types, ranges, consts, a):
    dim = types[0].shape[-1]
    span = _span(ranges[0])
    sq = dim * (dim * span) ** 2 << (2 * int(a["pre"]))
    # sum(d) = 0 gives sum(d^2) >= d_i^2, so with a = |d_i| 2^pre / sqrt(D): r >= max(1, sqrt(a^2 - 1) - 1),
    # which is >= a / 2 for a >= 3; hence |n| <= 3 sqrt(D) 2^frac + 1
    n = (3 * (math.isqrt(dim) + 1) << int(a["frac"])) + 1
    gmax = int(np.abs(consts[1]).max(initial=0)) if consts[1] is not None else _span(ranges[1])
    bmax = int(np.abs(consts[2]).max(initial=0)) if consts[2] is not None else _span(ranges[2])
    return max(sq + abs(int(a["eps_q"])), 2 * n, n * gmax + bmax + (1 << (int(a["shift"]) - 1))), I64


def _div_bound(types, ranges, consts, a):
    da = max(abs(int(r) - int(a["a_zp"])) for r in ranges[0])
    db = max(abs(int(r) - int(a["b_zp"])) for r in ranges[1])
    return 2 * da * abs(int(a["mult"])) + (db << int(a["shift"])) + (1 << 41), I64


def _int(t: TensorType) -> bool:
    return t.dtype.startswith(("i", "u")) and t.dtype != "i1"


@register("qsoftmax", (1, 2), integer=True, acc_bound=_softmax_bound)
def _qsoftmax():
    """Integer softmax: exponent by shift and a cubic on max-subtracted codes, integer normalization; with a
    keep mask over the kept codes only."""
    def infer(t, a):
        if not _int(t[0]):
            raise IRError(f"qsoftmax needs integer codes, got {t[0].dtype}")
        norm_axis(a.get("axis", -1), t[0].rank)
        if len(t) == 2:
            check_keep(t[0], t[1], "qsoftmax")
            if "qmin_in" not in a:
                raise IRError("qsoftmax with a keep mask needs the attribute qmin_in")
        return [t[0].with_dtype(a["dtype"])]
    return infer, lambda x, a: [softmax_codes(x[0], a, x[1] if len(x) == 2 else None)
                                .astype(TensorType((), a["dtype"]).np_dtype)]


@register("qdiv", 2, integer=True, acc_bound=_div_bound)
def _qdiv():
    """Integer quotient of two quantized activations, rounded half up, clamped to the output range."""
    def infer(t, a):
        if not (_int(t[0]) and _int(t[1])):
            raise IRError("qdiv needs integer operands")
        try:
            shape = tuple(int(d) for d in np.broadcast_shapes(t[0].shape, t[1].shape))
        except ValueError:
            raise IRError(f"qdiv operands {list(t[0].shape)} and {list(t[1].shape)} do not broadcast") from None
        return [TensorType(shape, a["dtype"])]
    return infer, lambda x, a: [divide_codes(x[0], x[1], a).astype(TensorType((), a["dtype"]).np_dtype)]


@register("qlayernorm", 3, integer=True, acc_bound=_layernorm_bound)
def _qlayernorm():
    """Integer LayerNorm over the last axis: exact mean/variance, Newton isqrt, integer division."""
    def infer(t, a):
        if not all(_int(x) for x in t):
            raise IRError("qlayernorm needs integer operands")
        if t[1].shape != t[0].shape[-1:] or t[2].shape != t[0].shape[-1:]:
            raise IRError(f"qlayernorm g/b must be {t[0].shape[-1:]}")
        return [t[0].with_dtype(a["dtype"])]
    return infer, lambda x, a: [layernorm_codes(*x, a).astype(TensorType((), a["dtype"]).np_dtype)]


@register("qembed", 2, integer=True, acc_bound=lambda t, r, c, a: (0, 1))
def _qembed():
    """Rows of an integer table at integer ids (clipped to the table)."""
    def infer(t, a):
        if not (_int(t[0]) and _int(t[1])):
            raise IRError("qembed needs integer ids and table")
        return [TensorType(t[0].shape + t[1].shape[1:], t[1].dtype)]

    def kernel(x, a):
        ids = np.clip(np.asarray(x[0], np.int64), 0, x[1].shape[0] - 1)
        return [np.take(x[1], ids, axis=0)]
    return infer, kernel
