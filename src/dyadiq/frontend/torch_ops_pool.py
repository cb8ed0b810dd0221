# SPDX-License-Identifier: Apache-2.0
"""Pooling and reduction rows of the torch.export op table."""
from __future__ import annotations

from ..ir.ops.window import covers_input
from .torch_ops import Unavailable, _axis, _dims, _pair, row
from .torch_ops_elementwise import _binary
from .torch_ops_norm import _check_dtype_arg


# ---- pooling and reductions --------------------------------------------------------------------------
def _reduce(op: str):
    def convert(cx, a):
        _check_dtype_arg(cx, a)
        x = a["self"]
        rank = len(cx.shape(x))
        axes = _dims(a.get("dim"), rank)
        keep = bool(a.get("keepdim", False))
        if op == "mean" and keep and rank >= 3 and axes == tuple(range(2, rank)):
            return cx.emit("global_avgpool", [x])          # mean over all spatial dims, kept
        return cx.emit(op, [x], axes=axes, keepdims=keep)
    return convert


row("aten.mean")(_reduce("mean"))
row("aten.sum")(_reduce("reduce_sum"))
row("aten.amax")(_reduce("reduce_max"))
row("aten.amin")(_reduce("reduce_min"))


def _extreme(kind: str):
    """``max(x)``, ``max(x, dim)`` (values only; the indices are not computed) and ``max(x, y)``."""
    def convert(cx, a):
        if "other" in a:
            return _binary(f"{kind}imum")(cx, a)
        x, rank = a["self"], len(cx.shape(a["self"]))
        if "dim" not in a:
            return cx.emit(f"reduce_{kind}", [x], axes=tuple(range(rank)), keepdims=False)
        y = cx.emit(f"reduce_{kind}", [x], axes=(_axis(a["dim"], rank),), keepdims=bool(a["keepdim"]))
        return (y, Unavailable(f"{kind} indices"))
    return convert


row("aten.max")(_extreme("max"))
row("aten.min")(_extreme("min"))


@row("aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d")
def _adaptive_avg_pool(cx, a):
    x = a["self"]
    shape = cx.shape(x)
    if len(shape) != 4:
        raise cx.error(f"adaptive_avg_pool2d needs a 4-D input, got {list(shape)}")
    h, w = shape[2:]
    oh, ow = (d if o is None else int(o) for o, d in zip(_pair(a["output_size"]), (h, w)))
    if (oh, ow) == (1, 1):
        return cx.emit("global_avgpool", [x])
    if h % oh or w % ow:
        raise cx.error(f"adaptive pooling {h}x{w} -> {oh}x{ow} needs divisible sizes")
    k = (h // oh, w // ow)
    return cx.emit("avgpool", [x], kernel=k, stride=k, pad=(0, 0, 0, 0))


@row("aten.avg_pool2d")
def _avg_pool(cx, a):
    k = _pair(a["kernel_size"])
    s = _pair(a["stride"]) if a["stride"] else k
    p = _pair(a["padding"])
    div = a["divisor_override"]
    if div is not None and not (div == k[0] * k[1] and p == (0, 0) and not a["ceil_mode"]):
        raise cx.error(f"divisor_override={div} is not supported")
    attrs = dict(kernel=k, stride=s, pad=(p[0], p[1], p[0], p[1]), ceil_mode=bool(a["ceil_mode"]))
    if len(cx.shape(a["self"])) == 4 and covers_input(cx.shape(a["self"])[2:], attrs):
        return cx.emit("global_avgpool", [a["self"]])
    return cx.emit("avgpool", [a["self"]], count_include_pad=bool(a["count_include_pad"]), **attrs)


@row("aten.max_pool2d", "aten.max_pool2d_with_indices")
def _max_pool(cx, a):
    k = _pair(a["kernel_size"])
    s = _pair(a["stride"]) if a["stride"] else k
    p = _pair(a["padding"])
    attrs = dict(kernel=k, stride=s, pad=(p[0], p[1], p[0], p[1]), dilation=_pair(a["dilation"]),
                 ceil_mode=bool(a["ceil_mode"]))
    if len(cx.shape(a["self"])) == 4 and covers_input(cx.shape(a["self"])[2:], attrs):
        y = cx.emit("reduce_max", [a["self"]], axes=(2, 3), keepdims=True)
    else:
        y = cx.emit("maxpool", [a["self"]], **attrs)
    if str(cx.node.target.overloadpacket) == "aten.max_pool2d":
        return y
    return (y, Unavailable("max-pool indices"))
