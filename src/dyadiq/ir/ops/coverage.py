# SPDX-License-Identifier: Apache-2.0
"""Float ops that real detectors, segmenters and OCR models need beyond the core set (issue 15).

Each op is registered like the core ones (``@register(name, arity)`` -> (infer, kernel)); none has an
integer lowering yet unless ``passes.integerize`` gives it one. ``UNARY`` lists the elementwise
activations a lookup table can lower (one input, one output, same shape and dtype).

- Activations: ``elu {alpha}``: ``x if x > 0 else alpha (e^x - 1)``; ``selu {alpha, gamma}``:
  ``gamma x if x > 0 else gamma alpha (e^x - 1)``; ``celu {alpha}``: ``max(0, x) + min(0, alpha (e^(x/alpha) - 1))``;
  ``mish = x tanh(softplus(x))``; ``softplus = log(1 + e^x)``; ``softsign = x / (1 + |x|)``;
  ``thresholded_relu {alpha}``: ``x if x > alpha else 0``; ``shrink {lambd, bias}``; trigonometric and
  rounding functions (``round`` is half-to-even).
- Predicates -> ``i1``: ``equal less less_equal greater greater_equal`` (broadcasting), ``logical_and/or/xor/not``,
  ``isnan``, ``isinf {detect_positive, detect_negative}``; ``where(cond, a, b)``; ``mod {fmod}`` (fmod: sign of
  the dividend, else of the divisor); ``bitshift {direction}``; ``bitwise_and/or/xor/not``; ``cast {to}``.
- Reductions along one axis: ``argmax`` / ``argmin {axis, keepdims, select_last_index}`` -> ``i64``;
  ``reduce_prod {axes, keepdims}``; ``cumsum {axis, exclusive, reverse}``; ``hardmax {axis}`` (one-hot of the
  first maximum); ``topk {k, axis, largest, sorted}`` -> (values, ``i64`` indices); ``gather_elements {axis}``;
  ``einsum {equation}``.
- ``resize(x) {size, scales, mode, coord, nearest_mode, cubic_a, exclude_outside, antialias, roi, extrapolation}``:
  separable interpolation, axis by axis, as ONNX Resize defines it. Output index ``i`` of an axis with input
  length ``n``, output length ``m`` and scale ``s`` maps to the source coordinate ``x`` given by ``coord``:
  ``half_pixel (i + 1/2)/s - 1/2``; ``pytorch_half_pixel`` the same but ``-1/2`` when ``m == 1``;
  ``align_corners i (n - 1)/(m - 1)``; ``asymmetric i/s``; ``half_pixel_symmetric``; ``tf_crop_and_resize``
  (``roi``, out-of-range -> ``extrapolation``). ``nearest`` takes one tap (``nearest_mode``
  round_prefer_floor | round_prefer_ceil | floor | ceil) and is a pure gather; ``linear`` two taps
  ``(1 - r, r)``; ``cubic`` four taps with coefficient ``cubic_a``; taps off the edge read the edge pixel.
  ``antialias`` (downsampling) widens the linear/cubic filter by ``1/s``.
- ``conv_transpose2d(x, w[, b]) {stride, pad=(t,l,b,r), dilation, groups, output_padding=(h, w)}``, ``w`` is
  ``[C_in, C_out/groups, KH, KW]``; ``out = (n - 1) s - pad_lo - pad_hi + d (k - 1) + 1 + output_padding``.
  It is the conv2d of the zero-stuffed input (``s - 1`` zeros between pixels) with the flipped, transposed
  kernel, padded by ``d (k - 1) - pad`` (negative: cropped).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import IRError
from ..types import DTYPES, TensorType
from .nn import conv2d_nchw
from .registry import broadcast_shape, norm_axis, register, same_dtype


# ---- elementwise activations (LUT-able) --------------------------------------------------------------
def _c(v, x):
    return np.asarray(v, x.dtype)


def _elu(x, a):
    al = _c(a.get("alpha", 1.0), x)
    return np.where(x > 0, x, al * np.expm1(np.minimum(x, 0)))


def _selu(x, a):
    al, ga = _c(a.get("alpha", 1.6732632423543772), x), _c(a.get("gamma", 1.0507009873554805), x)
    return np.where(x > 0, ga * x, ga * (al * np.exp(np.minimum(x, 0)) - al))


def _celu(x, a):
    al = _c(a.get("alpha", 1.0), x)
    return np.maximum(x, 0) + np.minimum(0, al * np.expm1(np.minimum(x, 0) / al))


def _softplus(x, a=None):
    return np.logaddexp(x, _c(0, x))


def _shrink(x, a):
    lam, bias = _c(a.get("lambd", 0.5), x), _c(a.get("bias", 0.0), x)
    return np.where(x < -lam, x + bias, np.where(x > lam, x - bias, _c(0, x)))


UNARY = {
    "elu": _elu, "selu": _selu, "celu": _celu,
    "mish": lambda x, a: x * np.tanh(_softplus(x)),
    "softplus": _softplus,
    "softsign": lambda x, a: x / (1 + np.abs(x)),
    "thresholded_relu": lambda x, a: np.where(x > _c(a.get("alpha", 1.0), x), x, _c(0, x)),
    "shrink": _shrink,
    "sin": lambda x, a: np.sin(x), "cos": lambda x, a: np.cos(x), "tan": lambda x, a: np.tan(x),
    "asin": lambda x, a: np.arcsin(x), "acos": lambda x, a: np.arccos(x), "atan": lambda x, a: np.arctan(x),
    "sinh": lambda x, a: np.sinh(x), "cosh": lambda x, a: np.cosh(x), "asinh": lambda x, a: np.arcsinh(x),
    "acosh": lambda x, a: np.arccosh(x), "atanh": lambda x, a: np.arctanh(x),
    "floor": lambda x, a: np.floor(x), "ceil": lambda x, a: np.ceil(x), "round": lambda x, a: np.round(x),
    "sign": lambda x, a: np.sign(x),
}


def _same(fn):
    def infer(t, a):
        return [t[0]]

    def kernel(x, a):
        return [np.asarray(fn(x[0], a)).astype(x[0].dtype, copy=False)]
    return lambda: (infer, kernel)


for _name, _fn in UNARY.items():
    register(_name, 1, doc=f"elementwise {_name}", pointwise=True)(_same(_fn))


# ---- predicates, selection, integer arithmetic ---------------------------------------------------------
def _to_bool(fn, arity: int):
    def infer(t, a):
        shape = t[0].shape if arity == 1 else broadcast_shape(t[0].shape, t[1].shape)
        if arity == 2:
            same_dtype(t)
        return [TensorType(shape, "i1")]

    def kernel(x, a):
        return [np.asarray(fn(*x[:arity], a), np.bool_)]
    return lambda: (infer, kernel)


PREDICATES = {
    "equal": (2, lambda x, y, a: x == y), "less": (2, lambda x, y, a: x < y),
    "less_equal": (2, lambda x, y, a: x <= y), "greater": (2, lambda x, y, a: x > y),
    "greater_equal": (2, lambda x, y, a: x >= y),
    "logical_and": (2, lambda x, y, a: np.logical_and(x, y)), "logical_or": (2, lambda x, y, a: np.logical_or(x, y)),
    "logical_xor": (2, lambda x, y, a: np.logical_xor(x, y)), "logical_not": (1, lambda x, a: np.logical_not(x)),
    "isnan": (1, lambda x, a: np.isnan(x)),
    "isinf": (1, lambda x, a: (np.isposinf(x) if a.get("detect_positive", True) else False)
              | (np.isneginf(x) if a.get("detect_negative", True) else False)),
}
for _name, (_n, _fn) in PREDICATES.items():
    register(_name, _n, doc=f"{_name} -> i1")(_to_bool(_fn, _n))
INTEGER_PREDICATES = frozenset(PREDICATES) - {"isnan", "isinf"}        # meaningful on integer / i1 values


@register("where", 3)
def _where():
    """``cond ? a : b`` with broadcasting; ``cond`` is i1."""
    def infer(t, a):
        if t[0].dtype != "i1":
            raise IRError(f"where: condition must be i1, got {t[0].dtype}")
        return [TensorType(broadcast_shape(t[0].shape, t[1].shape, t[2].shape), same_dtype(t[1:]))]
    return infer, lambda x, a: [np.where(x[0], x[1], x[2]).astype(x[1].dtype, copy=False)]


def _int_binary(fn):
    def infer(t, a):
        return [TensorType(broadcast_shape(t[0].shape, t[1].shape), same_dtype(t))]

    def kernel(x, a):
        with np.errstate(all="ignore"):
            return [np.asarray(fn(x[0], x[1], a)).astype(x[0].dtype, copy=False)]
    return lambda: (infer, kernel)


def _shift(x, y, a):
    if a.get("direction", "LEFT") not in ("LEFT", "RIGHT"):
        raise IRError(f"bitshift direction {a.get('direction')!r}")
    return np.left_shift(x, y) if a.get("direction", "LEFT") == "LEFT" else np.right_shift(x, y)


for _name, _fn in {"mod": lambda x, y, a: np.fmod(x, y) if a.get("fmod", False) else np.mod(x, y),
                   "bitshift": _shift,
                   "bitwise_and": lambda x, y, a: np.bitwise_and(x, y),
                   "bitwise_or": lambda x, y, a: np.bitwise_or(x, y),
                   "bitwise_xor": lambda x, y, a: np.bitwise_xor(x, y)}.items():
    register(_name, 2, doc=f"elementwise {_name}")(_int_binary(_fn))
register("bitwise_not", 1, doc="elementwise bitwise not")(_same(lambda x, a: np.invert(x)))


@register("cast", 1)
def _cast():
    """Convert to dtype ``to`` (float -> int truncates toward zero)."""
    def infer(t, a):
        if a["to"] not in DTYPES:
            raise IRError(f"cast to unknown dtype {a['to']!r}")
        return [TensorType(t[0].shape, a["to"])]

    def kernel(x, a):
        with np.errstate(all="ignore"):
            return [np.asarray(x[0]).astype(DTYPES[a["to"]])]
    return infer, kernel


# ---- reductions and selections along an axis -----------------------------------------------------------
def _arg(fn_first):
    def infer(t, a):
        ax = norm_axis(a.get("axis", 0), t[0].rank)
        keep = a.get("keepdims", True)
        shape = tuple(1 if i == ax else d for i, d in enumerate(t[0].shape) if keep or i != ax)
        return [TensorType(shape, "i64")]

    def kernel(x, a):
        v = x[0]
        ax = norm_axis(a.get("axis", 0), v.ndim)
        if a.get("select_last_index", False):
            flipped = np.flip(v, axis=ax)
            idx = v.shape[ax] - 1 - fn_first(flipped, axis=ax)
        else:
            idx = fn_first(v, axis=ax)
        idx = np.asarray(idx, np.int64)
        return [np.expand_dims(idx, ax) if a.get("keepdims", True) else idx]
    return lambda: (infer, kernel)


register("argmax", 1, doc="index of the (first or last) maximum along axis")(_arg(np.argmax))
register("argmin", 1, doc="index of the (first or last) minimum along axis")(_arg(np.argmin))


@register("reduce_prod", 1)
def _reduce_prod():
    """Product over ``axes``."""
    def infer(t, a):
        r = t[0].rank
        axes = {norm_axis(ax, r) for ax in a.get("axes", tuple(range(r)))}
        keep = a.get("keepdims", True)
        return [TensorType(tuple(1 if i in axes else d for i, d in enumerate(t[0].shape) if keep or i not in axes),
                           t[0].dtype)]

    def kernel(x, a):
        axes = tuple(a.get("axes", tuple(range(x[0].ndim))))
        return [np.asarray(np.prod(x[0], axis=axes, keepdims=a.get("keepdims", True))).astype(x[0].dtype)]
    return infer, kernel


@register("cumsum", 1)
def _cumsum():
    """Cumulative sum along ``axis`` (``exclusive``: shifted by one; ``reverse``: from the end)."""
    def kernel(x, a):
        v = x[0]
        ax = norm_axis(a["axis"], v.ndim)
        if a.get("reverse", False):
            v = np.flip(v, axis=ax)
        y = np.cumsum(v, axis=ax, dtype=v.dtype)
        if a.get("exclusive", False):
            y = np.concatenate([np.zeros_like(np.take(y, [0], axis=ax)), np.take(y, range(y.shape[ax] - 1), axis=ax)],
                               axis=ax) if y.shape[ax] else y
        return [np.flip(y, axis=ax).copy() if a.get("reverse", False) else y]
    return (lambda t, a: [t[0]]), kernel


@register("hardmax", 1)
def _hardmax():
    """One-hot of the first maximum along ``axis``."""
    def kernel(x, a):
        v = x[0]
        ax = norm_axis(a.get("axis", -1), v.ndim)
        idx = np.expand_dims(np.argmax(v, axis=ax), ax)
        y = np.zeros_like(v)
        np.put_along_axis(y, idx, 1, axis=ax)
        return [y]
    return (lambda t, a: [t[0]]), kernel


@register("topk", 1)
def _topk():
    """(values, i64 indices) of the ``k`` largest (or smallest) along ``axis``; ties: lower index first."""
    def infer(t, a):
        ax = norm_axis(a.get("axis", -1), t[0].rank)
        k = int(a["k"])
        if not 0 <= k <= t[0].shape[ax]:
            raise IRError(f"topk: k={k} out of range for dim {t[0].shape[ax]}")
        shape = tuple(k if i == ax else d for i, d in enumerate(t[0].shape))
        return [TensorType(shape, t[0].dtype), TensorType(shape, "i64")]

    def kernel(x, a):
        v = x[0]
        ax = norm_axis(a.get("axis", -1), v.ndim)
        key = -v if a.get("largest", True) else v
        if v.dtype.kind == "u" and a.get("largest", True):
            key = -v.astype(np.int64)
        idx = np.argsort(key, axis=ax, kind="stable")
        idx = np.take(idx, range(int(a["k"])), axis=ax)
        return [np.take_along_axis(v, idx, axis=ax), idx.astype(np.int64)]
    return infer, kernel


@register("gather_elements", 2)
def _gather_elements():
    """``y[i][j][k] = x[index[i][j][k]][j][k]`` along ``axis`` (negative indices wrap)."""
    def infer(t, a):
        norm_axis(a.get("axis", 0), t[0].rank)
        if t[1].dtype not in ("i32", "i64") or t[1].rank != t[0].rank:
            raise IRError(f"gather_elements: index must be i32/i64 of rank {t[0].rank}, got {t[1]}")
        return [TensorType(t[1].shape, t[0].dtype)]

    def kernel(x, a):
        ax = norm_axis(a.get("axis", 0), x[0].ndim)
        i = x[1].astype(np.int64)
        i = np.where(i < 0, i + x[0].shape[ax], i)
        return [np.take_along_axis(x[0], i, axis=ax)]
    return infer, kernel


@register("einsum", (1, 16))
def _einsum():
    """``numpy.einsum(equation, *inputs)``."""
    def infer(t, a):
        y = np.einsum(a["equation"], *[np.zeros(ti.shape, ti.np_dtype) for ti in t])
        return [TensorType(tuple(y.shape), same_dtype(t))]
    return infer, lambda x, a: [np.asarray(np.einsum(a["equation"], *x)).astype(x[0].dtype, copy=False)]


# ---- resize ------------------------------------------------------------------------------------------
COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
RESIZE_MODES = ("nearest", "linear", "cubic")


def _source_coords(coord: str, n: int, m: int, s: float, roi: tuple[float, float] | None):
    """(x [m], extrapolated mask or None): the source coordinate of each output index of one axis."""
    y = np.arange(m, dtype=np.float64)
    width = s * n                                   # the (possibly fractional) output length the scale implies
    if coord == "align_corners":                    # the output length itself (onnxruntime), not n * s
        return (np.zeros(m) if m == 1 else y * (n - 1) / (m - 1)), None
    if coord == "asymmetric":
        return y / s, None
    if coord == "pytorch_half_pixel":
        return (np.full(m, -0.5) if width == 1 else (y + 0.5) / s - 0.5), None
    if coord == "half_pixel":
        return (y + 0.5) / s - 0.5, None
    if coord == "half_pixel_symmetric":
        return n / 2 * (1 - m / width) + (y + 0.5) / s - 0.5, None
    if coord == "tf_crop_and_resize":
        lo, hi = roi
        x = (np.full(m, (hi - lo) * (n - 1) / 2) if width == 1 else y * (hi - lo) * (n - 1) / (width - 1))
        x = x + lo * (n - 1)
        return x, (x < 0) | (x > n - 1)
    raise IRError(f"resize: coordinate mode {coord!r} is not one of {', '.join(COORDS)}")


def _taps(a: dict, n: int, m: int, s: float, roi) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(indices [m, T] into 0..n-1, weights [m, T] float64, extrapolated [m] or None) of one axis."""
    mode = a.get("mode", "nearest")
    x, extra = _source_coords(a.get("coord", "half_pixel"), n, m, s, roi)
    base = np.floor(x)
    r = np.where(x == base, 1.0, x - base)          # in (0, 1]: the left neighbour is preferred
    if mode == "nearest":
        nm = a.get("nearest_mode", "round_prefer_floor")
        right = {"round_prefer_floor": r > 0.5, "round_prefer_ceil": r >= 0.5, "floor": np.zeros(m, bool),
                 "ceil": np.ones(m, bool)}.get(nm)
        if right is None:
            raise IRError(f"resize: nearest_mode {nm!r} is not one of {', '.join(NEAREST_MODES)}")
        right = np.where(r == 1.0, True, right)     # an integral coordinate is its own pixel
        idx = (x - r + right).astype(np.int64)
        return np.clip(idx, 0, n - 1)[:, None], np.ones((m, 1)), extra
    aa = a.get("antialias", False) and s < 1
    left = x - r                                    # taps sit at left + offs, at distance offs - r from x
    if mode == "linear":
        offs = np.arange(int(math.floor(-1 / s) + 1), 1 - int(math.floor(-1 / s))) if aa else np.arange(0, 2)
        d = np.abs(offs[None, :] - r[:, None]) * (s if aa else 1.0)
        w = np.clip(1 - d, 0, 1)
    elif mode == "cubic":
        A = float(a.get("cubic_a", -0.75))
        offs = np.arange(int(math.floor(-2 / s) + 1), 1 - int(math.floor(-2 / s))) if aa else np.arange(-1, 3)
        d = np.abs(offs[None, :] - r[:, None]) * (s if aa else 1.0)
        w = np.where(d <= 1, ((A + 2) * d - (A + 3)) * d * d + 1,
                     np.where(d < 2, ((A * d - 5 * A) * d + 8 * A) * d - 4 * A, 0.0))
    else:
        raise IRError(f"resize: mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if aa:
        w = w / w.sum(axis=1, keepdims=True)
    idx = left.astype(np.int64)[:, None] + offs[None, :]
    if a.get("exclude_outside", False):
        w = np.where((idx < 0) | (idx >= n), 0.0, w)
        tot = w.sum(axis=1, keepdims=True)
        w = w / np.where(tot == 0, 1.0, tot)
    return np.clip(idx, 0, n - 1), w, extra


def resize_plan(in_shape: tuple[int, ...], a: dict) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Per resized axis: (axis, indices, weights, extrapolated) (axes left unchanged are skipped)."""
    size, scales = tuple(a["size"]), tuple(a.get("scales", ()))
    rank = len(in_shape)
    if len(size) != rank or (scales and len(scales) != rank):
        raise IRError(f"resize: size {list(size)} / scales {list(scales)} must have {rank} entries")
    roi = tuple(a.get("roi", ()))
    plan = []
    for ax in range(rank):
        n, m = in_shape[ax], size[ax]
        s = float(scales[ax]) if scales else m / n
        r = (roi[ax], roi[ax + rank]) if roi else None
        if m == n and math.isclose(s, 1.0) and (r is None or (math.isclose(r[0], 0) and math.isclose(r[1], 1))):
            continue
        if n == 0 or m == 0:
            raise IRError(f"resize: empty axis {ax}")
        idx, w, extra = _taps(a, n, m, s, r)
        plan.append((ax, idx, w, extra))
    return plan


@register("resize", 1)
def _resize():
    """Resize to ``size`` (see the module docstring)."""
    def infer(t, a):
        if a.get("mode", "nearest") not in RESIZE_MODES:
            raise IRError(f"resize: mode {a.get('mode')!r} is not one of {', '.join(RESIZE_MODES)}")
        if a.get("coord", "half_pixel") not in COORDS:
            raise IRError(f"resize: coordinate mode {a.get('coord')!r} is not one of {', '.join(COORDS)}")
        if a.get("coord") == "tf_crop_and_resize" and len(a.get("roi", ())) != 2 * t[0].rank:
            raise IRError("resize: tf_crop_and_resize needs roi with 2 x rank entries")
        if len(a["size"]) != t[0].rank or any(d < 0 for d in a["size"]):
            raise IRError(f"resize: size {list(a['size'])} does not fit rank {t[0].rank}")
        return [TensorType(tuple(int(d) for d in a["size"]), t[0].dtype)]

    def kernel(x, a):
        v = x[0]
        nearest = a.get("mode", "nearest") == "nearest"
        y = v if nearest else v.astype(np.float64)
        for ax, idx, w, extra in resize_plan(v.shape, a):
            g = np.take(y, idx.reshape(-1), axis=ax)
            if nearest:
                y = g
            else:
                sh = list(y.shape)
                sh[ax:ax + 1] = list(idx.shape)
                g = g.reshape(sh)
                y = (g * w.reshape((1,) * ax + w.shape + (1,) * (y.ndim - ax - 1))).sum(axis=ax + 1)
            if extra is not None and extra.any():
                mask = extra.reshape((1,) * ax + (-1,) + (1,) * (y.ndim - ax - 1))
                y = np.where(mask, np.asarray(a.get("extrapolation", 0.0), y.dtype), y)
        if v.dtype.kind in "iu" and not nearest:
            info = np.iinfo(v.dtype)
            y = np.clip(np.rint(y), info.min, info.max)
        return [np.ascontiguousarray(y).astype(v.dtype, copy=False)]
    return infer, kernel


# ---- transposed convolution ----------------------------------------------------------------------------
def _tattrs(a: dict):
    s, p, d = tuple(a.get("stride", (1, 1))), tuple(a.get("pad", (0, 0, 0, 0))), tuple(a.get("dilation", (1, 1)))
    op = tuple(a.get("output_padding", (0, 0)))
    if len(s) != 2 or len(p) != 4 or len(d) != 2 or len(op) != 2:
        raise IRError(f"conv_transpose2d: expected 2-D attributes, got stride={s} pad={p} dilation={d} "
                      f"output_padding={op}")
    return s, p, d, op, int(a.get("groups", 1))


def conv_transpose_out(n: int, k: int, s: int, lo: int, hi: int, d: int, op: int) -> int:
    return (n - 1) * s - lo - hi + d * (k - 1) + 1 + op


@register("conv_transpose2d", (2, 3))
def _conv_transpose2d():
    """Transposed 2-D convolution (the gradient of conv2d), optional bias."""
    def infer(t, a):
        x, w = t[0], t[1]
        s, p, d, op, g = _tattrs(a)
        if x.rank != 4 or w.rank != 4 or x.shape[1] != w.shape[0] or w.shape[0] % g:
            raise IRError(f"conv_transpose2d: input {x} does not match weight {w} with groups {g}")
        co = w.shape[1] * g
        if len(t) == 3 and t[2].shape != (co,):
            raise IRError(f"bias shape {t[2].shape} != ({co},)")
        oh = conv_transpose_out(x.shape[2], w.shape[2], s[0], p[0], p[2], d[0], op[0])
        ow = conv_transpose_out(x.shape[3], w.shape[3], s[1], p[1], p[3], d[1], op[1])
        if oh <= 0 or ow <= 0:
            raise IRError(f"conv_transpose2d: output {oh}x{ow} is empty")
        return [TensorType((x.shape[0], co, oh, ow), same_dtype(t))]

    def kernel(x, a):
        v, w = x[0], x[1]
        s, p, d, op, g = _tattrs(a)
        n, c, h, wd = v.shape
        ci, cog, kh, kw = w.shape
        z = np.zeros((n, c, (h - 1) * s[0] + 1, (wd - 1) * s[1] + 1), v.dtype)
        z[:, :, ::s[0], ::s[1]] = v
        lo = [d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1]]
        hi = [d[0] * (kh - 1) - p[2] + op[0], d[1] * (kw - 1) - p[3] + op[1]]
        z = np.pad(z, ((0, 0), (0, 0), (max(lo[0], 0), max(hi[0], 0)), (max(lo[1], 0), max(hi[1], 0))))
        z = z[:, :, max(-lo[0], 0):z.shape[2] - max(-hi[0], 0), max(-lo[1], 0):z.shape[3] - max(-hi[1], 0)]
        wc = w.reshape(g, ci // g, cog, kh, kw).transpose(0, 2, 1, 3, 4).reshape(g * cog, ci // g, kh, kw)
        wc = np.ascontiguousarray(wc[:, :, ::-1, ::-1])
        y = conv2d_nchw(z, wc, {"dilation": d, "groups": g})
        if len(x) == 3:
            y = y + x[2].reshape(1, -1, 1, 1)
        return [y.astype(v.dtype, copy=False)]
    return infer, kernel

