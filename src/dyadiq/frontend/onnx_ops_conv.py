# SPDX-License-Identifier: Apache-2.0
"""Convolution, pooling, normalization, softmax and reduction rows of the ONNX converter table."""
from __future__ import annotations

import numpy as np

from ..ir.ops.window import covers_input
from .onnx_ops import _axis, _ints, _lift, _unlift, _window, row


# ---- convolution, pooling, normalization ------------------------------------------------------------
@row("Conv")
def _conv(cx):
    x, w, bias = cx.inp(0), cx.inp(1), cx.inp(2)
    kernel = tuple(cx.attr("kernel_shape", cx.shape(w)[2:]))
    s, p, d = _window(cx, cx.shape(x)[2:], kernel)
    x4, lifted = _lift(cx, x, "x")
    w4 = _lift(cx, w, "w")[0] if lifted else w
    ins = [x4, w4] + ([bias] if bias is not None else [])
    y = cx.op("conv2d", ins, cx.sub("conv2d") if lifted else None,
              stride=s, pad=p, dilation=d, groups=int(cx.attr("group", 1)))
    return _unlift(cx, y) if lifted else y


def _pool(cx, op: str, **extra):
    x = cx.inp(0)
    if cx.attr("kernel_shape") is None:
        raise cx.fail("kernel_shape is required")
    kernel = tuple(cx.attr("kernel_shape"))
    s, p, d = _window(cx, cx.shape(x)[2:], kernel)
    x4, lifted = _lift(cx, x, "x")
    k = (1, kernel[0]) if lifted else kernel
    if covers_input(cx.shape(x4)[2:], dict(kernel=k, stride=s, pad=p, dilation=d,
                                            ceil_mode=bool(cx.attr("ceil_mode", 0)))):
        y = cx.op("global_avgpool", [x4]) if op == "avgpool" else cx.op("reduce_max", [x4], axes=(2, 3),
                                                                              keepdims=True)
        return _unlift(cx, y) if lifted else y
    y = cx.op(op, [x4], cx.sub(op) if lifted else None, kernel=k, stride=s, pad=p, dilation=d,
              ceil_mode=bool(cx.attr("ceil_mode", 0)), **extra)
    return _unlift(cx, y) if lifted else y


@row("MaxPool")
def _maxpool(cx):
    return [_pool(cx, "maxpool")]            # the Indices output is unsupported


@row("AveragePool")
def _avgpool(cx):
    return _pool(cx, "avgpool", count_include_pad=bool(cx.attr("count_include_pad", 0)))


@row("GlobalAveragePool")
def _global_avgpool(cx):
    return cx.op("global_avgpool", [cx.inp(0)])


@row("GlobalMaxPool")
def _global_maxpool(cx):
    x = cx.inp(0)
    return cx.op("reduce_max", [x], axes=tuple(range(2, cx.rank(x))), keepdims=True)


@row("BatchNormalization")
def _batchnorm(cx):
    if cx.attr("training_mode", 0):
        raise cx.fail("training-mode BatchNormalization is not supported (inference only)")
    return [cx.op("batchnorm", [cx.inp(i) for i in range(5)], eps=float(cx.attr("epsilon", 1e-5)))]


@row("LayerNormalization")
def _layernorm(cx):
    x = cx.inp(0)
    axis = _axis(cx, int(cx.attr("axis", -1)), cx.rank(x))
    norm_shape = cx.shape(x)[axis:]
    params = []
    for i, what, fill in ((1, "scale", 1), (2, "bias", 0)):
        r = cx.inp(i)
        if r is None:
            r = cx.const(np.full(norm_shape, fill, cx.np_dtype(x)), cx.sub(what))
        elif cx.shape(r) != norm_shape:
            if not cx.is_const(r):
                raise cx.fail(f"{what} of shape {list(cx.shape(r))} must be {list(norm_shape)} or a constant")
            r = cx.const(np.broadcast_to(cx.array(r), norm_shape).copy(), cx.sub(what))
        params.append(r)
    eps = float(cx.attr("epsilon", 1e-5))
    y = cx.op("layernorm", [x] + params, axis=axis, eps=eps)
    if not (cx.used(1) or cx.used(2)):
        return [y]
    axes = tuple(range(axis, cx.rank(x)))                     # Mean, InvStdDev = 1 / sqrt(var + eps)
    mu = cx.op("mean", [x], cx.out(1) if cx.used(1) else cx.sub("mean"), axes=axes, keepdims=True)
    if not cx.used(2):
        return [y, mu]
    d = cx.op("sub", [x, mu], cx.sub("centered"))
    var = cx.op("mean", [cx.op("mul", [d, d], cx.sub("sq"))], cx.sub("var"), axes=axes, keepdims=True)
    std = cx.op("sqrt", [cx.op("add", [var, cx.const(np.asarray(eps, cx.np_dtype(x)), cx.sub("eps"))],
                               cx.sub("var_eps"))], cx.sub("std"))
    return [y, mu, cx.op("reciprocal", [std], cx.out(2))]


@row("Softmax")
def _softmax(cx):
    x = cx.inp(0)
    return cx.op("softmax", [x], axis=_axis(cx, int(cx.attr("axis", -1)), cx.rank(x)))


REDUCE = {"ReduceMean": "mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min"}


@row(*REDUCE, params=(1,))
def _reduce(cx):
    x = cx.inp(0)
    axes = cx.attr("axes")
    if axes is None:
        axes = cx.const_input(1, "axes")
    axes = () if axes is None else _ints(axes)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return x
        axes = tuple(range(cx.rank(x)))
    axes = tuple(sorted({_axis(cx, a, cx.rank(x)) for a in axes}))
    return cx.op(REDUCE[cx.node.op_type], [x], axes=axes, keepdims=bool(cx.attr("keepdims", 1)))
