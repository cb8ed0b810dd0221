# SPDX-License-Identifier: Apache-2.0
"""Elementwise rows of the ONNX converter table: unary/binary ops, variadic Max/Min/Sum/Mean, activations."""
from __future__ import annotations

import numpy as np

from ..ir.types import dtype_of
from .onnx_ops import row


# ---- elementwise --------------------------------------------------------------------------------
UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Neg": "neg", "Abs": "abs",
         "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "HardSwish": "hardswish"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow"}


@row(*UNARY)
def _unary(cx):
    return cx.op(UNARY[cx.node.op_type], [cx.inp(0)])


@row("Identity")
def _identity(cx):
    return cx.inp(0)


@row(*BINARY)
def _binary(cx):
    a, b = cx.inp(0), cx.inp(1)
    if cx.np_dtype(a) != cx.np_dtype(b) and cx.is_const(b):   # Pow(float x, int y): y in x's dtype
        y = cx.array(b).astype(cx.np_dtype(a))
        if not np.array_equal(y, cx.array(b)):
            raise cx.fail(f"exponent of dtype {cx.np_dtype(b)} is not exact in {cx.np_dtype(a)}")
        b = cx.const(y, cx.sub("exponent"))
    elif cx.np_dtype(a) != cx.np_dtype(b) and cx.np_dtype(a).kind == "f" and cx.np_dtype(b).kind in "iu":
        b = cx.op("cast", [b], cx.sub("exponent"), to=dtype_of(np.empty(0, cx.np_dtype(a))))  # exact: |y| < 2^24
    return cx.op(BINARY[cx.node.op_type], [a, b])


@row("Max", "Min", "Sum", "Mean")
def _variadic(cx):
    kind = cx.node.op_type
    op = {"Max": "maximum", "Min": "minimum"}.get(kind, "add")
    refs = cx.inputs()
    acc = refs[0]
    for k, r in enumerate(refs[1:], 1):
        last = k == len(refs) - 1 and kind != "Mean"
        acc = cx.op(op, [acc, r], None if last else cx.sub(f"{op}{k}"))
    if kind == "Mean":
        n = cx.const(np.asarray(len(refs), cx.np_dtype(acc)), cx.sub("count"))
        return cx.op("div", [acc, n])
    return acc


@row("Clip", params=(1, 2))
def _clip(cx):
    x = cx.inp(0)
    lo, hi = cx.const_input(1, "min"), cx.const_input(2, "max")
    lo, hi = cx.attr("min", lo), cx.attr("max", hi)          # opset < 11 style attributes, if present
    dt = cx.np_dtype(x)
    if dt.kind in "iu":                                         # the kernel's +-inf defaults are float
        info = np.iinfo(dt)
        lo, hi = (info.min if lo is None else lo), (info.max if hi is None else hi)
    val = lambda v: None if v is None else np.asarray(v).item()  # noqa: E731
    return cx.op("clip", [x], min=val(lo), max=val(hi))


@row("LeakyRelu")
def _leaky_relu(cx):
    return cx.op("leaky_relu", [cx.inp(0)], alpha=float(cx.attr("alpha", 0.01)))


@row("HardSigmoid")
def _hardsigmoid(cx):
    return cx.op("hardsigmoid", [cx.inp(0)], alpha=float(cx.attr("alpha", 0.2)), beta=float(cx.attr("beta", 0.5)))


@row("Gelu")
def _gelu(cx):
    return cx.op("gelu", [cx.inp(0)], approximate=cx.attr("approximate", "none"))


@row("Dropout", params=(1, 2))
def _dropout(cx):
    x = cx.inp(0)
    training, ratio = cx.const_input(2, "training_mode"), cx.const_input(1, "ratio")
    if training is not None and bool(training) and (ratio is None or float(ratio) != 0):
        raise cx.fail("training-mode Dropout is not supported (inference only)")
    mask = cx.const(np.ones(cx.shape(x), np.bool_), cx.out(1)) if cx.used(1) else None
    return [x, mask]                       # inference: identity, nothing dropped
