# SPDX-License-Identifier: Apache-2.0
"""Float neural-network ops (NCHW).

- ``conv2d(x, w[, b])`` {stride, pad=(t,l,b,r), dilation, groups}; ``w`` is [O, C/groups, KH, KW].
- ``linear(x, w[, b])``: ``x @ w.T + b`` with ``w`` [out, in]; ``matmul(a, b)``: numpy matmul.
- ``batchnorm(x, gamma, beta, mean, var)`` {eps} over axis 1; ``layernorm(x, gamma, beta)`` {axis, eps}
  normalizes over dims ``axis..end``; ``softmax`` {axis}.
- ``avgpool`` / ``maxpool`` {kernel, stride, pad, dilation, ceil_mode, count_include_pad};
  ``global_avgpool`` -> [N, C, 1, 1]; ``mean`` / ``reduce_sum`` / ``reduce_max`` / ``reduce_min`` {axes, keepdims}.
"""
from __future__ import annotations

import numpy as np

from ...errors import IRError
from ..types import TensorType
from .registry import norm_axis, register, same_dtype
from .window import hw_attrs, out_size, pad_nchw, pool_geometry, windows


# ---- convolution ------------------------------------------------------------------------------
def conv_out_type(x: TensorType, w: TensorType, a: dict, dtype: str) -> TensorType:
    _, s, p, d = hw_attrs(a)
    g = a.get("groups", 1)
    if not isinstance(g, int) or g < 1:
        raise IRError(f"groups must be a positive integer, got {g!r}")
    if x.rank != 4 or w.rank != 4:
        raise IRError(f"conv2d needs 4-D input and weight, got {x} and {w}")
    if x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        raise IRError(f"input channels {x.shape[1]} != weight {w.shape[1]} x groups {g}")
    oh = out_size(x.shape[2], w.shape[2], s[0], p[0], p[2], d[0])
    ow = out_size(x.shape[3], w.shape[3], s[1], p[1], p[3], d[1])
    return TensorType((x.shape[0], w.shape[0], oh, ow), dtype)


def conv2d_nchw(x: np.ndarray, w: np.ndarray, a: dict, acc_dtype=None, pad_value=0) -> np.ndarray:
    """Grouped, strided, dilated 2-D convolution in ``acc_dtype`` (default: x's dtype)."""
    _, s, p, d = hw_attrs(a)
    g = a.get("groups", 1)
    acc = np.dtype(acc_dtype or x.dtype)
    x, w = x.astype(acc, copy=False), w.astype(acc, copy=False)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out_size(h, kh, s[0], p[0], p[2], d[0]), out_size(wd, kw, s[1], p[1], p[3], d[1])
    xp = pad_nchw(x, p, pad_value)
    win = windows(xp, (kh, kw), s, d, (oh, ow))                       # N C OH OW KH KW
    og = o // g
    if cg == 1 and og == 1:                                            # depthwise: loop over taps
        out = np.zeros((n, o, oh, ow), acc)
        for i in range(kh):
            for j in range(kw):
                out += win[:, :, :, :, i, j] * w[:, 0, i, j][None, :, None, None]
        return out
    out = np.empty((n, o, oh, ow), acc)
    for gi in range(g):
        wg = win[:, gi * cg:(gi + 1) * cg]                             # N Cg OH OW KH KW
        cols = wg.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kh * kw)
        wm = w[gi * og:(gi + 1) * og].reshape(og, -1)
        out[:, gi * og:(gi + 1) * og] = (cols @ wm.T).reshape(n, oh, ow, og).transpose(0, 3, 1, 2)
    return out


def _bias_shape(b: np.ndarray, rank: int) -> np.ndarray:
    return b.reshape((1, -1) + (1,) * (rank - 2))


@register("conv2d", (2, 3), fusable=True, weight=1, bias=2)
def _conv2d():
    """2-D convolution with optional bias."""
    def infer(t, a):
        if len(t) == 3 and t[2].shape != (t[1].shape[0],):
            raise IRError(f"bias shape {t[2].shape} != ({t[1].shape[0]},)")
        return [conv_out_type(t[0], t[1], a, same_dtype(t))]

    def kernel(x, a):
        y = conv2d_nchw(x[0], x[1], a)
        if len(x) == 3:
            y += _bias_shape(x[2], 4)
        return [y]
    return infer, kernel


@register("linear", (2, 3), fusable=True, weight=1, bias=2)
def _linear():
    """``x @ w.T + b`` over the last dim."""
    def infer(t, a):
        x, w = t[0], t[1]
        if w.rank != 2 or x.shape[-1] != w.shape[1]:
            raise IRError(f"linear: input {x} does not match weight {w}")
        return [TensorType(x.shape[:-1] + (w.shape[0],), same_dtype(t))]

    def kernel(x, a):
        y = x[0] @ x[1].T
        return [y + x[2] if len(x) == 3 else y]
    return infer, kernel


@register("matmul", 2, fusable=True)
def _matmul():
    """numpy matmul with batch broadcasting."""
    def infer(t, a):
        a_, b_ = t
        if a_.rank < 2 or b_.rank < 2:
            raise IRError("matmul operands must have rank >= 2")
        if a_.shape[-1] != b_.shape[-2]:
            raise IRError(f"matmul inner dims differ: {a_} x {b_}")
        batch = tuple(int(d) for d in np.broadcast_shapes(a_.shape[:-2], b_.shape[:-2]))
        return [TensorType(batch + (a_.shape[-2], b_.shape[-1]), same_dtype(t))]

    def kernel(x, a):
        return [np.matmul(x[0], x[1])]
    return infer, kernel


# ---- normalization ------------------------------------------------------------------------------
@register("batchnorm", 5)
def _batchnorm():
    """Inference batch norm over axis 1: ``(x - mean) / sqrt(var + eps) * gamma + beta``."""
    def infer(t, a):
        c = t[0].shape[1]
        if any(ti.shape != (c,) for ti in t[1:]):
            raise IRError(f"batchnorm parameters must be ({c},)")
        return [t[0]]

    def kernel(x, a):
        v, g, b, m, var = x
        eps = np.asarray(a.get("eps", 1e-5), v.dtype)
        sh = lambda p: _bias_shape(p, v.ndim)  # noqa: E731
        return [((v - sh(m)) / np.sqrt(sh(var) + eps) * sh(g) + sh(b)).astype(v.dtype)]
    return infer, kernel


@register("layernorm", 3)
def _layernorm():
    """Layer norm over dims ``axis..end`` with affine ``gamma``, ``beta``."""
    def infer(t, a):
        ax = norm_axis(a.get("axis", -1), t[0].rank)
        if t[1].shape != t[0].shape[ax:] or t[2].shape != t[0].shape[ax:]:
            raise IRError(f"layernorm gamma/beta must be {t[0].shape[ax:]}")
        return [t[0]]

    def kernel(x, a):
        v, g, b = x
        axes = tuple(range(norm_axis(a.get("axis", -1), v.ndim), v.ndim))
        mu = v.mean(axis=axes, keepdims=True)
        var = ((v - mu) ** 2).mean(axis=axes, keepdims=True)
        return [((v - mu) / np.sqrt(var + np.asarray(a.get("eps", 1e-5), v.dtype)) * g + b).astype(v.dtype)]
    return infer, kernel


@register("softmax", (1, 2))
def _softmax():
    """Softmax along ``axis``; with a second operand ``keep`` (integer or i1, broadcastable to ``x``) only the
    elements where ``keep != 0`` take part: the others get probability 0, and a row with none kept is all 0
    (attention masks: canonicalize folds ``scores + where(mask, 0, -inf)`` into it)."""
    def infer(t, a):
        norm_axis(a.get("axis", -1), t[0].rank)
        if len(t) == 2:
            check_keep(t[0], t[1], "softmax")
        return [t[0]]

    def kernel(x, a):
        ax = a.get("axis", -1)
        if len(x) == 1:
            e = np.exp(x[0] - x[0].max(axis=ax, keepdims=True))
            return [(e / e.sum(axis=ax, keepdims=True)).astype(x[0].dtype)]
        keep = np.broadcast_to(np.asarray(x[1]) != 0, x[0].shape)
        v = np.where(keep, x[0], -np.inf)
        m = v.max(axis=ax, keepdims=True)
        e = np.where(keep, np.exp(v - np.where(np.isfinite(m), m, 0)), 0)
        s = e.sum(axis=ax, keepdims=True)
        return [(e / np.where(s > 0, s, 1)).astype(x[0].dtype)]
    return infer, kernel


def check_keep(x: TensorType, keep: TensorType, op: str) -> None:
    """``keep`` (a softmax mask) is integer or i1 and broadcasts to ``x`` without growing it."""
    if keep.is_float:
        raise IRError(f"{op} keep mask must be integer or i1, got {keep.dtype}")
    try:
        shape = np.broadcast_shapes(x.shape, keep.shape)
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise IRError(f"{op} keep mask {list(keep.shape)} does not broadcast to {list(x.shape)}")


# ---- pooling and reductions ---------------------------------------------------------------------
def pool_out_type(x: TensorType, a: dict) -> TensorType:
    if x.rank != 4:
        raise IRError(f"pooling needs a 4-D input, got {x}")
    (oh, ow), _ = pool_geometry(x.shape[2:], a)
    return TensorType((x.shape[0], x.shape[1], oh, ow), x.dtype)


def _pool_windows(x: np.ndarray, a: dict, pad_value) -> tuple[np.ndarray, tuple]:
    k, s, p, d = hw_attrs(a)
    (oh, ow), extra = pool_geometry(x.shape[2:], a)
    xp = pad_nchw(x, p, pad_value, extra)
    return windows(xp, k, s, d, (oh, ow)), (k, s, p, d, extra)


@register("maxpool", 1, moves_data=True, quant="inherit")
def _maxpool():
    """Max pooling (padding never wins)."""
    def kernel(x, a):
        v = x[0]
        lo = -np.inf if v.dtype.kind == "f" else np.iinfo(v.dtype).min
        win, _ = _pool_windows(v, a, lo)
        return [win.max(axis=(4, 5))]
    return (lambda t, a: [pool_out_type(t[0], a)]), kernel


def avgpool_divisor(shape_hw: tuple[int, int], a: dict, out_hw: tuple[int, int]) -> np.ndarray:
    """Per-output-position divisor [OH, OW] of an average pool (count_include_pad / ceil-mode aware)."""
    k, s, p, d = hw_attrs(a)
    include = bool(a.get("count_include_pad", False))
    divs = []
    for ax in range(2):
        n, lo, hi = shape_hw[ax], p[ax], p[ax + 2]
        taps = (np.arange(out_hw[ax]) * s[ax] - lo)[:, None] + np.arange(k[ax])[None, :] * d[ax]
        first, stop = (-lo, n + hi) if include else (0, n)    # taps that count (dilation aware)
        divs.append(((taps >= first) & (taps < stop)).sum(axis=1))
    return np.outer(divs[0], divs[1])


@register("avgpool", 1)
def _avgpool():
    """Average pooling; pads count only with ``count_include_pad``."""
    def kernel(x, a):
        win, _ = _pool_windows(x[0], a, 0)
        div = avgpool_divisor(x[0].shape[2:], a, win.shape[2:4])
        return [(win.sum(axis=(4, 5)) / div).astype(x[0].dtype)]
    return (lambda t, a: [pool_out_type(t[0], a)]), kernel


@register("global_avgpool", 1)
def _global_avgpool():
    """Mean over H and W, keeping them as 1x1."""
    def infer(t, a):
        if t[0].rank < 3:
            raise IRError(f"global_avgpool needs rank >= 3, got {t[0]}")
        return [TensorType(t[0].shape[:2] + (1,) * (t[0].rank - 2), t[0].dtype)]

    def kernel(x, a):
        return [x[0].mean(axis=tuple(range(2, x[0].ndim)), keepdims=True).astype(x[0].dtype)]
    return infer, kernel


def _empty_identity(dt: np.dtype, sign: int):
    """Identity of max (sign -1) / min (sign +1) in ``dt``: what ONNX gives for an empty reduction."""
    if dt.kind == "f":
        return sign * np.inf
    if dt.kind == "b":
        return sign > 0
    info = np.iinfo(dt)
    return info.max if sign > 0 else info.min


def _reduce(fn, empty_sign: int = 0):
    def infer(t, a):
        r = t[0].rank
        axes = {norm_axis(ax, r) for ax in a.get("axes", tuple(range(r)))}
        keep = a.get("keepdims", True)
        shape = tuple(1 if i in axes else d for i, d in enumerate(t[0].shape) if keep or i not in axes)
        return [TensorType(shape, t[0].dtype)]

    def kernel(x, a):
        axes = tuple(a.get("axes", tuple(range(x[0].ndim))))
        kw = {"initial": _empty_identity(x[0].dtype, empty_sign)} if empty_sign and x[0].size == 0 else {}
        return [np.asarray(fn(x[0], axis=axes, keepdims=a.get("keepdims", True), **kw)).astype(x[0].dtype)]
    return lambda: (infer, kernel)


for _name, _fn, _sign in (("mean", np.mean, 0), ("reduce_sum", np.sum, 0), ("reduce_max", np.max, -1),
                          ("reduce_min", np.min, 1)):
    register(_name, 1, doc=f"{_name} over axes")(_reduce(_fn, _sign))
