# SPDX-License-Identifier: Apache-2.0
"""Relax lowering of the transformer integer ops (``ir/ops/integer_nn.py``), step for step the numpy kernels:
int64 throughout, ``>>`` arithmetic shifts, ``floor_divide`` for ``div_round`` (docs/numerics.md).
Called by ``codegen.tvm._Emitter.qsoftmax`` / ``qlayernorm`` / ``qembed``; ``em`` is that emitter."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..ir.ops.integer_nn import ISQRT_STEPS


def _c(em, v):
    return em.const(np.asarray(v, np.int64))


def _div_round(em, a, b):
    """floor((2a + b) / (2b))."""
    op = em.op
    two = _c(em, 2)
    return em.emit(op.floor_divide(op.add(op.multiply(a, two), b), em.emit(op.multiply(b, two))))


def _isqrt(em, q):
    """Newton floor sqrt of max(q, 1) from 2^ceil(bits/2) (as ``integer_nn.isqrt``)."""
    op = em.op
    q = em.emit(op.maximum(q, _c(em, 1)))
    bits = em.emit(op.sum(op.astype(op.greater(op.right_shift(q, em.const(np.arange(63, dtype=np.int64))),
                                                 _c(em, 0)), "int64"), axis=[-1], keepdims=True))
    x = em.emit(op.left_shift(_c(em, 1), op.right_shift(op.add(bits, _c(em, 1)), _c(em, 1))))
    for _ in range(ISQRT_STEPS):
        x = em.emit(op.minimum(x, op.right_shift(op.add(x, op.floor_divide(q, x)), _c(em, 1))))
    return x


def _out(em, n: Node, y):
    from .tvm import TVM_DTYPES
    y = em.op.add(y, _c(em, n.attr("out_zp")))
    return em.op.astype(em.op.clip(em.emit(y), int(n.attr("qmin")), int(n.attr("qmax"))), TVM_DTYPES[n.attr("dtype")])


def qsoftmax(em, n: Node, x, keep=None):
    op = em.op
    axis = int(n.attr("axis"))
    v = em.cast(x, "int64")
    if keep is not None:                      # masked: codes where keep == 0 become qmin_in, their e 0
        keep = em.emit(op.broadcast_to(em.cast(keep, "bool"), v.ty.shape))
        v = em.emit(op.where(keep, v, _c(em, n.attr("qmin_in"))))
    t = em.emit(op.subtract(op.max(v, axis=[axis], keepdims=True), v))
    frac = int(n.attr("frac"))
    w = em.emit(op.multiply(t, _c(em, n.attr("mult"))))
    q = em.emit(op.minimum(op.right_shift(w, _c(em, frac)), _c(em, 62)))
    f = em.emit(op.bitwise_and(w, _c(em, (1 << frac) - 1)))
    fr = _c(em, frac)
    e = em.emit(op.add(op.right_shift(op.multiply(_c(em, n.attr("c3")), f), fr), _c(em, n.attr("c2"))))
    e = em.emit(op.add(op.right_shift(op.multiply(e, f), fr), _c(em, n.attr("c1"))))
    e = em.emit(op.add(op.right_shift(op.multiply(e, f), fr), _c(em, n.attr("c0"))))
    e = em.emit(op.right_shift(e, q))
    if keep is not None:
        e = em.emit(op.where(keep, e, _c(em, 0)))
    total = op.sum(e, axis=[axis], keepdims=True)
    total = op.maximum(total, _c(em, 1)) if keep is not None else total
    s = em.emit(op.left_shift(total, _c(em, n.attr("out_shift"))))
    return _out(em, n, _div_round(em, em.emit(op.multiply(e, _c(em, n.attr("out_mult")))), s))


def qdiv(em, n: Node, a, b):
    """As ``integer_nn.divide_codes``."""
    op = em.op
    A = em.emit(op.subtract(em.cast(a, "int64"), _c(em, n.attr("a_zp"))))
    B = em.emit(op.subtract(em.cast(b, "int64"), _c(em, n.attr("b_zp"))))
    num = em.emit(op.multiply(A, _c(em, n.attr("mult"))))
    neg = em.emit(op.less(B, _c(em, 0)))
    den = em.emit(op.maximum(op.left_shift(op.abs(B), _c(em, n.attr("shift"))), _c(em, 1)))
    q = _div_round(em, em.emit(op.where(neg, op.negative(num), num)), den)
    inf = em.emit(op.left_shift(op.sign(num), _c(em, 40)))
    return _out(em, n, em.emit(op.where(op.equal(B, _c(em, 0)), inf, q)))


def qlayernorm(em, n: Node, x, g, b):
    op = em.op
    v = em.cast(x, "int64")
    dim = int(em.g.type_of(n.inputs[0]).shape[-1])
    d = em.emit(op.subtract(op.multiply(v, _c(em, dim)), op.sum(v, axis=[-1], keepdims=True)))
    pre, frac = int(n.attr("pre")), int(n.attr("frac"))
    ss = em.emit(op.sum(op.multiply(d, d), axis=[-1], keepdims=True))
    q = em.emit(op.add(op.floor_divide(op.multiply(ss, _c(em, 1 << (2 * pre))), _c(em, dim)), _c(em, n.attr("eps_q"))))
    nrm = _div_round(em, em.emit(op.multiply(d, _c(em, 1 << (frac + pre)))), _isqrt(em, q))
    sh = int(n.attr("shift"))
    y = op.add(op.add(op.multiply(nrm, em.cast(g, "int64")), em.cast(b, "int64")), _c(em, 1 << (sh - 1)))
    return _out(em, n, em.emit(op.right_shift(em.emit(y), _c(em, sh))))


def qembed(em, n: Node, ids, table):
    rows = int(em.g.type_of(n.inputs[1]).shape[0])
    idx = em.emit(em.op.clip(em.cast(ids, "int64"), 0, rows - 1))
    return em.op.take(table, idx, axis=0, mode="clip")
