# SPDX-License-Identifier: Apache-2.0
"""More elementwise, logical and per-axis rows of the ONNX converter table (issue 15).

- Activations ``Elu Selu Celu Mish Softplus Softsign ThresholdedRelu Shrink`` and trigonometric/rounding
  functions -> one op each (``ir.ops.coverage``); ``PRelu`` -> ``leaky_relu`` for one slope, else
  ``relu(x) - slope * relu(-x)``; ``Swish(alpha)`` -> ``silu`` (alpha 1) or ``x * sigmoid(alpha x)``;
  ``LogSoftmax = (x - m) - log(sum(exp(x - m)))``.
- Comparisons and logic -> ``i1`` ops; ``Where``; ``Mod``; ``BitShift``; ``Bitwise*``.
- ``ReduceL1 = sum|x|``, ``ReduceL2 = sqrt(sum x^2)``, ``ReduceSumSquare``, ``ReduceLogSum = log(sum x)``,
  ``ReduceLogSumExp = log(sum e^x)``, ``ReduceProd``; ``ArgMax``/``ArgMin``; ``CumSum``; ``Hardmax``;
  ``TopK``; ``GatherElements``; ``Einsum``.
- ``Trilu`` -> ``where(constant mask, x, 0)``; ``Tile`` -> ``concat`` of copies; ``EyeLike`` is a constant;
  ``OneHot`` -> ``where(idx == arange(depth), on, off)``; ``Compress`` (constant condition) -> ``gather``;
  ``CenterCropPad`` -> ``slice`` + ``pad``.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..ir.ops import op_def
from ..ir.types import TensorType, dtype_of
from .onnx_ops import _axis, _ints, row

UNARY = {"Elu": "elu", "Selu": "selu", "Celu": "celu", "Mish": "mish", "Softplus": "softplus",
         "Softsign": "softsign", "ThresholdedRelu": "thresholded_relu", "Shrink": "shrink",
         "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan",
         "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh",
         "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "IsNaN": "isnan", "Not": "logical_not",
         "BitwiseNot": "bitwise_not"}
UNARY_ATTRS = {"alpha": float, "gamma": float, "lambd": float, "bias": float}
BINARY = {"Equal": "equal", "Less": "less", "LessOrEqual": "less_equal", "Greater": "greater",
          "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
          "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor"}


@row(*UNARY)
def _unary(cx):
    attrs = {k: f(cx.attr(k)) for k, f in UNARY_ATTRS.items() if cx.attr(k) is not None}
    return cx.op(UNARY[cx.node.op_type], [cx.inp(0)], **attrs)


@row("IsInf")
def _isinf(cx):
    return cx.op("isinf", [cx.inp(0)], detect_positive=bool(cx.attr("detect_positive", 1)),
                 detect_negative=bool(cx.attr("detect_negative", 1)))


@row(*BINARY)
def _binary(cx):
    return cx.op(BINARY[cx.node.op_type], [cx.inp(0), cx.inp(1)])


@row("Mod")
def _mod(cx):
    return cx.op("mod", [cx.inp(0), cx.inp(1)], fmod=bool(cx.attr("fmod", 0)))


@row("BitShift")
def _bitshift(cx):
    d = cx.attr("direction")
    if d not in ("LEFT", "RIGHT"):
        raise cx.fail(f"attribute direction={d!r} is not supported (LEFT, RIGHT)")
    return cx.op("bitshift", [cx.inp(0), cx.inp(1)], direction=d)


@row("Where")
def _where(cx):
    return cx.op("where", [cx.inp(0), cx.inp(1), cx.inp(2)])


@row("PRelu")
def _prelu(cx):
    x, slope = cx.inp(0), cx.inp(1)
    if cx.is_const(slope) and cx.array(slope).size and np.all(cx.array(slope) == cx.array(slope).reshape(-1)[0]) \
            and np.broadcast_shapes(cx.shape(x), cx.shape(slope)) == cx.shape(x):
        return cx.op("leaky_relu", [x], alpha=float(cx.array(slope).reshape(-1)[0]))
    neg = cx.op("relu", [cx.op("neg", [x], cx.sub("neg"))], cx.sub("relu_neg"))
    return cx.op("sub", [cx.op("relu", [x], cx.sub("relu")), cx.op("mul", [slope, neg], cx.sub("scaled"))])


@row("Swish")
def _swish(cx):
    x, alpha = cx.inp(0), float(cx.attr("alpha", 1.0))
    if alpha == 1.0:
        return cx.op("silu", [x])
    ax = cx.op("mul", [x, cx.const(np.asarray(alpha, cx.np_dtype(x)), cx.sub("alpha"))], cx.sub("scaled"))
    return cx.op("mul", [x, cx.op("sigmoid", [ax], cx.sub("sigmoid"))])


@row("LogSoftmax")
def _log_softmax(cx):
    x = cx.inp(0)
    ax = _axis(cx, int(cx.attr("axis", -1)), cx.rank(x))
    m = cx.op("reduce_max", [x], cx.sub("max"), axes=(ax,), keepdims=True)
    d = cx.op("sub", [x, m], cx.sub("shifted"))
    s = cx.op("reduce_sum", [cx.op("exp", [d], cx.sub("exp"))], cx.sub("sum"), axes=(ax,), keepdims=True)
    return cx.op("sub", [d, cx.op("log", [s], cx.sub("log"))])


# ---- reductions -------------------------------------------------------------------------------------
def _reduce_axes(cx, x):
    axes = cx.attr("axes")
    if axes is None:
        axes = cx.const_input(1, "axes")
    axes = () if axes is None else _ints(axes)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return None
        axes = tuple(range(cx.rank(x)))
    return tuple(sorted({_axis(cx, a, cx.rank(x)) for a in axes}))


@row("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", params=(1,))
def _reduce_more(cx):
    kind, x = cx.node.op_type, cx.inp(0)
    axes = _reduce_axes(cx, x)
    keep = bool(cx.attr("keepdims", 1))
    pre = {"ReduceL1": lambda v: cx.op("abs", [v], cx.sub("abs")),
           "ReduceL2": lambda v: cx.op("mul", [v, v], cx.sub("sq")),
           "ReduceSumSquare": lambda v: cx.op("mul", [v, v], cx.sub("sq")),
           "ReduceLogSumExp": lambda v: cx.op("exp", [v], cx.sub("exp"))}.get(kind, lambda v: v)
    post = {"ReduceL2": "sqrt", "ReduceLogSum": "log", "ReduceLogSumExp": "log"}.get(kind)
    if axes is None:                                 # noop_with_empty_axes: the elementwise part only
        y = pre(x)
        return cx.op(post, [y]) if post else (y if y != x else cx.op("identity", [x]))
    red = "reduce_prod" if kind == "ReduceProd" else "reduce_sum"
    y = cx.op(red, [pre(x)], cx.sub("sum") if post else None, axes=axes, keepdims=keep)
    return cx.op(post, [y]) if post else y


@row("ArgMax", "ArgMin")
def _arg(cx):
    x = cx.inp(0)
    return cx.op(cx.node.op_type.lower(), [x], axis=_axis(cx, int(cx.attr("axis", 0)), cx.rank(x)),
                 keepdims=bool(cx.attr("keepdims", 1)), select_last_index=bool(cx.attr("select_last_index", 0)))


@row("CumSum", params=(1,))
def _cumsum(cx):
    x = cx.inp(0)
    ax = _axis(cx, int(cx.const_input(1, "axis").reshape(-1)[0]), cx.rank(x))
    return cx.op(cx.node.op_type.lower(), [x], axis=ax, exclusive=bool(cx.attr("exclusive", 0)),
                 reverse=bool(cx.attr("reverse", 0)))


@row("Hardmax")
def _hardmax(cx):
    x = cx.inp(0)
    return cx.op("hardmax", [x], axis=_axis(cx, int(cx.attr("axis", -1)), cx.rank(x)))


@row("TopK", params=(1,))
def _topk(cx):
    x = cx.inp(0)
    k = int(cx.const_input(1, "K").reshape(-1)[0])
    attrs = dict(k=k, axis=_axis(cx, int(cx.attr("axis", -1)), cx.rank(x)), largest=bool(cx.attr("largest", 1)),
                 sorted=bool(cx.attr("sorted", 1)))
    if cx.is_const(x):
        norm = Node.make("topk", (), "x", **attrs).attr_dict
        vals, idx = op_def("topk").kernel([cx.array(x)], norm)
        return [cx.const(vals, cx.out(0)), cx.const(idx, cx.out(1))]
    op_def("topk").infer([TensorType(cx.shape(x), dtype_of(np.empty(0, cx.np_dtype(x))))],
                         Node.make("topk", (), "x", **attrs).attr_dict)
    return cx.imp.b.op_multi("topk", [cx.imp.value(x)], cx.out(0), n_outputs=2, **attrs)


@row("GatherElements")
def _gather_elements(cx):
    x = cx.inp(0)
    return cx.op("gather_elements", [x, cx.inp(1)], axis=_axis(cx, int(cx.attr("axis", 0)), cx.rank(x)))


@row("Einsum")
def _einsum(cx):
    eq = cx.attr("equation")
    return cx.op("einsum", cx.inputs(), equation="".join(str(eq).split()))


# ---- masks, tiles and constants ----------------------------------------------------------------------
@row("Trilu", params=(1,))
def _trilu(cx):
    x = cx.inp(0)
    k = cx.const_input(1, "k")
    k = 0 if k is None else int(k.reshape(-1)[0])
    sh = cx.shape(x)
    rows, cols = np.arange(sh[-2])[:, None], np.arange(sh[-1])[None, :]
    keep = (cols - rows >= k) if cx.attr("upper", 1) else (cols - rows <= k)
    if cx.is_const(x):
        return cx.const(np.where(keep, cx.array(x), np.zeros((), cx.np_dtype(x))))
    return cx.op("where", [cx.const(keep, cx.sub("mask")), x, cx.const(np.zeros((), cx.np_dtype(x)), cx.sub("zero"))])


def tile(cx, x: str, reps) -> str:
    """``x`` repeated ``reps[d]`` times along each dim (concat of copies; a constant is tiled at once)."""
    if cx.is_const(x):
        return cx.const(np.tile(cx.array(x), reps))
    for ax, r in enumerate(reps):
        if r == 0:
            raise cx.fail("Tile with a zero repeat is not supported (empty tensor)")
        if r > 1:
            x = cx.op("concat", [x] * r, cx.sub(f"tile{ax}"), axis=ax)
    return cx.op("identity", [x]) if all(r == 1 for r in reps) else x


@row("Tile", params=(1,))
def _tile(cx):
    x = cx.inp(0)
    reps = _ints(cx.const_input(1, "repeats"))
    if len(reps) != cx.rank(x):
        raise cx.fail(f"repeats {list(reps)} must have {cx.rank(x)} entries")
    return tile(cx, x, reps)


@row("EyeLike")
def _eye_like(cx):
    sh = cx.shape(cx.inp(0))
    if len(sh) != 2:
        raise cx.fail(f"EyeLike needs a 2-D input, got {list(sh)}")
    dt = cx.np_dtype(cx.inp(0))
    if cx.attr("dtype") is not None:
        import onnx
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(cx.attr("dtype"))))
    return cx.const(np.eye(sh[0], sh[1], int(cx.attr("k", 0)), dtype=dt))


@row("OneHot", params=(1, 2))
def _one_hot(cx):
    """``where(cast(idx) (wrapped by depth) == arange(depth), on, off)`` along ``axis``."""
    idx = cx.inp(0)
    depth = int(np.asarray(cx.const_input(1, "depth")).reshape(-1)[0])
    values = cx.const_input(2, "values").reshape(-1)
    rank = cx.rank(idx) + 1
    ax = _axis(cx, int(cx.attr("axis", -1)), rank)
    if cx.np_dtype(idx).kind != "i":
        idx = cx.op("cast", [idx], cx.sub("indices"), to="i64")
    dt = cx.np_dtype(idx)
    neg = cx.op("less", [idx, cx.const(np.zeros((), dt), cx.sub("zero"))], cx.sub("negative"))
    idx = cx.op("where", [neg, cx.op("add", [idx, cx.const(np.asarray(depth, dt), cx.sub("depth"))],
                                     cx.sub("wrapped")), idx], cx.sub("index"))
    sh = list(cx.shape(idx))
    idx = cx.op("reshape", [idx], cx.sub("unsqueezed"), shape=tuple(sh[:ax] + [1] + sh[ax:]))
    ar = np.arange(depth, dtype=dt).reshape([depth if i == ax else 1 for i in range(rank)])
    hot = cx.op("equal", [idx, cx.const(ar, cx.sub("arange"))], cx.sub("hot"))
    return cx.op("where", [hot, cx.const(values[1:2].reshape(()), cx.sub("on")),
                           cx.const(values[0:1].reshape(()), cx.sub("off"))])


@row("Compress", params=(1,))
def _compress(cx):
    """A constant ``condition`` selects indices: ``gather`` (of the flattened input when there is no axis)."""
    x = cx.inp(0)
    keep = np.flatnonzero(np.asarray(cx.const_input(1, "condition")).astype(bool)).astype(np.int64)
    if cx.attr("axis") is None:
        x = cx.op("reshape", [x], cx.sub("flat"), shape=(int(np.prod(cx.shape(x))),))
        ax = 0
    else:
        ax = _axis(cx, int(cx.attr("axis")), cx.rank(x))
    if keep.size and keep[-1] >= cx.shape(x)[ax]:
        raise cx.fail(f"condition selects index {keep[-1]} beyond dim {cx.shape(x)[ax]}")
    if keep.size == 0:
        raise cx.fail("condition selects nothing (empty tensor)")
    return cx.op("gather", [x, cx.const(keep, cx.sub("indices"))], axis=ax)


@row("CenterCropPad", params=(1,))
def _center_crop_pad(cx):
    """Per axis: crop ``(n - m) // 2`` from the start, or pad ``(m - n) // 2`` zeros before (the rest after)."""
    from .onnx_ops_movement import _slice

    x = cx.inp(0)
    rank = cx.rank(x)
    target = _ints(cx.const_input(1, "shape"))
    axes = cx.attr("axes")
    axes = tuple(range(rank)) if axes is None else tuple(_axis(cx, int(a), rank) for a in axes)
    if len(target) != len(axes):
        raise cx.fail(f"shape {list(target)} needs {len(axes)} entries")
    sh = cx.shape(x)
    crop = [(a, (sh[a] - m) // 2, (sh[a] - m) // 2 + m) for a, m in zip(axes, target) if m < sh[a]]
    if crop:
        x = _slice(cx, x, [c[1] for c in crop], [c[2] for c in crop], [c[0] for c in crop], [1] * len(crop),
                   cx.sub("crop"))
    pads = [0] * (2 * rank)
    for a, m in zip(axes, target):
        if m > sh[a]:
            pads[a], pads[a + rank] = (m - sh[a]) // 2, m - sh[a] - (m - sh[a]) // 2
    return cx.op("pad", [x], pads=tuple(pads), mode="constant", value=0) if any(pads) else x
