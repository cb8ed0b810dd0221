# SPDX-License-Identifier: Apache-2.0
"""Depthwise integer convolution (groups = C = O), NHWC, vectorized over 8 channels.

    A[n, i, j, c]    = x[n, i - pt, j - pl, c] - x_zp         (int16; 0 in the padding and for c >= C)
    acc[n, h, w, c]  = sum_{kh, kw} A[n, h*sh + kh*dh, w*sw + kw*dw, c] * W[kh, kw, c]
    Y[n, h, w, c]    = epilogue(acc[n, h, w, c], c [, skip])

No intrinsic is needed: per tap one 8-lane int16->int32 load, multiply and add; a block of ``OWB``
output columns x 8 channels of accumulators stays in registers, the taps are unrolled.
"""
from __future__ import annotations

import numpy as np

from .epilogue import Epilogue, te_epilogue
from .gemm import ConvGeom


def pack_weights(w: np.ndarray) -> np.ndarray:
    """``[C, 1, KH, KW]`` -> ``[KH, KW, Cp]`` int16 with ``Cp = ceil(C / 8) * 8`` (zero padded)."""
    c = w.shape[0]
    out = np.zeros(w.shape[2:] + (-(-c // 8) * 8,), np.int16)
    out[..., :c] = np.asarray(w[:, 0]).transpose(1, 2, 0)
    return out


def out_block(ow: int) -> int:
    """Output columns per register block: the largest divisor of ``ow`` up to 8."""
    return max(d for d in range(1, 9) if ow % d == 0)


def build(g: ConvGeom, x_dtype: str, x_zp: int, ep: Epilogue, mode: str,
          skip_dtype: str = "int8"):
    """Scheduled PrimFunc ``(x[N,H,W,C], w[KH,KW,Cp], [pre,] mult, rb, shift, lo, hi[, skip], y[N,OH,OW,C])``."""
    from tvm import te, tirx
    from tvm.s_tir import Schedule
    oh, ow = g.out_hw
    (sh, sw), (dh, dw), (pt, pl, _, _) = g.stride, g.dilation, g.pad
    C, Cp = g.c, -(-g.c // 8) * 8
    hp = (oh - 1) * sh + (g.kh - 1) * dh + 1
    wp = (ow - 1) * sw + (g.kw - 1) * dw + 1
    X = te.placeholder((g.n, g.h, g.w, C), x_dtype, name="x")
    Wt = te.placeholder((g.kh, g.kw, Cp), "int16", name="w")

    def a_val(n, i, j, c):
        ih, iw = i - pt, j - pl
        conds = [ih >= 0, ih < g.h, iw >= 0, iw < g.w] + ([c < C] if Cp != C else [])
        v = (X[n, ih, iw, c].astype("int32") - tirx.const(x_zp, "int32")).astype("int16")
        return tirx.if_then_else(tirx.all(*conds), v, tirx.const(0, "int16"))
    A = te.compute((g.n, hp, wp, Cp), a_val, name="A")
    rh = te.reduce_axis((0, g.kh), "rh")
    rw = te.reduce_axis((0, g.kw), "rw")
    Acc = te.compute((g.n, oh, ow, Cp), lambda n, h, w, c: te.sum(
        A[n, h * sh + rh * dh, w * sw + rw * dw, c].astype("int32") * Wt[rh, rw, c].astype("int32"),
        axis=[rh, rw]), name="Acc")
    params, f = te_epilogue(ep, mode)
    ins = [X, Wt, *params]
    if ep.residual is not None:
        S = te.placeholder((g.n, oh, ow, C), skip_dtype, name="skip")
        ins.append(S)
        Y = te.compute((g.n, oh, ow, C), lambda n, h, w, c: f(Acc[n, h, w, c], c, S[n, h, w, c]), name="Y")
    else:
        Y = te.compute((g.n, oh, ow, C), lambda n, h, w, c: f(Acc[n, h, w, c], c, None), name="Y")
    sch = Schedule(te.create_prim_func([*ins, Y]))
    acc = sch.get_sblock("Acc")
    n, h, w, c, kh, kw = sch.get_loops(acc)
    wo, wi = sch.split(w, [None, out_block(ow)])
    co, ci = sch.split(c, [None, 8])
    sch.reorder(n, h, wo, co, kh, kw, wi, ci)
    y = sch.get_sblock("Y")
    sch.reverse_compute_at(y, co)
    if C % 8 == 0:
        sch.vectorize(sch.get_loops(y)[-1])
    rows = sch.fuse(n, h)
    sch.parallel(rows)
    sch.unroll(kw)
    sch.unroll(wi)
    sch.vectorize(ci)
    init = sch.decompose_reduction(acc, kh)
    sch.vectorize(sch.get_loops(init)[-1])
    a = sch.get_sblock("A")                # (per output row instead: measured no faster)
    al = sch.get_loops(a)
    sch.parallel(sch.fuse(al[0], al[1]))
    _, av = sch.split(al[-1], [None, 8])
    sch.vectorize(av)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
