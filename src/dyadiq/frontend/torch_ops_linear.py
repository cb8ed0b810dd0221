# SPDX-License-Identifier: Apache-2.0
"""Convolution, linear and matmul rows of the torch.export op table."""
from __future__ import annotations

from .torch_ops import Const, _pair, row
from .torch_ops_elementwise import _scaled


# ---- convolution, linear, matmul ---------------------------------------------------------------------
@row("aten.conv2d", "aten.convolution", "aten.conv1d")
def _conv(cx, a):
    x, w, bias = a["input"], a["weight"], a["bias"]
    if a.get("transposed"):
        from .torch_ops_coverage import conv_transpose
        return conv_transpose(cx, a)
    rank = len(cx.shape(w))
    if rank not in (3, 4):
        raise cx.error(f"only 1-D and 2-D convolutions are supported, got a {rank - 2}-D one")
    one_d = rank == 3
    padding = a["padding"]
    stride, dilation = ((1,) + _pair(a[k])[:1] if one_d else _pair(a[k]) for k in ("stride", "dilation"))
    ksize = cx.shape(w)[2:] if not one_d else (1,) + cx.shape(w)[2:]
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise cx.error(f"padding={padding!r}")
        tot = [d * (k - 1) if padding == "same" else 0 for d, k in zip(dilation, ksize)]
        pad = (tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2)
    else:
        p = (0,) + _pair(padding)[:1] if one_d else _pair(padding)
        pad = (p[0], p[1], p[0], p[1])
    name = cx.layer(w)
    if one_d:
        x = cx.reshape(x, cx.shape(x)[:2] + (1,) + cx.shape(x)[2:], suffix="in4d")
        w = (Const(w.tensor.unsqueeze(2), w.hint, fqn=w.fqn) if isinstance(w, Const)
             else cx.reshape(w, cx.shape(w)[:2] + (1,) + cx.shape(w)[2:], suffix="w4d"))
    y = cx.emit("conv2d", [x, w] + ([bias] if bias is not None else []), name=name,
                stride=stride, pad=pad, dilation=dilation, groups=int(a["groups"]))
    return cx.reshape(y, cx.out_shape, suffix="out") if one_d else y


@row("aten.linear")
def _linear(cx, a):
    w, bias = a["weight"], a["bias"]
    return cx.emit("linear", [a["input"], w] + ([bias] if bias is not None else []), name=cx.layer(w))


def _is_weight(cx, v) -> bool:
    return isinstance(v, Const) and v.tensor.dim() == 2


@row("aten.mm", "aten.matmul", "aten.bmm")
def _matmul(cx, a):
    x, y = a["self"], a["mat2"] if "mat2" in a else a["other"]
    if _is_weight(cx, y):                                   # x @ Wᵀ-stored-as-[in, out] -> linear(x, W)
        return cx.emit("linear", [x, cx.transposed(y)], name=cx.layer(y))
    if len(cx.shape(x)) < 2 or len(cx.shape(y)) < 2:
        raise cx.error("matmul with a 1-D operand is not supported")
    return cx.emit("matmul", [x, y])


@row("aten.addmm")
def _addmm(cx, a):
    bias, x, y, beta, alpha = a["self"], a["mat1"], a["mat2"], a["beta"], a["alpha"]
    n_out = cx.out_shape[-1]
    if (_is_weight(cx, y) and beta == 1 and alpha == 1 and isinstance(bias, Const)
            and bias.tensor.numel() == n_out):                # addmm(b, x, W.T) = linear(x, W, b)
        b1 = bias if bias.tensor.shape == (n_out,) else Const(bias.tensor.reshape(n_out), bias.hint, fqn=bias.fqn)
        return cx.emit("linear", [x, cx.transposed(y), b1], name=cx.layer(y))
    prod = _scaled(cx, cx.emit("matmul", [x, y], suffix="mm"), alpha)
    return cx.emit("add", [prod, cx.operand(_scaled(cx, bias, beta), cx.out_dtype)])
