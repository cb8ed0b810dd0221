# SPDX-License-Identifier: Apache-2.0
"""Constant and shape-arithmetic rows of the ONNX converter table (evaluated at import time)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import IRError
from ..ir.types import dtype_of
from .onnx_ops import _ints, row


# ---- constants and shape arithmetic (evaluated at import time) ----------------------------------------
@row("Constant")
def _constant(cx):
    a = cx.attrs
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return cx.const(np.asarray(a[key], dtype))
    if "value" in a:
        return cx.const(a["value"])
    raise cx.fail(f"constant attribute {', '.join(a) or '(none)'} is not supported")


def _onnx_np_dtype(cx, to: int) -> np.dtype:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, TypeError, ValueError):
        raise cx.fail(f"element type {to} is not supported") from None


def _cast_to(cx, x: str, dt: np.dtype) -> str:
    if cx.is_const(x):
        return cx.const(cx.array(x).astype(dt))
    if cx.np_dtype(x) == dt:
        return x
    try:
        to = dtype_of(np.empty(0, dt))
    except IRError:
        raise cx.fail(f"casting a run-time {cx.np_dtype(x)} tensor to {dt} is not supported") from None
    return cx.op("cast", [x], to=to)


@row("Cast")
def _cast(cx):
    return _cast_to(cx, cx.inp(0), _onnx_np_dtype(cx, int(cx.attr("to"))))


@row("CastLike")
def _cast_like(cx):
    return _cast_to(cx, cx.inp(0), cx.np_dtype(cx.inp(1)))


@row("Shape")
def _shape(cx):
    sh = np.asarray(cx.shape(cx.inp(0)), np.int64)
    start, end = int(cx.attr("start", 0)), cx.attr("end")
    return cx.const(sh[start:None if end is None else int(end)])


@row("Size")
def _size(cx):
    return cx.const(np.asarray(math.prod(cx.shape(cx.inp(0))), np.int64))


@row("ConstantOfShape", params=(0,))
def _constant_of_shape(cx):
    shape = _ints(cx.const_input(0, "shape"))
    value = cx.attr("value", np.zeros(1, np.float32))
    return cx.const(np.full(shape, value.reshape(-1)[0], value.dtype))


@row("Range", params=(0, 1, 2))
def _range(cx):
    start, limit, delta = (cx.const_input(i, n) for i, n in enumerate(("start", "limit", "delta")))
    n = max(int(math.ceil((limit.item() - start.item()) / delta.item())), 0)
    return cx.const((start + np.arange(n, dtype=np.float64 if start.dtype.kind == "f" else np.int64)
                     * delta).astype(start.dtype))
