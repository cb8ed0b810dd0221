# SPDX-License-Identifier: Apache-2.0
"""The ONNX converter table: ``CONVERTERS[op_type](cx) -> ref | [refs]`` (one per ONNX output).

Adding an op (e.g. QuantizeLinear for QDQ models) is adding one ``@row("OpType")`` function. A converter
emits dyadiq ops with ``cx.op`` (folded when all inputs are constants) and returns a ref per output it
supports; an unsupported output that the model reads is an error. Notable mappings:

- ``Conv`` -> ``conv2d`` (1-D lifted to 2-D); pads ``[t, l, b, r]`` from ``pads`` or ``auto_pad``:
  SAME pads ``total = max(0, (ceil(n/s) - 1) s + (k - 1) d + 1 - n)``, the odd pixel at the end
  (SAME_UPPER) or the start (SAME_LOWER).
- ``Gemm`` with a constant ``B`` -> ``linear(x, alpha * op(B)^T, beta * C)``; ``MatMul(x, const W)`` ->
  ``linear(x, W^T)``; otherwise ``matmul`` (+ ``mul`` / ``add``).
- ``Flatten`` / ``Reshape`` / ``Squeeze`` / ``Unsqueeze`` -> ``reshape`` with a fully resolved shape;
  ``Split`` -> one ``slice`` per output; ``Max`` / ``Min`` / ``Sum`` / ``Mean`` (variadic) -> chains.
- Shape, Size, ConstantOfShape, Range, Cast, Expand of constants are evaluated with numpy.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .onnx import NodeContext

Converter = Callable[[NodeContext], "str | list[str | None]"]
CONVERTERS: dict[str, Converter] = {}
PARAMS: dict[str, tuple[int, ...]] = {}     # op type -> inputs that must be constants (shapes, axes, pads...)


def row(*op_types: str, params: tuple[int, ...] = ()):
    """Register a converter for ONNX op types whose inputs ``params`` must be known at import time."""
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS[t] = fn
            PARAMS[t] = params
        return fn
    return deco


def _ints(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(a).reshape(-1))


def _axis(cx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise cx.fail(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


# ---- 2-D windows, shared by the convolution / pooling rows and onnx_qdq ----------------------------
def _window(cx, spatial: tuple[int, ...], kernel: tuple[int, ...]):
    """(stride, pad (t, l, b, r), dilation) of a 2-D window from ONNX attributes and auto_pad."""
    nd = len(spatial)
    s = tuple(cx.attr("strides", (1,) * nd))
    d = tuple(cx.attr("dilations", (1,) * nd))
    auto = cx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = tuple(cx.attr("pads", (0,) * 2 * nd))
    elif auto == "VALID":
        p = (0,) * 2 * nd
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        lo, hi = [], []
        for n, k, st, dl in zip(spatial, kernel, s, d):
            total = max(0, (-(-n // st) - 1) * st + (k - 1) * dl + 1 - n)
            small = total // 2
            lo.append(small if auto == "SAME_UPPER" else total - small)
            hi.append(total - lo[-1])
        p = tuple(lo + hi)
    else:
        raise cx.fail(f"auto_pad {auto!r} is not supported")
    if nd == 1:                                   # lift 1-D to 2-D with a height of 1
        return (1, s[0]), (0, p[0], 0, p[1]), (1, d[0])
    return s, p, d


def _lift(cx, x: str, what: str) -> tuple[str, bool]:
    """Reshape an [N, C, L] operand to [N, C, 1, L]; 3-D windows are out of scope."""
    r = cx.rank(x)
    if r == 3:
        sh = cx.shape(x)
        return cx.op("reshape", [x], cx.sub(f"{what}2d"), shape=sh[:2] + (1,) + sh[2:]), True
    if r != 4:
        raise cx.fail(f"{r - 2}-D {cx.node.op_type} is not supported (1-D and 2-D only)")
    return x, False


def _unlift(cx, y: str) -> str:
    sh = cx.shape(y)
    return cx.op("reshape", [y], shape=sh[:2] + sh[3:])


# ---- the op families: importing them runs their @row registrations ---------------------------------
from . import onnx_ops_elementwise  # noqa: E402,F401  (elementwise, activations, Dropout)
from . import onnx_ops_conv  # noqa: E402,F401  (convolution, pooling, normalization, reductions)
from . import onnx_ops_linalg  # noqa: E402,F401  (Gemm, MatMul)
from . import onnx_ops_movement  # noqa: E402,F401  (reshape, transpose, concat, slice, pad...)
from . import onnx_ops_const  # noqa: E402,F401  (constants and shape arithmetic)
from . import onnx_ops_logic  # noqa: E402,F401  (more activations, logic, per-axis ops)
from . import onnx_ops_spatial  # noqa: E402,F401  (Resize, ConvTranspose, pixel shuffles, norms)
from . import onnx_qdq  # noqa: E402,F401  (QDQ / QOperator rows, registered on import)
