# SPDX-License-Identifier: Apache-2.0
"""Elementwise rows of the torch.export op table: activations, clamps, binary arithmetic."""
from __future__ import annotations

from .torch_ops import Const, _x, row


# ---- elementwise -------------------------------------------------------------------------------------
def _unary(op: str):
    return lambda cx, a: cx.emit(op, [_x(a)])


for _op in ("relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid", "exp", "log", "sqrt", "abs", "neg",
            "erf", "reciprocal"):
    row(f"aten.{_op}")(_unary(_op))


@row("aten.gelu")
def _gelu(cx, a):
    approx = a["approximate"]
    return cx.emit("gelu", [a["self"]], approximate="tanh" if approx == "tanh" else None)


@row("aten.leaky_relu")
def _leaky_relu(cx, a):
    return cx.emit("leaky_relu", [a["self"]], alpha=float(a["negative_slope"]))


@row("aten.rsqrt")
def _rsqrt(cx, a):
    return cx.emit("reciprocal", [cx.emit("sqrt", [a["self"]], suffix="sqrt")])


@row("aten.square")
def _square(cx, a):
    return cx.emit("mul", [a["self"], a["self"]])


def _clamp(cx, x, lo, hi):
    num = (int, float)
    if (lo is None or isinstance(lo, num)) and (hi is None or isinstance(hi, num)):
        if lo is None and hi is None:
            return x
        return cx.emit("clip", [x], min=None if lo is None else float(lo), max=None if hi is None else float(hi))
    dt = cx.out_dtype
    if lo is not None:
        x = cx.emit("maximum", [cx.operand(x, dt), cx.operand(lo, dt)], suffix="min" if hi is not None else None)
    if hi is not None:
        x = cx.emit("minimum", [cx.operand(x, dt), cx.operand(hi, dt)])
    return x


row("aten.clamp", "aten.clip")(lambda cx, a: _clamp(cx, a["self"], a["min"], a["max"]))
row("aten.clamp_min")(lambda cx, a: _clamp(cx, a["self"], a["min"], None))
row("aten.clamp_max")(lambda cx, a: _clamp(cx, a["self"], None, a["max"]))
row("aten.hardtanh")(lambda cx, a: _clamp(cx, a["self"], a["min_val"], a["max_val"]))
row("aten.relu6")(lambda cx, a: _clamp(cx, a["self"], 0.0, 6.0))


@row("aten.prelu", "aten._prelu_kernel")
def _prelu(cx, a):
    """``prelu(x, w) = relu(x) - w * relu(-x)``, ``w`` per channel (dim 1)."""
    x, w = a["self"], a["weight"]
    rank = len(cx.shape(x))
    if isinstance(w, Const) and w.tensor.numel() > 1 and rank > 2:
        w = Const(w.tensor.reshape((-1,) + (1,) * (rank - 2)), w.hint, fqn=w.fqn)
    neg = cx.emit("relu", [cx.emit("neg", [x], suffix="neg")], suffix="relu_neg")
    return cx.emit("sub", [cx.emit("relu", [x], suffix="relu"), cx.emit("mul", [w, neg], suffix="scaled")])


def _scaled(cx, v, alpha):
    """``alpha * v`` for a value, a Const or a number."""
    if alpha == 1:
        return v
    if isinstance(v, (int, float)):
        return v * alpha
    if isinstance(v, Const):
        return Const(v.tensor * alpha, f"{v.hint}.scaled")
    return cx.emit("mul", [cx.operand(v, cx.out_dtype), cx.operand(alpha, cx.out_dtype)], suffix="alpha")


def _binary(op: str, swap: bool = False):
    def convert(cx, a):
        lhs, rhs = a["self"], a["other"] if "other" in a else a["exponent"]
        if a.get("rounding_mode") is not None:
            raise cx.error(f"division with rounding_mode={a['rounding_mode']!r} is not supported")
        rhs = _scaled(cx, rhs, a.get("alpha", 1)) if not swap else rhs
        if swap:                                       # rsub(x, y, alpha) = y - alpha * x
            lhs, rhs = rhs, _scaled(cx, lhs, a.get("alpha", 1))
        dt = cx.out_dtype
        return cx.emit(op, [cx.operand(lhs, dt), cx.operand(rhs, dt)])
    return convert


for _op, _ir in {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "true_divide": "div", "pow": "pow",
                 "maximum": "maximum", "minimum": "minimum"}.items():
    row(f"aten.{_op}")(_binary(_ir))
row("aten.rsub")(_binary("sub", swap=True))
