# SPDX-License-Identifier: Apache-2.0
"""Data-movement ops with static shapes.

``reshape`` {shape} (fully resolved, no -1); ``transpose`` {perm}; ``concat`` {axis};
``slice`` {starts, ends, axes, steps} (numpy semantics, clamped); ``pad`` {pads=(begin..., end...),
mode=constant|reflect|edge, value}; ``gather`` {axis} with a constant int index tensor.
"""
from __future__ import annotations

import numpy as np

from ...errors import IRError
from ..types import TensorType
from .registry import norm_axis, register, same_dtype


@register("reshape", 1, moves_data=True, quant="inherit")
def _reshape():
    """Reshape to a static shape with the same element count."""
    def infer(t, a):
        shape = tuple(a["shape"])
        if int(np.prod(shape, dtype=np.int64)) != t[0].size:
            raise IRError(f"cannot reshape {t[0]} to {list(shape)}")
        return [TensorType(shape, t[0].dtype)]
    return infer, lambda x, a: [x[0].reshape(tuple(a["shape"]))]


@register("transpose", 1, moves_data=True, quant="inherit")
def _transpose():
    """Permute dims."""
    def infer(t, a):
        perm = tuple(a["perm"])
        if sorted(perm) != list(range(t[0].rank)):
            raise IRError(f"perm {perm} is not a permutation of rank {t[0].rank}")
        return [TensorType(tuple(t[0].shape[p] for p in perm), t[0].dtype)]
    return infer, lambda x, a: [np.ascontiguousarray(x[0].transpose(tuple(a["perm"])))]


@register("concat", (1, 1 << 16), moves_data=True, quant="shared")
def _concat():
    """Concatenate along ``axis``."""
    def infer(t, a):
        ax = norm_axis(a["axis"], t[0].rank)
        for ti in t[1:]:
            if ti.rank != t[0].rank or any(d != e for i, (d, e) in enumerate(zip(ti.shape, t[0].shape)) if i != ax):
                raise IRError(f"concat operands {[str(x) for x in t]} differ off axis {ax}")
        shape = list(t[0].shape)
        shape[ax] = sum(ti.shape[ax] for ti in t)
        return [TensorType(tuple(shape), same_dtype(t))]
    return infer, lambda x, a: [np.concatenate(x, axis=a["axis"])]


def _slices(shape: tuple[int, ...], a: dict) -> tuple[slice, ...]:
    idx = [slice(None)] * len(shape)
    axes = a.get("axes", tuple(range(len(a["starts"]))))
    steps = a.get("steps", (1,) * len(axes))
    for ax, st, en, sp in zip(axes, a["starts"], a["ends"], steps):
        if sp == 0:
            raise IRError("slice step 0")
        n = shape[norm_axis(ax, len(shape))]
        lo, hi, _ = slice(st, en, sp).indices(n)
        idx[ax] = slice(lo, hi if hi >= 0 else None, sp)
    return tuple(idx)


@register("slice", 1, moves_data=True, quant="inherit")
def _slice():
    """Static strided slice."""
    def infer(t, a):
        return [TensorType(np.empty(t[0].shape, np.bool_)[_slices(t[0].shape, a)].shape, t[0].dtype)]
    return infer, lambda x, a: [np.ascontiguousarray(x[0][_slices(x[0].shape, a)])]


@register("pad", 1, moves_data=True, quant="inherit")
def _pad():
    """Pad every dim by ``pads`` (ONNX order: all begins, then all ends)."""
    def widths(rank, a):
        p = tuple(a["pads"])
        if len(p) != 2 * rank:
            raise IRError(f"pads {p} need {2 * rank} entries")
        if any(v < 0 for v in p):
            raise IRError("negative pads are not supported")
        return [(p[i], p[i + rank]) for i in range(rank)]

    def infer(t, a):
        return [TensorType(tuple(d + lo + hi for d, (lo, hi) in zip(t[0].shape, widths(t[0].rank, a))), t[0].dtype)]

    def kernel(x, a):
        mode = a.get("mode", "constant")
        w = widths(x[0].ndim, a)
        if mode == "constant":
            return [np.pad(x[0], w, constant_values=np.asarray(a.get("value", 0), x[0].dtype))]
        if mode not in ("reflect", "edge"):
            raise IRError(f"pad mode {mode!r}")
        return [np.pad(x[0], w, mode=mode)]
    return infer, kernel


@register("gather", 2)
def _gather():
    """``take(data, indices, axis)`` (negative indices wrap)."""
    def infer(t, a):
        d, i = t
        ax = norm_axis(a.get("axis", 0), d.rank)
        if i.dtype not in ("i32", "i64"):
            raise IRError(f"gather indices must be i32/i64, got {i.dtype}")
        return [TensorType(d.shape[:ax] + i.shape + d.shape[ax + 1:], d.dtype)]
    return infer, lambda x, a: [np.take(x[0], x[1].astype(np.int64), axis=a.get("axis", 0))]


def reverse_sequence_index(shape: tuple[int, ...], a: dict) -> np.ndarray:
    """Flat source index of every output element of ``reverse_sequence`` (the op is this gather)."""
    b_ax, t_ax, lens = a["batch_axis"] % len(shape), a["time_axis"] % len(shape), a["lens"]
    idx = np.indices(shape)
    b, t = idx[b_ax], idx[t_ax]
    n = np.asarray(lens, np.int64)[b]
    idx[t_ax] = np.where(t < n, n - 1 - t, t)
    return np.ravel_multi_index(tuple(idx), shape)


def _reverse_sequence_torch(n, g):
    import torch
    src = torch.from_numpy(reverse_sequence_index(g.type_of(n.inputs[0]).shape, n.attr_dict).reshape(-1))
    return lambda x: x[0].reshape(-1)[src].reshape(x[0].shape)


@register("reverse_sequence", 1, moves_data=True, quant="inherit", torch=_reverse_sequence_torch)
def _reverse_sequence():
    """ONNX ReverseSequence with constant lengths ``lens`` {batch_axis, time_axis, lens}."""
    def infer(t, a):
        if t[0].rank < 2 or {a["batch_axis"] % t[0].rank, a["time_axis"] % t[0].rank} != {
                a["batch_axis"] % t[0].rank, a["time_axis"] % t[0].rank} or a["batch_axis"] % t[0].rank == \
                a["time_axis"] % t[0].rank:
            raise IRError(f"batch_axis and time_axis must be two different axes of {t[0]}")
        nb, nt = t[0].shape[a["batch_axis"] % t[0].rank], t[0].shape[a["time_axis"] % t[0].rank]
        if len(a["lens"]) != nb or any(not 0 <= v <= nt for v in a["lens"]):
            raise IRError(f"lens {list(a['lens'])} must give one length in [0, {nt}] per batch entry ({nb})")
        return [t[0]]
    return infer, lambda x, a: [x[0].reshape(-1)[reverse_sequence_index(x[0].shape, a)]]
