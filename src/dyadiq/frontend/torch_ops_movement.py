# SPDX-License-Identifier: Apache-2.0
"""Identity-like and data-movement rows of the torch.export op table (reshape, transpose, concat, slice, pad)."""
from __future__ import annotations

import operator

import torch

from .torch_ops import Const, _axis, _x, row


# ---- identity-like, assertions, tuples --------------------------------------------------------------
@row("aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.lift_fresh",
     keeps_const=True)
def _identity(cx, a):
    return _x(a)


@row("aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout", keeps_const=True)
def _dropout(cx, a):
    if a["train"] and a["p"] > 0:
        raise cx.error("dropout in training mode; export the model after model.eval()")
    return a["input"]


@row("aten.to", "aten._to_copy", "aten.type_as", keeps_const=True)
def _to(cx, a):
    x = a["self"]
    if cx.dtype(x) == cx.out_dtype:
        return x
    if isinstance(x, Const):
        return Const(x.tensor.to(cx.meta.dtype), cx.node.name)
    return cx.emit("cast", [x], to=cx.out_dtype)


@row("aten._assert_tensor_metadata", "aten._assert_async", "aten._assert_scalar", "aten._functional_assert_async",
     "aten.sym_constrain_range", "aten.sym_constrain_range_for_size")
def _assertion(cx, a):
    return None


@row(operator.getitem, keeps_const=True)
def _getitem(cx, a):
    return a["self"][a["index"]]


@row("aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.empty_like")
def _full_like(cx, a):
    fill = {"aten.zeros_like": 0, "aten.ones_like": 1, "aten.empty_like": 0}.get(str(cx.node.target.overloadpacket))
    fill = a["fill_value"] if fill is None else fill
    return Const(torch.full(cx.out_shape, fill, dtype=cx.meta.dtype), cx.node.name)


# ---- data movement -----------------------------------------------------------------------------------
@row("aten.view", "aten.reshape", "aten._unsafe_view", "aten.flatten", "aten.unflatten", "aten.squeeze",
     "aten.unsqueeze", "aten.view_as", "aten.reshape_as", "aten._reshape_alias")
def _reshape(cx, a):
    return cx.reshape(_x(a), cx.out_shape)


def _transpose_to(cx, x, perm):
    perm = tuple(int(p) for p in perm)
    return cx.value(x) if perm == tuple(range(len(perm))) else cx.emit("transpose", [x], perm=perm)


@row("aten.permute")
def _permute(cx, a):
    rank = len(cx.shape(a["self"]))
    return _transpose_to(cx, a["self"], [_axis(d, rank) for d in a["dims"]])


@row("aten.transpose", "aten.t")
def _transpose(cx, a):
    rank = len(cx.shape(a["self"]))
    perm = list(range(rank))
    if rank >= 2:
        d0, d1 = (_axis(a["dim0"], rank), _axis(a["dim1"], rank)) if "dim0" in a else (0, 1)
        perm[d0], perm[d1] = perm[d1], perm[d0]
    return _transpose_to(cx, a["self"], perm)


@row("aten.cat", "aten.concat", "aten.concatenate")
def _cat(cx, a):
    xs = [t for t in a["tensors"] if cx.shape(t) != (0,)]          # legacy empty tensors are skipped
    if len(xs) == 1:
        return xs[0]
    return cx.emit("concat", xs, axis=_axis(a["dim"], len(cx.out_shape)))


@row("aten.stack")
def _stack(cx, a):
    ax = _axis(a["dim"], len(cx.out_shape))
    xs = [cx.reshape(t, cx.shape(t)[:ax] + (1,) + cx.shape(t)[ax:], suffix=f"in{i}")
          for i, t in enumerate(a["tensors"])]
    return xs[0] if len(xs) == 1 else cx.emit("concat", xs, axis=ax)


def _tile(cx, x, reps):
    """Repeat ``x`` ``reps[d]`` times along each dim by concatenating copies."""
    for ax, r in enumerate(reps):
        if r > 1:
            x = cx.emit("concat", [x] * r, suffix=f"tile{ax}", axis=ax)
    return cx.reshape(x, cx.out_shape)


@row("aten.upsample_nearest2d")
def _upsample_nearest(cx, a):
    """Nearest upsampling by integer factors: each pixel repeated ``s_h x s_w`` times."""
    x = a["self"] if "self" in a else a["input"]
    n, c, h, w = cx.shape(x)
    oh, ow = cx.out_shape[2:]
    if oh % h or ow % w or (a.get("scale_factors") and any(float(f) * n != o for f, n, o in
                                                           zip(a["scale_factors"], (h, w), (oh, ow)))):
        from .torch_ops_coverage import nearest_resize
        return nearest_resize(cx, a)
    x6 = cx.reshape(x, (n, c, h, 1, w, 1), suffix="split")
    return _tile(cx, x6, (1, 1, 1, oh // h, 1, ow // w))


@row("aten.expand", "aten.expand_as")
def _expand(cx, a):
    out = cx.out_shape
    src = cx.shape(a["self"])
    x = cx.reshape(a["self"], (1,) * (len(out) - len(src)) + src, suffix="unsqueezed")
    return _tile(cx, x, [o if s == 1 else 1 for o, s in zip(out, cx.shape(x))])


@row("aten.repeat")
def _repeat(cx, a):
    reps = tuple(int(r) for r in a["repeats"])
    src = cx.shape(a["self"])
    return _tile(cx, cx.reshape(a["self"], (1,) * (len(reps) - len(src)) + src, suffix="unsqueezed"), reps)


def _slice(cx, x, ax: int, start: int, end: int, step: int = 1, suffix: str | None = None) -> str:
    if (start, end, step) == (0, cx.shape(x)[ax], 1):
        return cx.value(x)
    return cx.emit("slice", [x], suffix=suffix, starts=(start,), ends=(end,), axes=(ax,), steps=(step,))


@row("aten.slice")
def _slice_tensor(cx, a):
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    lo, hi, step = slice(a["start"], a["end"], a["step"]).indices(cx.shape(x)[ax])
    return _slice(cx, x, ax, lo, max(hi, lo), step)


@row("aten.narrow")
def _narrow(cx, a):
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    lo = _axis(a["start"], cx.shape(x)[ax] + 1) if a["start"] < 0 else int(a["start"])
    return _slice(cx, x, ax, lo, lo + int(a["length"]))


@row("aten.select")
def _select(cx, a):
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    i = _axis(a["index"], cx.shape(x)[ax])
    return cx.reshape(_slice(cx, x, ax, i, i + 1, suffix="slice"), cx.out_shape)


@row("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unbind", "aten.tensor_split")
def _split(cx, a):
    """Every piece is a slice at the offsets torch recorded (``meta['val']`` is the list of pieces)."""
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    outs, lo = [], 0
    for i, piece in enumerate(cx.node.meta["val"]):
        shape = tuple(int(d) for d in piece.shape)
        n = 1 if len(shape) < len(cx.shape(x)) else shape[ax]          # unbind drops the dim
        outs.append(cx.reshape(_slice(cx, x, ax, lo, lo + n, suffix=str(i)), shape, suffix=f"{i}.squeezed"))
        lo += n
    return tuple(outs)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _pad(cx, x, pad, mode: str, value):
    rank = len(cx.shape(x))
    if len(pad) % 2 or len(pad) > 2 * rank:
        raise cx.error(f"pad {list(pad)} does not fit a rank-{rank} tensor")
    lo, hi = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):                     # torch: (last_lo, last_hi, prev_lo, prev_hi, ...)
        lo[rank - 1 - i], hi[rank - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    if min(lo + hi) < 0:
        raise cx.error(f"negative padding {list(pad)} is not supported")
    if mode not in _PAD_MODES:
        raise cx.error(f"padding mode {mode!r} is not supported")
    if not any(lo + hi):
        return x
    return cx.emit("pad", [x], pads=tuple(lo + hi), mode=_PAD_MODES[mode],
                   value=float(value or 0.0) if mode == "constant" else None)


row("aten.pad")(lambda cx, a: _pad(cx, a["self"], a["pad"], a["mode"], a["value"]))
row("aten.constant_pad_nd")(lambda cx, a: _pad(cx, a["self"], a["pad"], "constant", a["value"]))
for _d in (1, 2, 3):
    row(f"aten.reflection_pad{_d}d")(lambda cx, a: _pad(cx, a["self"], a["padding"], "reflect", None))
    row(f"aten.replication_pad{_d}d")(lambda cx, a: _pad(cx, a["self"], a["padding"], "replicate", None))
