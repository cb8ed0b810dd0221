# SPDX-License-Identifier: Apache-2.0
"""Depthwise integer convolution (groups = C = O), NHWC. Two kernels share one input stage,

    A[n, i, j, c]   = x[n, i - pt, j - pl, c] + off       (uint8; x_zp + off in the padding and for c >= C)

``"rows"`` (``vnni512`` with AVX-512 VBMI, int8 weights, no row dilation): four kernel rows of a channel
share one int32 lane of one ``vpdpbusd`` (u8 x s8, four products per lane):

    acc[n, h, w, c] = sum_{g, kw, r} A[n, h * sh + 4 g + r, w * sw + kw * dw, c] * W4[g, kw, c, r]
    W4[g, kw, c, r] = W[c, 4 g + r, kw]      (int8; 0 for rows 4 g + r >= KH, which read rows past the image)

(``intrin.ROWS_DOT``: four 16-channel loads of one column, interleaved by one ``vpermb``), so a 3x3 tap set
is 3 instructions per 16 channels and a 5x5 one 10, where one instruction per tap takes 9 and 25; LLVM
loads and interleaves each column once for the ``KW`` taps that read it.

``"lanes"`` (every other case, and AVX2): one tap per int32 lane,

    acc[n, h, w, c] = sum_{kh, kw} A[n, h*sh + kh*dh, w*sw + kw*dw, c] * W[kh, kw, c]       (W int16)

each ``A`` value zero-extended from memory into an int32 lane and the weight vector likewise, so an
int16-pair multiply-add (``intrin.LANEWISE``: ``vpdpwssds`` with VNNI, ``vpmaddwd`` + ``vpaddd`` on AVX2)
computes ``lo(a) * w + 0 * 0 = a * w`` exactly.

Both then apply ``Y = epilogue(acc, c [, skip])``. ``off`` is 128 for int8 ``x`` and 0 for uint8
(``gemm.vnni_offset``); the bias absorbs ``-(x_zp + off) * sum W[:, :, c]`` (``gemm.vnni_bias``), exact.
``V`` channels per vector: 16 on zmm for ``"vnni512"``, else 8. The work is split into parallel tasks of
output-row bands (``A`` is computed per band and stays in the L2 cache) and channel chunks where rows alone
give too few tasks (``plan``). A block of ``OWB`` output columns of accumulators stays in registers while
the taps are unrolled over it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import intrin
from .epilogue import Epilogue, te_epilogue
from .gemm import ConvGeom, vnni_offset, weight_dtype

ROWS = 4          # kernel rows per int32 lane in the "rows" kernel


def vec(isa: str) -> int:
    """Channels per accumulator vector."""
    return 16 if isa == "vnni512" else 8


def kernel(g: ConvGeom, isa: str, w: np.ndarray, vbmi: bool = False) -> str:
    """``"rows"`` where the four-rows-per-lane kernel applies (see the module docstring; ``vbmi``: the target
    has AVX-512 VBMI, whose ``vpermb`` interleaves the rows), else ``"lanes"``."""
    ok = isa == "vnni512" and vbmi and weight_dtype(w) == "int8" and g.dilation[0] == 1
    return "rows" if ok else "lanes"


def pack_weights(w: np.ndarray, isa: str = "avx2", kind: str = "lanes") -> np.ndarray:
    """``[C, 1, KH, KW]`` -> ``"lanes"``: ``[KH, KW, Cp]`` int16; ``"rows"``: ``[ceil(KH / 4), KW, Cp, 4]``
    int8 (rows past ``KH`` zero); ``Cp = ceil(C / V) * V`` (zero padded)."""
    c, _, kh, kw = w.shape
    cp = -(-c // vec(isa)) * vec(isa)
    if kind == "lanes":
        out = np.zeros((kh, kw, cp), np.int16)
        out[..., :c] = np.asarray(w[:, 0]).transpose(1, 2, 0)
        return out
    groups = -(-kh // ROWS)
    rows = np.zeros((groups * ROWS, kw, cp), np.int8)
    rows[:kh, :, :c] = np.asarray(w[:, 0]).transpose(1, 2, 0)
    return np.ascontiguousarray(rows.reshape(groups, ROWS, kw, cp).transpose(0, 2, 3, 1))


def out_block(ow: int, isa: str = "avx2") -> int:
    """Output columns per register block: the largest divisor of ``ow`` up to 8 (14 with 32 registers)."""
    cap = 14 if isa == "vnni512" else 8
    return max(d for d in range(1, cap + 1) if ow % d == 0)


@dataclass(frozen=True)
class Plan:
    """How one depthwise layer is computed: ``band`` output rows per task (``ohp`` rows: whole bands),
    ``parts`` channel chunks per band."""
    kind: str
    band: int
    parts: int
    ohp: int


def a_rows(g: ConvGeom, kind: str, band: int) -> int:
    """Rows of ``A`` that ``band`` output rows read (``"rows"``: whole groups of four kernel rows)."""
    sh, dh = g.stride[0], g.dilation[0]
    if kind == "lanes":
        return (band - 1) * sh + (g.kh - 1) * dh + 1
    return (band - 1) * sh + -(-g.kh // ROWS) * ROWS


def tap_cost(g: ConvGeom, kind: str) -> float:
    """Modelled vector instructions per output vector for the taps: ``"rows"``: one ``vpdpbusd`` per group
    of four rows and column plus the column's interleave (three inserts, one ``vpermb``) per group;
    ``"lanes"``: a zero-extending load and a multiply-add per tap."""
    if kind == "rows":
        groups = -(-g.kh // ROWS)
        return groups * g.kw + 4 * groups
    return 2 * g.kh * g.kw


# modelled cost units (about one vector instruction): per converted A vector, per output vector's epilogue,
# per task (launch and workspace)
A_VEC, EPI, TASK = 2.0, 8.0, 6000.0
SPLIT_CHANNELS = 1.15     # channel chunks share cache lines of the output between threads: measured slower
MAX_THREADS = 8            # thread counts a plan is judged for: 1 and the compiling host's cores, at most this


def threads() -> tuple[int, ...]:
    """The run-time thread counts a plan is judged for (unknown at compile time): one, and the compiling
    host's cores (TVM's default thread count) up to ``MAX_THREADS``."""
    import os
    return tuple(sorted({1, max(1, min(os.cpu_count() or 1, MAX_THREADS))}))


def plan(g: ConvGeom, isa: str, kind: str, budget: int = 1 << 19, counts: tuple[int, ...] | None = None) -> Plan:
    """The band / channel-chunk split with the least modelled time summed over the thread ``counts``
    (default ``threads()``), each relative to that count's ideal: every task converts its own ``A`` rows,
    so smaller bands mean more tasks to share and more halo rows converted twice (measured on a VNNI Xeon:
    a 14x14x672 5x5 layer took 51 / 27 us at 1 / 2 threads in 2 bands, 63 / 37 in 7); a band's ``A`` must
    fit ``budget`` bytes (L2) unless one row already does not."""
    counts = threads() if counts is None else counts
    oh, ow = g.out_hw
    wp = g.window_hw[1]
    V = vec(isa)
    vectors = -(-g.c // V)
    taps = tap_cost(g, kind)
    ideal = g.n * oh * ow * vectors * (taps + EPI)
    best = None
    for band in range(1, oh + 1):
        nb = -(-oh // band)
        if band > 1 and -(-oh // (band - 1)) == nb:
            continue                                  # the same bands with fewer padded rows exist
        rows_in = a_rows(g, kind, band)
        for parts in (p for p in range(1, vectors + 1) if vectors % p == 0):
            chunk = vectors // parts
            if rows_in * wp * chunk * V > budget and not (band == 1 and parts == vectors):
                continue
            task = chunk * (band * ow * (taps + EPI) + wp * rows_in * A_VEC) + TASK
            tasks = g.n * nb * parts
            cost = sum(n * -(-tasks // n) * task * (SPLIT_CHANNELS if parts > 1 and n > 1 else 1) / ideal
                       for n in counts)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, Plan(kind, band, parts, nb * band))
    return best[1]


def build(g: ConvGeom, x_dtype: str, x_zp: int, ep: Epilogue, mode: str,
          skip_dtype: str = "int8", isa: str = "avx2", kind: str = "lanes"):
    """Scheduled PrimFunc ``(x[N,H,W,C], w, [perm,] [pre,] mult, rb, shift, lo, hi[, skip], y[N,OH,OW,C])``
    with ``w`` packed by ``pack_weights(.., kind)`` and, for ``"rows"``, ``perm = intrin.interleave_index(V)``."""
    from tvm import te, tirx
    from tvm.s_tir import Schedule
    oh, ow = g.out_hw
    (sh, sw), (dh, dw), (pt, pl, _, _) = g.stride, g.dilation, g.pad
    V = vec(isa)
    C, Cp = g.c, -(-g.c // V) * V
    pln = plan(g, isa, kind)
    rows = kind == "rows"
    groups = -(-g.kh // ROWS)
    hp, wp = a_rows(g, kind, pln.ohp), g.window_hw[1]      # A: every band's rows, all padded columns
    X = te.placeholder((g.n, g.h, g.w, C), x_dtype, name="x")
    off = vnni_offset(x_dtype)

    def a_val(n, i, j, c):
        ih, iw = i - pt, j - pl
        conds = [ih >= 0, ih < g.h, iw >= 0, iw < g.w] + ([c < C] if Cp != C else [])
        v = (X[n, ih, iw, c].astype("int32") + tirx.const(off, "int32")).astype("uint8")
        return tirx.if_then_else(tirx.all(*conds), v, tirx.const(x_zp + off, "uint8"))
    A = te.compute((g.n, hp, wp, Cp), a_val, name="A")
    if rows:
        Wt = te.placeholder((groups, g.kw, Cp, ROWS), "int8", name="w")
        P = te.placeholder((V, ROWS), "uint8", name="perm")       # intrin.interleave_index(V)
        rg = te.reduce_axis((0, groups), "rg")
        rw = te.reduce_axis((0, g.kw), "rw")
        rr = te.reduce_axis((0, ROWS), "rr")
        Acc = te.compute((g.n, pln.ohp, ow, Cp), lambda n, h, w, c: te.sum(
            A[n, h * sh + rg * ROWS + rr, w * sw + rw * dw, c].astype("int32")
            * Wt[rg, rw, c, rr].astype("int32") + (P[c % V, rr] & tirx.const(0, "uint8")).astype("int32"),
            axis=[rg, rw, rr]), name="Acc")
    else:
        Wt = te.placeholder((g.kh, g.kw, Cp), "int16", name="w")
        rh = te.reduce_axis((0, g.kh), "rh")
        rw = te.reduce_axis((0, g.kw), "rw")
        Acc = te.compute((g.n, pln.ohp, ow, Cp), lambda n, h, w, c: te.sum(
            A[n, h * sh + rh * dh, w * sw + rw * dw, c].astype("int32") * Wt[rh, rw, c].astype("int32"),
            axis=[rh, rw]), name="Acc")
    split_hi = mode in ("hi", "hiz") and C % V == 0             # the product's high word by intrin.HI32
    if split_hi:
        params, high, f = te_epilogue(ep, mode, split=True)
        Hi = te.compute((g.n, pln.ohp, ow, Cp), lambda n, h, w, c: high(Acc[n, h, w, c], c), name="Hi")
    else:
        params, f = te_epilogue(ep, mode)
        Hi = Acc
    ins = [X, Wt, *([P] if rows else []), *params]
    if ep.residual is not None:
        S = te.placeholder((g.n, oh, ow, C), skip_dtype, name="skip")
        ins.append(S)
        Y = te.compute((g.n, oh, ow, C), lambda n, h, w, c: f(Hi[n, h, w, c], c, S[n, h, w, c]), name="Y")
    else:
        Y = te.compute((g.n, oh, ow, C), lambda n, h, w, c: f(Hi[n, h, w, c], c, None), name="Y")
    sch = Schedule(te.create_prim_func([*ins, Y]))
    acc = sch.get_sblock("Acc")
    if rows:
        n, h, w, c, kh, kw, kr = sch.get_loops(acc)
    else:
        n, h, w, c, kh, kw = sch.get_loops(acc)
    wo, wi = sch.split(w, [None, out_block(ow, isa)])
    co, ci = sch.split(c, [None, V])
    cc, co = sch.split(co, [pln.parts, None])
    hb, hi = sch.split(h, [None, pln.band])
    sch.reorder(n, cc, hb, hi, wo, co, kh, kw, wi, ci, *([kr] if rows else []))
    if split_hi:
        sch.reverse_compute_at(sch.get_sblock("Hi"), co)
    y = sch.get_sblock("Y")
    sch.reverse_compute_at(y, co)
    if C % V == 0:
        sch.vectorize(sch.get_loops(y)[-1])
    bands = sch.fuse(n, cc, hb)
    sch.parallel(bands)
    chunk = Cp // pln.parts
    a = sch.get_sblock("A")
    sch.compute_at(a, bands)
    _, av = sch.split(sch.get_loops(a)[-1], [None, next(v for v in (64, 32, V) if chunk % v == 0)])
    sch.vectorize(av)
    sch.unroll(kw)
    sch.unroll(wi)
    init = sch.decompose_reduction(acc, kh)
    if rows:
        sch.tensorize(ci, intrin.register(intrin.ROWS_DOT[V]))
    else:
        sch.tensorize(ci, intrin.register(intrin.LANEWISE[isa]))
    sch.vectorize(sch.get_loops(init)[-1])
    if split_hi:
        sch.tensorize(sch.get_loops(sch.get_sblock("Hi"))[-1], intrin.register(intrin.HI32[V]))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
