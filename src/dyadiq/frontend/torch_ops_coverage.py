# SPDX-License-Identifier: Apache-2.0
"""torch.export rows for the ops of detectors, segmenters and OCR models (issue 15).

- ``upsample_{nearest,nearest_exact,bilinear,bicubic}2d`` (``.vec`` and core forms) -> ``resize``: torch's
  source index is ``dst * scale`` (nearest: asymmetric + floor), ``(dst + 1/2) scale - 1/2`` (bilinear/bicubic,
  ``half_pixel``; nearest-exact: ``half_pixel`` + round_prefer_ceil) or ``dst (n - 1)/(m - 1)`` (align_corners),
  with ``scale = 1 / scale_factor`` when one was given, else ``n / m``. Integer nearest factors keep the
  exact ``concat``-of-copies path of ``torch_ops_movement``.
- ``conv_transpose{1,2}d`` / transposed ``convolution`` -> ``conv_transpose2d``.
- ``elu selu celu mish softplus`` and rounding/trigonometric functions -> one op each; comparisons and
  logical ops -> ``i1`` ops; ``where``; ``argmax``/``argmin``; ``cumsum``; ``topk``; ``tile``.
- ``instance_norm`` (input statistics) / ``group_norm`` -> ``layernorm`` over the spatial (group) dims with a
  unit affine, then ``* w[c] + b[c]``; ``pixel_shuffle`` / ``pixel_unshuffle`` -> reshape, transpose, reshape.
"""
from __future__ import annotations

import math

import torch

from .torch_ops import Const, _axis, _dims, _pair, _x, row
from .torch_ops_elementwise import _unary


# ---- resize ----------------------------------------------------------------------------------------
def _given_scales(a: dict, n_sp: int) -> list[float] | None:
    """The scale factors the user passed (torch maps coordinates with them), or None (sizes: n / m)."""
    sf = a.get("scale_factors")
    if sf is not None:
        return [float(s) for s in sf] * (n_sp if len(sf) == 1 else 1)
    given = [a.get(k) for k in ("scales_h", "scales_w", "scales") if k in a]
    return [float(s) for s in given] if given and all(s is not None for s in given) else None


def resize(cx, a: dict, *, mode: str, coord: str, nearest_mode: str | None = None, align: bool = False,
           antialias: bool = False) -> str:
    x = _x(a)
    shape, out = cx.shape(x), cx.out_shape
    given = None if align else _given_scales(a, len(shape) - 2)
    spatial = given if given and len(given) == len(shape) - 2 else [o / n for o, n in zip(out[2:], shape[2:])]
    return cx.emit("resize", [x], size=tuple(out), scales=(1.0, 1.0, *spatial), mode=mode,
                   coord="align_corners" if align else coord, nearest_mode=nearest_mode,
                   cubic_a=-0.75 if mode == "cubic" else None, antialias=antialias or None)


@row("aten.upsample_bilinear2d", "aten.upsample_bicubic2d", "aten._upsample_bilinear2d_aa",
     "aten._upsample_bicubic2d_aa", "aten.upsample_linear1d")
def _upsample_interp(cx, a):
    target = str(cx.node.target.overloadpacket)
    return resize(cx, a, mode="cubic" if "bicubic" in target else "linear", coord="half_pixel",
                  align=bool(a.get("align_corners")), antialias=target.endswith("_aa"))


@row("aten._upsample_nearest_exact2d", "aten.upsample_nearest_exact2d")
def _upsample_nearest_exact(cx, a):
    return resize(cx, a, mode="nearest", coord="half_pixel", nearest_mode="round_prefer_ceil")


def nearest_resize(cx, a) -> str:
    """Legacy nearest with any factor (``torch_ops_movement`` keeps integer factors as copies)."""
    return resize(cx, a, mode="nearest", coord="asymmetric", nearest_mode="floor")


# ---- transposed convolution ------------------------------------------------------------------------
@row("aten.conv_transpose2d", "aten.conv_transpose1d")
def conv_transpose(cx, a):
    x, w, bias = a["input"], a["weight"], a["bias"]
    rank = len(cx.shape(w))
    if rank not in (3, 4):
        raise cx.error(f"only 1-D and 2-D transposed convolutions are supported, got a {rank - 2}-D one")
    one_d = rank == 3
    lift = (lambda v: (1,) + _pair(v)[:1]) if one_d else _pair
    s, d, op = lift(a["stride"]), lift(a["dilation"]), lift(a["output_padding"])
    p = (0,) + _pair(a["padding"])[:1] if one_d else _pair(a["padding"])
    if one_d:
        x = cx.reshape(x, cx.shape(x)[:2] + (1,) + cx.shape(x)[2:], suffix="in4d")
        w = (Const(w.tensor.unsqueeze(2), w.hint, fqn=w.fqn) if isinstance(w, Const)
             else cx.reshape(w, cx.shape(w)[:2] + (1,) + cx.shape(w)[2:], suffix="w4d"))
    y = cx.emit("conv_transpose2d", [x, w] + ([bias] if bias is not None else []), name=cx.layer(w),
                stride=s, pad=(p[0], p[1], p[0], p[1]), dilation=d, output_padding=op, groups=int(a["groups"]))
    return cx.reshape(y, cx.out_shape, suffix="out") if one_d else y


# ---- activations, predicates, selections -----------------------------------------------------------
for _op in ("mish", "floor", "ceil", "sign", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
            "asinh", "acosh", "atanh", "isnan", "logical_not"):
    row(f"aten.{_op}")(_unary(_op))


@row("aten.round")
def _round(cx, a):
    if a.get("decimals"):
        raise cx.error(f"round(decimals={a['decimals']}) is not supported")
    return cx.emit("round", [a["self"]])


@row("aten.elu")
def _elu(cx, a):
    alpha, scale, inp = float(a["alpha"]), float(a.get("scale", 1)), float(a.get("input_scale", 1))
    if inp != 1:
        raise cx.error(f"elu with input_scale={inp} is not supported")
    if scale == 1:
        return cx.emit("elu", [a["self"]], alpha=alpha)
    return cx.emit("selu", [a["self"]], alpha=alpha, gamma=scale)


row("aten.selu")(lambda cx, a: cx.emit("selu", [a["self"]]))
row("aten.celu")(lambda cx, a: cx.emit("celu", [a["self"]], alpha=float(a["alpha"])))


@row("aten.softplus")
def _softplus(cx, a):
    beta = float(a["beta"])
    if beta == 1:
        return cx.emit("softplus", [a["self"]])
    dt = cx.out_dtype
    bx = cx.emit("mul", [a["self"], cx.operand(beta, dt)], suffix="beta_x")
    return cx.emit("div", [cx.emit("softplus", [bx], suffix="softplus"), cx.operand(beta, dt)])


COMPARE = {"eq": "equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
           "logical_and": "logical_and", "logical_or": "logical_or", "logical_xor": "logical_xor"}


def _compare(op: str):
    def convert(cx, a):
        lhs, rhs = a["self"], a["other"]
        dt = cx.dtype(lhs)
        if op.startswith("logical") and dt != "i1":
            raise cx.error(f"{op} on {dt} tensors is not supported (bool only)")
        if op.startswith("logical") and not isinstance(rhs, (bool, Const)) and cx.dtype(rhs) != "i1":
            raise cx.error(f"{op} of bool and {cx.dtype(rhs)} tensors is not supported")
        return cx.emit(op, [lhs, cx.operand(rhs, dt)])
    return convert


for _k, _ir in COMPARE.items():
    row(f"aten.{_k}")(_compare(_ir))
for _k, _ir in {"__and__": "logical_and", "bitwise_and": "logical_and", "__or__": "logical_or",
                "bitwise_or": "logical_or", "__xor__": "logical_xor", "bitwise_xor": "logical_xor"}.items():
    row(f"aten.{_k}")(_compare(_ir))            # on bool tensors (masks); integer bitwise ops are refused


@row("aten.ne")
def _ne(cx, a):
    eq = cx.emit("equal", [a["self"], cx.operand(a["other"], cx.dtype(a["self"]))], suffix="eq")
    return cx.emit("logical_not", [eq])


@row("aten.bitwise_not")
def _bitwise_not(cx, a):
    return cx.emit("logical_not" if cx.dtype(a["self"]) == "i1" else "bitwise_not", [a["self"]])


@row("aten.where")
def _where(cx, a):
    if "other" not in a:
        raise cx.error("where(condition) (nonzero indices) is not supported")
    dt = cx.out_dtype
    return cx.emit("where", [a["condition"], cx.operand(a["self"], dt), cx.operand(a["other"], dt)])


def _arg(op: str):
    def convert(cx, a):
        x = a["self"]
        if a.get("dim") is None:
            x = cx.reshape(x, (math.prod(cx.shape(x)),), suffix="flat")
            return cx.emit(op, [x], axis=0, keepdims=False) if not a.get("keepdim") else cx.reshape(
                cx.emit(op, [x], suffix="flat_arg", axis=0, keepdims=True), cx.out_shape)
        return cx.emit(op, [x], axis=_axis(a["dim"], len(cx.shape(x))), keepdims=bool(a.get("keepdim")))
    return convert


row("aten.argmax")(_arg("argmax"))
row("aten.argmin")(_arg("argmin"))


@row("aten.linalg_vector_norm", "aten.norm")
def _vector_norm(cx, a):
    """The 1- and 2-norm over ``dim`` (ConvNeXt V2's global response normalization): ``sum |x|``,
    ``sqrt(sum x^2)``."""
    x = a.get("self", a.get("input"))
    order = a.get("ord", a.get("p", 2))
    order = 2 if order is None else float(order)
    if order not in (1.0, 2.0) or a.get("dtype") is not None:
        raise cx.error(f"vector norm of order {order} is not supported (1 and 2)")
    axes = _dims(a.get("dim"), len(cx.shape(x)))
    keep = bool(a.get("keepdim", False))
    if order == 1:
        return cx.emit("reduce_sum", [cx.emit("abs", [x], suffix="abs")], axes=axes, keepdims=keep)
    sq = cx.emit("reduce_sum", [cx.emit("mul", [x, x], suffix="sq")], suffix="sumsq", axes=axes, keepdims=keep)
    return cx.emit("sqrt", [sq])


@row("aten.gather")
def _gather(cx, a):
    if a.get("sparse_grad"):
        raise cx.error("gather with sparse_grad is not supported")
    x = a["self"]
    return cx.emit("gather_elements", [x, a["index"]], axis=_axis(a["dim"], len(cx.shape(x))))


@row("aten.cumsum")
def _cumsum(cx, a):
    if a.get("dtype") is not None and a["dtype"] != cx.meta.dtype:
        raise cx.error(f"cumsum with dtype={a['dtype']} is not supported")
    x = a["self"]
    if cx.dtype(x) != cx.out_dtype:                 # torch sums integers (and bools) in int64
        x = cx.emit("cast", [x], suffix="wide", to=cx.out_dtype)
    return cx.emit("cumsum", [x], axis=_axis(a["dim"], len(cx.shape(a["self"]))))


@row("aten.topk")
def _topk(cx, a):
    x = a["self"]
    attrs = dict(k=int(a["k"]), axis=_axis(a["dim"], len(cx.shape(x))), largest=bool(a["largest"]),
                 sorted=bool(a["sorted"]))
    return tuple(cx.b.op_multi("topk", [cx.value(x)], cx.node.name, n_outputs=2, **attrs))


@row("aten.tile")
def _tile(cx, a):
    from .torch_ops_movement import _tile as tile_copies
    reps = tuple(int(r) for r in a["dims"])
    src = cx.shape(a["self"])
    rank = max(len(reps), len(src))
    reps = (1,) * (rank - len(reps)) + reps
    return tile_copies(cx, cx.reshape(a["self"], (1,) * (rank - len(src)) + src, suffix="unsqueezed"), reps)


# ---- normalizations and pixel shuffles -------------------------------------------------------------
def _unit_norm(cx, x, shape3, eps: float, dtype) -> str:
    """layernorm of ``x`` reshaped to ``shape3`` ([N, G, rest]) over its last axis, with a unit affine."""
    y = cx.reshape(x, shape3, suffix="grouped")
    ones = Const(torch.ones(shape3[2:], dtype=dtype), f"{cx.node.name}.ones")
    zeros = Const(torch.zeros(shape3[2:], dtype=dtype), f"{cx.node.name}.zeros")
    return cx.emit("layernorm", [y, ones, zeros], suffix="normalized", axis=2, eps=eps)


def _affine(cx, y, w, b, shape) -> str:
    rank = len(shape)
    y = cx.reshape(y, shape, suffix="ungrouped")
    for v, op, what in ((w, "mul", "scaled"), (b, "add", None)):
        if v is None:
            continue
        v = (Const(v.tensor.reshape((-1,) + (1,) * (rank - 2)), v.hint, fqn=v.fqn) if isinstance(v, Const)
             else cx.reshape(v, (shape[1],) + (1,) * (rank - 2), suffix=f"{op}_c"))
        y = cx.emit(op, [y, v], suffix=what) if what else cx.emit(op, [y, v])
    return y


@row("aten.instance_norm")
def _instance_norm(cx, a):
    x = a["input"]
    sh = cx.shape(x)
    if not a["use_input_stats"]:
        raise cx.error("instance_norm with running statistics is not supported")
    y = _unit_norm(cx, x, (sh[0], sh[1], math.prod(sh[2:])), float(a["eps"]), cx.meta.dtype)
    return _affine(cx, y, a["weight"], a["bias"], sh)


@row("aten.group_norm")
def _group_norm(cx, a):
    x, g = a["input"], int(a["num_groups"])
    sh = cx.shape(x)
    y = _unit_norm(cx, x, (sh[0], g, math.prod(sh[1:]) // g), float(a["eps"]), cx.meta.dtype)
    return _affine(cx, y, a["weight"], a["bias"], sh)


@row("aten.pixel_shuffle")
def _pixel_shuffle(cx, a):
    x, r = a["self"], int(a["upscale_factor"])
    n, c, h, w = cx.shape(x)
    y = cx.reshape(x, (n, c // (r * r), r, r, h, w), suffix="split")
    y = cx.emit("transpose", [y], suffix="perm", perm=(0, 1, 4, 2, 5, 3))
    return cx.reshape(y, cx.out_shape)


@row("aten.pixel_unshuffle")
def _pixel_unshuffle(cx, a):
    x, r = a["self"], int(a["downscale_factor"])
    n, c, h, w = cx.shape(x)
    y = cx.reshape(x, (n, c, h // r, r, w // r, r), suffix="split")
    y = cx.emit("transpose", [y], suffix="perm", perm=(0, 1, 3, 5, 2, 4))
    return cx.reshape(y, cx.out_shape)
