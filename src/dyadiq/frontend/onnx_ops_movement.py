# SPDX-License-Identifier: Apache-2.0
"""Data-movement rows of the ONNX converter table: reshapes, transpose, concat, slice, split, gather, pad, expand."""
from __future__ import annotations

import math

import numpy as np

from .onnx_ops import _axis, _ints, row


# ---- data movement ----------------------------------------------------------------------------------
def _reshape_to(cx, x: str, shape) -> str:
    shape = tuple(int(d) for d in shape)
    return x if shape == cx.shape(x) else cx.op("reshape", [x], shape=shape)


@row("Reshape", params=(1,))
def _reshape(cx):
    x, spec = cx.inp(0), _ints(cx.const_input(1, "shape"))
    src, allowzero = cx.shape(x), cx.attr("allowzero", 0)
    shape = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(spec)]
    if shape.count(-1) > 1:
        raise cx.fail(f"shape {list(spec)} has more than one -1")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        total = math.prod(src)
        if known == 0 or total % known:
            raise cx.fail(f"cannot reshape {list(src)} to {list(spec)}")
        shape[shape.index(-1)] = total // known
    return _reshape_to(cx, x, shape)


@row("Flatten")
def _flatten(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    axis = int(cx.attr("axis", 1))
    axis = axis + len(sh) if axis < 0 else axis
    return _reshape_to(cx, x, (math.prod(sh[:axis]), math.prod(sh[axis:])))


@row("Squeeze", params=(1,))
def _squeeze(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    axes = cx.attr("axes")
    if axes is None:
        axes = cx.const_input(1, "axes")
    if axes is None:
        drop = {i for i, d in enumerate(sh) if d == 1}
    else:
        drop = {_axis(cx, a, len(sh)) for a in _ints(axes)}
        if any(sh[a] != 1 for a in drop):
            raise cx.fail(f"cannot squeeze axes {sorted(drop)} of shape {list(sh)}")
    return _reshape_to(cx, x, [d for i, d in enumerate(sh) if i not in drop])


@row("Unsqueeze", params=(1,))
def _unsqueeze(cx):
    x = cx.inp(0)
    axes = cx.attr("axes")
    axes = _ints(cx.const_input(1, "axes") if axes is None else axes)
    rank = cx.rank(x) + len(axes)
    ins = {_axis(cx, a, rank) for a in axes}
    if len(ins) != len(axes):
        raise cx.fail(f"repeated axes {list(axes)}")
    it = iter(cx.shape(x))
    return _reshape_to(cx, x, [1 if i in ins else next(it) for i in range(rank)])


@row("Transpose")
def _transpose(cx):
    x = cx.inp(0)
    perm = cx.attr("perm")
    perm = tuple(range(cx.rank(x)))[::-1] if perm is None else tuple(int(p) for p in perm)
    return cx.op("transpose", [x], perm=perm)


@row("Concat")
def _concat(cx):
    refs = cx.inputs()
    return cx.op("concat", refs, axis=_axis(cx, int(cx.attr("axis")), cx.rank(refs[0])))


def _slice(cx, x: str, starts, ends, axes, steps, name=None) -> str:
    """A ``slice`` with ONNX (= Python) clamping; bounds clamped to [-(n+1), n+1] (same meaning)."""
    sh = cx.shape(x)
    ax = [_axis(cx, a, len(sh)) for a in axes]
    if len(set(ax)) != len(ax):
        raise cx.fail(f"repeated slice axes {list(axes)}")
    if any(s == 0 for s in steps):
        raise cx.fail("slice step 0")
    clamp = lambda v, n: int(min(max(int(v), -n - 1), n + 1))  # noqa: E731
    return cx.op("slice", [x], name, starts=tuple(clamp(s, sh[a]) for s, a in zip(starts, ax)),
                 ends=tuple(clamp(e, sh[a]) for e, a in zip(ends, ax)), axes=tuple(ax),
                 steps=tuple(int(s) for s in steps))


@row("Slice", params=(1, 2, 3, 4))
def _slice_row(cx):
    x = cx.inp(0)
    starts, ends = _ints(cx.const_input(1, "starts")), _ints(cx.const_input(2, "ends"))
    axes, steps = cx.const_input(3, "axes"), cx.const_input(4, "steps")
    axes = tuple(range(len(starts))) if axes is None else _ints(axes)
    steps = (1,) * len(starts) if steps is None else _ints(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise cx.fail("starts, ends, axes and steps differ in length")
    return _slice(cx, x, starts, ends, axes, steps)


@row("Split", params=(1,))
def _split(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    axis = _axis(cx, int(cx.attr("axis", 0)), len(sh))
    n_out, dim = len(cx.node.output), sh[axis]
    sizes = cx.attr("split")
    if sizes is None:
        sizes = cx.const_input(1, "split")
    if sizes is not None:
        sizes = _ints(sizes)
    elif cx.attr("num_outputs") is not None:
        chunk = -(-dim // int(cx.attr("num_outputs")))
        sizes = tuple(min(chunk, max(0, dim - k * chunk)) for k in range(int(cx.attr("num_outputs"))))
    elif dim % n_out == 0:
        sizes = (dim // n_out,) * n_out
    else:
        raise cx.fail(f"dim {dim} does not split evenly into {n_out} outputs")
    if len(sizes) != n_out or sum(sizes) != dim:
        raise cx.fail(f"split sizes {list(sizes)} do not cover dim {dim} with {n_out} outputs")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [_slice(cx, x, (offsets[k],), (offsets[k + 1],), (axis,), (1,), cx.out(k)) for k in range(n_out)]


@row("Gather")
def _gather(cx):
    x, idx = cx.inp(0), cx.inp(1)
    axis = _axis(cx, int(cx.attr("axis", 0)), cx.rank(x))
    if cx.is_const(idx):
        i = cx.array(idx).astype(np.int64)
        n = cx.shape(x)[axis]
        if np.any((i < -n) | (i >= n)):
            raise cx.fail(f"gather indices out of range for dim {n}")
        idx = cx.const(np.where(i < 0, i + n, i), cx.sub("indices"))
    return cx.op("gather", [x, idx], axis=axis)


@row("GatherND", params=(1,))
def _gather_nd(cx):
    """GatherND with constant indices (the dynamo exporter's advanced indexing of an attention mask): the
    batch dims and the ``k`` indexed dims as one, a gather of linear indices."""
    x = cx.inp(0)
    b = int(cx.attr("batch_dims", 0))
    idx = cx.const_input(1, "indices").astype(np.int64)
    shape, k = cx.shape(x), idx.shape[-1]
    if not 0 <= b < idx.ndim or b + k > len(shape) or k < 1 or tuple(idx.shape[:b]) != tuple(shape[:b]):
        raise cx.fail(f"GatherND indices {list(idx.shape)} (batch_dims {b}) do not fit data {list(shape)}")
    dims = np.asarray(shape[b:b + k], np.int64)
    if np.any((idx < -dims) | (idx >= dims)):
        raise cx.fail(f"GatherND indices out of range for dims {list(shape[b:b + k])}")
    flat = np.zeros(idx.shape[:-1], np.int64)
    for j in range(k):
        flat = flat * dims[j] + idx[..., j] % dims[j]
    batch = np.arange(int(np.prod(shape[:b], dtype=np.int64))).reshape(tuple(shape[:b]) + (1,) * (flat.ndim - b))
    flat = flat + batch * int(np.prod(dims))
    lead = int(np.prod(shape[:b + k], dtype=np.int64))
    x2 = cx.op("reshape", [x], cx.sub("flat"), shape=(lead,) + tuple(shape[b + k:])) if b + k != 1 else x
    return cx.op("gather", [x2, cx.const(flat, cx.sub("indices"))], axis=0)


@row("Pad", params=(1, 2, 3))
def _pad(cx):
    x = cx.inp(0)
    rank = cx.rank(x)
    pads = _ints(cx.const_input(1, "pads"))
    value = cx.const_input(2, "constant_value")
    axes = cx.const_input(3, "axes")
    mode = cx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise cx.fail(f"pad mode {mode!r} is not supported (constant, reflect, edge)")
    axes = tuple(range(rank)) if axes is None else tuple(_axis(cx, a, rank) for a in _ints(axes))
    if len(pads) != 2 * len(axes):
        raise cx.fail(f"pads {list(pads)} need {2 * len(axes)} entries")
    full = [0] * (2 * rank)
    for k, a in enumerate(axes):
        full[a], full[a + rank] = pads[k], pads[k + len(axes)]
    value = 0 if value is None or value.size == 0 else value.reshape(-1)[0].item()
    y = x
    if any(p > 0 for p in full):
        grow = tuple(max(p, 0) for p in full)
        y = cx.op("pad", [x], cx.sub("pad") if min(full) < 0 else None, pads=grow, mode=mode,
                  value=value if mode == "constant" else None)
    if min(full) < 0:                                       # negative pads crop
        sh = cx.shape(y)
        return _slice(cx, y, [-min(full[a], 0) for a in range(rank)],
                      [sh[a] + min(full[a + rank], 0) for a in range(rank)], range(rank), (1,) * rank)
    return y


@row("Expand", params=(1,))
def _expand(cx):
    x = cx.inp(0)
    target = _ints(cx.const_input(1, "shape"))
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(cx.shape(x), target))
    except ValueError:
        raise cx.fail(f"cannot expand {list(cx.shape(x))} to {list(target)}") from None
    if cx.is_const(x):
        return cx.const(np.broadcast_to(cx.array(x), out).copy())
    if out == cx.shape(x):
        return x
    return cx.op("mul", [x, cx.const(np.ones(target, cx.np_dtype(x)), cx.sub("ones"))])   # x * 1 broadcasts


@row("ReverseSequence", params=(1,))
def _reverse_sequence(cx):
    """Reverse the first ``sequence_lens[b]`` steps along ``time_axis`` of each batch entry (lengths constant)."""
    x = cx.inp(0)
    lens = cx.const_input(1, "sequence_lens")
    if lens is None:
        raise cx.fail("sequence_lens must be a constant")
    return cx.op("reverse_sequence", [x], batch_axis=int(cx.attr("batch_axis", 1)),
                 time_axis=int(cx.attr("time_axis", 0)), lens=tuple(int(v) for v in np.asarray(lens).reshape(-1)))
