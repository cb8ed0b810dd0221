# SPDX-License-Identifier: Apache-2.0
"""Depthwise integer convolution (groups = C = O), NHWC, one multiply-add instruction per tap and vector.

    A[n, i, j, c]    = x[n, i - pt, j - pl, c] + off        (uint8; x_zp + off in the padding and for c >= C)
    acc[n, h, w, c]  = sum_{kh, kw} A[n, h*sh + kh*dh, w*sw + kw*dw, c] * W[kh, kw, c]     (W int16)
    Y[n, h, w, c]    = epilogue(acc[n, h, w, c], c [, skip])

``off`` is 128 for int8 ``x`` and 0 for uint8 (``gemm.vnni_offset``); the bias absorbs
``-(x_zp + off) * sum W[:, :, c]`` (``gemm.vnni_bias``), exact. Each ``A`` value is zero-extended from
memory into an int32 lane and the weight vector is zero-extended likewise, so an int16-pair multiply-add
(``intrin.LANEWISE``: ``vpdpwssds`` with VNNI, ``vpmaddwd`` + ``vpaddd`` on AVX2) computes
``lo(a) * w + 0 * 0 = a * w`` exactly, ``V`` channels per instruction (16 on zmm for ``"vnni512"``, else
8). ``A`` is one byte per value, so converting the input is one ``vpxor`` per 64 values and a band of rows
stays in L2. A block of ``OWB`` output columns of accumulators stays in registers while the taps are
unrolled over it.
"""
from __future__ import annotations

import numpy as np

from . import intrin
from .epilogue import Epilogue, te_epilogue
from .gemm import ConvGeom, vnni_offset


def vec(isa: str) -> int:
    """Channels per accumulator vector."""
    return 16 if isa == "vnni512" else 8


def pack_weights(w: np.ndarray, isa: str = "avx2") -> np.ndarray:
    """``[C, 1, KH, KW]`` -> ``[KH, KW, Cp]`` int16 with ``Cp = ceil(C / V) * V`` (zero padded)."""
    c = w.shape[0]
    v = vec(isa)
    out = np.zeros(w.shape[2:] + (-(-c // v) * v,), np.int16)
    out[..., :c] = np.asarray(w[:, 0]).transpose(1, 2, 0)
    return out


def out_block(ow: int, isa: str = "avx2") -> int:
    """Output columns per register block: the largest divisor of ``ow`` up to 8 (14 with 32 registers)."""
    cap = 14 if isa == "vnni512" else 8
    return max(d for d in range(1, cap + 1) if ow % d == 0)


def band_rows(g: ConvGeom, cp: int, whole: int = 1 << 20, budget: int = 1 << 19) -> int:
    """Output rows per band: ``A`` is computed per band of output rows (the input rows they read, int32),
    so it stays in the L2 cache instead of one padded copy of a large input going through memory. All of
    ``OH`` when the whole ``A`` takes at most ``whole`` bytes, else the most rows (up to 16) whose band fits
    ``budget`` bytes, a divisor of ``OH`` when one is at least half that (else the accumulator rows are
    padded to a multiple of the band: a few rows computed and never written). Rows
    shared by two bands are converted twice: ``((KH - 1) * dh + 1 - sh) / (R * sh)`` extra."""
    oh, ow = g.out_hw
    (sh, sw), (dh, dw) = g.stride, g.dilation
    wp = (ow - 1) * sw + (g.kw - 1) * dw + 1
    rows_bytes = lambda r: ((r - 1) * sh + (g.kh - 1) * dh + 1) * wp * cp      # noqa: E731
    if rows_bytes(oh) <= whole:
        return oh
    most = max((r for r in range(1, min(oh, 16) + 1) if rows_bytes(r) <= budget), default=1)
    div = max(r for r in range(1, most + 1) if oh % r == 0)
    return div if 2 * div >= most else most


def channel_parts(bands: int, vectors: int, tasks: int = 8) -> int:
    """Parallel tasks per band of rows as channel chunks (each converts and convolves its own channels):
    small images have one or two bands, which left all but one thread idle. The fewest parts (dividing the
    channel vectors) that make at least ``tasks`` tasks, else one part per vector."""
    if bands >= tasks:
        return 1
    return next((p for p in range(1, vectors + 1) if vectors % p == 0 and bands * p >= tasks), vectors)


def build(g: ConvGeom, x_dtype: str, x_zp: int, ep: Epilogue, mode: str,
          skip_dtype: str = "int8", isa: str = "avx2"):
    """Scheduled PrimFunc ``(x[N,H,W,C], w[KH,KW,Cp], [pre,] mult, rb, shift, lo, hi[, skip], y[N,OH,OW,C])``."""
    from tvm import te, tirx
    from tvm.s_tir import Schedule
    oh, ow = g.out_hw
    (sh, sw), (dh, dw), (pt, pl, _, _) = g.stride, g.dilation, g.pad
    V = vec(isa)
    C, Cp = g.c, -(-g.c // V) * V
    band = band_rows(g, Cp)
    ohp = -(-oh // band) * band                  # accumulator rows: whole bands
    hp = (ohp - 1) * sh + (g.kh - 1) * dh + 1
    wp = (ow - 1) * sw + (g.kw - 1) * dw + 1
    X = te.placeholder((g.n, g.h, g.w, C), x_dtype, name="x")
    Wt = te.placeholder((g.kh, g.kw, Cp), "int16", name="w")

    off = vnni_offset(x_dtype)

    def a_val(n, i, j, c):
        ih, iw = i - pt, j - pl
        conds = [ih >= 0, ih < g.h, iw >= 0, iw < g.w] + ([c < C] if Cp != C else [])
        v = (X[n, ih, iw, c].astype("int32") + tirx.const(off, "int32")).astype("uint8")
        return tirx.if_then_else(tirx.all(*conds), v, tirx.const(x_zp + off, "uint8"))
    A = te.compute((g.n, hp, wp, Cp), a_val, name="A")
    rh = te.reduce_axis((0, g.kh), "rh")
    rw = te.reduce_axis((0, g.kw), "rw")
    Acc = te.compute((g.n, ohp, ow, Cp), lambda n, h, w, c: te.sum(
        A[n, h * sh + rh * dh, w * sw + rw * dw, c].astype("int32") * Wt[rh, rw, c].astype("int32"),
        axis=[rh, rw]), name="Acc")
    split_hi = mode in ("hi", "hiz") and C % V == 0             # the product's high word by intrin.HI32
    if split_hi:
        params, high, f = te_epilogue(ep, mode, split=True)
        Hi = te.compute((g.n, ohp, ow, Cp), lambda n, h, w, c: high(Acc[n, h, w, c], c), name="Hi")
    else:
        params, f = te_epilogue(ep, mode)
        Hi = Acc
    ins = [X, Wt, *params]
    if ep.residual is not None:
        S = te.placeholder((g.n, oh, ow, C), skip_dtype, name="skip")
        ins.append(S)
        Y = te.compute((g.n, oh, ow, C), lambda n, h, w, c: f(Hi[n, h, w, c], c, S[n, h, w, c]), name="Y")
    else:
        Y = te.compute((g.n, oh, ow, C), lambda n, h, w, c: f(Hi[n, h, w, c], c, None), name="Y")
    sch = Schedule(te.create_prim_func([*ins, Y]))
    acc = sch.get_sblock("Acc")
    n, h, w, c, kh, kw = sch.get_loops(acc)
    wo, wi = sch.split(w, [None, out_block(ow, isa)])
    co, ci = sch.split(c, [None, V])
    parts = channel_parts(g.n * (ohp // band), Cp // V)
    cc, co = sch.split(co, [parts, None])
    sch.reorder(n, cc, h, wo, co, kh, kw, wi, ci)
    if split_hi:
        sch.reverse_compute_at(sch.get_sblock("Hi"), co)
    y = sch.get_sblock("Y")
    sch.reverse_compute_at(y, co)
    if C % V == 0:
        sch.vectorize(sch.get_loops(y)[-1])
    hb, _ = sch.split(h, [None, band])
    bands = sch.fuse(n, cc, hb)
    sch.parallel(bands)
    a = sch.get_sblock("A")
    sch.compute_at(a, bands)
    chunk = Cp // parts
    _, av = sch.split(sch.get_loops(a)[-1], [None, next(v for v in (64, 32, V) if chunk % v == 0)])
    sch.vectorize(av)
    sch.unroll(kw)
    sch.unroll(wi)
    init = sch.decompose_reduction(acc, kh)
    sch.tensorize(ci, intrin.register(intrin.LANEWISE[isa]))
    sch.vectorize(sch.get_loops(init)[-1])
    if split_hi:
        sch.tensorize(sch.get_loops(sch.get_sblock("Hi"))[-1], intrin.register(intrin.HI32[V]))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
