# SPDX-License-Identifier: Apache-2.0
"""Linear-algebra rows of the ONNX converter table: Gemm and MatMul."""
from __future__ import annotations

import numpy as np

from .onnx_ops import row


# ---- linear algebra -------------------------------------------------------------------------------
@row("Gemm")
def _gemm(cx):
    a, b, c = cx.inp(0), cx.inp(1), cx.inp(2)
    alpha, beta = float(cx.attr("alpha", 1.0)), float(cx.attr("beta", 1.0))
    if cx.attr("transA", 0):
        a = cx.op("transpose", [a], cx.sub("a_t"), perm=(1, 0))
    dt = cx.np_dtype(a)
    final = lambda hint: None if c is None else cx.sub(hint)  # noqa: E731  (the product is the result?)
    if cx.is_const(b) and not cx.is_const(a):                 # linear(x, W [out, in], bias)
        w = b
        if not cx.attr("transB", 0) or alpha != 1:
            wa = cx.array(b) if cx.attr("transB", 0) else cx.array(b).T
            w = cx.const(np.ascontiguousarray(wa * dt.type(alpha) if alpha != 1 else wa), cx.hint(b))
        n = cx.shape(w)[0]
        if c is None or (cx.is_const(c) and cx.shape(c) in ((), (1,), (n,), (1, n))):
            ins = [a, w]
            if c is not None and (cx.shape(c) != (n,) or beta != 1):
                bias = np.broadcast_to(cx.array(c), (1, n)).reshape(n).astype(dt)
                c = cx.const(bias * dt.type(beta) if beta != 1 else bias.copy(), cx.hint(c))
            return cx.op("linear", ins + ([c] if c is not None else []))
        y = cx.op("linear", [a, w], cx.sub("linear"))
    else:
        if cx.attr("transB", 0):
            b = cx.op("transpose", [b], cx.sub("b_t"), perm=(1, 0))
        if alpha == 1:
            y = cx.op("matmul", [a, b], final("matmul"))
        else:
            y = cx.op("matmul", [a, b], cx.sub("matmul"))
            y = cx.op("mul", [y, cx.const(np.asarray(alpha, dt), cx.sub("alpha"))], final("scaled"))
        if c is None:
            return y
    if beta != 1:
        c = cx.op("mul", [c, cx.const(np.asarray(beta, dt), cx.sub("beta"))], cx.sub("c_scaled"))
    return cx.op("add", [y, c])


@row("MatMul")
def _matmul(cx):
    a, b = cx.inp(0), cx.inp(1)
    if cx.is_const(b) and not cx.is_const(a) and cx.rank(b) == 2:
        return cx.op("linear", [a, cx.const(np.ascontiguousarray(cx.array(b).T), cx.hint(b))])
    ra, rb = cx.rank(a), cx.rank(b)
    if ra >= 2 and rb >= 2:
        return cx.op("matmul", [a, b])
    a2 = cx.op("reshape", [a], cx.sub("a2d"), shape=(1,) + cx.shape(a)) if ra == 1 else a
    b2 = cx.op("reshape", [b], cx.sub("b2d"), shape=cx.shape(b) + (1,)) if rb == 1 else b
    y = cx.op("matmul", [a2, b2], cx.sub("matmul"))
    sh = list(cx.shape(y))
    if rb == 1:
        del sh[-1]
    if ra == 1:
        del sh[-2 if rb != 1 else -1]
    return cx.op("reshape", [y], shape=tuple(sh))
