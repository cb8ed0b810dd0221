# SPDX-License-Identifier: Apache-2.0
"""Integer convolution (groups = 1) and linear layers as one register-blocked GEMM kernel, NHWC.

With ``P = N * OH * OW`` output pixels and ``K = KH * KW * C`` (im2col order ``(kh, kw, c)``):

    A[p, k / L, k % L] = x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, c] - x_zp    (0 outside the image)
    acc[p, o]        = sum_k A[p, k] * W[o, k]
    Y[p, o]          = epilogue(acc[p, o], o [, skip[p, o]])                      (``epilogue.py``)

``L`` is the intrinsic's reduction width: 2 for AVX2 (``A`` int16, ``vpmaddwd``), 4 for VNNI and for
``"avx2u8"`` (AVX2 ``vpmaddubsw`` + ``vpmaddwd``, only for weights whose channel pairs cannot saturate it:
``pairing.py``)
(``A`` uint8 ``x + 128``; the bias absorbs ``-(x_zp + 128) * sum_k W[o, k]``, exact). Weights are packed once at
compile time as ``[ceil(O/V), ceil(K/L), V, L]``; ``P`` and ``O`` are padded inside the kernel (zero
rows of ``A``, zero weights), so the blocked loops have no tails; only valid outputs are written.
Micro-kernel: ``PB`` pixels x ``OBV`` vectors of ``V`` output channels of int32 accumulators in registers
(``V`` = 16 for ``"vnni512"``: zmm ``vpdpbusd``, 32 registers; else 8, ymm).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import intrin
from .epilogue import Epilogue, te_epilogue


@dataclass(frozen=True)
class ConvGeom:
    """An NHWC convolution; a linear layer is ``H = W = KH = KW = 1``."""
    n: int
    h: int
    w: int
    c: int
    o: int
    kh: int = 1
    kw: int = 1
    stride: tuple = (1, 1)
    pad: tuple = (0, 0, 0, 0)          # top, left, bottom, right
    dilation: tuple = (1, 1)

    @property
    def out_hw(self) -> tuple[int, int]:
        (sh, sw), (dh, dw), (t, lft, b, r) = self.stride, self.dilation, self.pad
        return ((self.h + t + b - dh * (self.kh - 1) - 1) // sh + 1,
                (self.w + lft + r - dw * (self.kw - 1) - 1) // sw + 1)

    @property
    def window_hw(self) -> tuple[int, int]:
        """Rows and columns of the padded input that the outputs read."""
        (oh, ow), (sh, sw), (dh, dw) = self.out_hw, self.stride, self.dilation
        return (oh - 1) * sh + (self.kh - 1) * dh + 1, (ow - 1) * sw + (self.kw - 1) * dw + 1

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, no padding: ``A`` is ``x`` itself seen as ``[P, C]``."""
        return (self.kh, self.kw, self.stride, self.pad) == (1, 1, (1, 1), (0, 0, 0, 0))

    @property
    def k(self) -> int:
        return self.kh * self.kw * self.c


U8_ISAS = ("vnni512", "vnni", "avx2u8")   # kernels with uint8 activations x int8 weights, 4 products per lane


def lanes(isa: str) -> int:
    """Products summed per int32 accumulator lane by one instruction."""
    return 4 if isa in U8_ISAS else 2


def vec(isa: str) -> int:
    """Output channels per accumulator vector: 16 (zmm) for ``"vnni512"``, else 8 (ymm)."""
    return 16 if isa == "vnni512" else 8


MAX_ACC = 15      # zmm accumulators per tile: 15 x 64 bytes stays under TVM's 1 KB stack-buffer limit


def _ranked(g: ConvGeom, v: int, max_acc: int) -> list[tuple[int, int]]:
    """Every (PB, OBV) with at most ``max_acc`` accumulators of ``v`` channels, best modelled first. Per
    reduction step a micro-kernel issues ``PB * OBV`` multiply-accumulates (2 per cycle) and ``PB + OBV``
    loads (2 per cycle); tiles are ranked by the modelled cycles over the padded problem (padding of ``P``
    and ``O`` counts as work)."""
    ov = -(-g.o // v)
    p = g.n * g.out_hw[0] * g.out_hw[1]
    ranked = []
    for obv in (1, 2, 3, 4):
        for pb in range(2, max_acc // obv + 1):
            steps = -(-p // pb) * -(-ov // obv)
            ranked.append((steps * (max(pb * obv, pb + obv) / 2 + 2), pb, obv))
    ranked.sort(key=lambda t: t[0])                        # stable: ties keep the loop order
    return [(pb, obv) for _, pb, obv in ranked]


def _tiles_512_ranked(g: ConvGeom) -> list[tuple[int, int]]:
    """(PB, OBV) for the zmm kernel, best modelled first: 32 registers, at most ``MAX_ACC`` accumulators
    (the rest hold the weight vectors and the broadcast pixel)."""
    return _ranked(g, 16, MAX_ACC)


def _tiles_512(g: ConvGeom) -> tuple[int, int]:
    """The best modelled (PB, OBV) for the zmm kernel (``_tiles_512_ranked``)."""
    return _tiles_512_ranked(g)[0]


def tiles(g: ConvGeom, isa: str = "avx2") -> tuple[int, int]:
    """(PB, OBV): pixels x 8-channel vectors per micro-kernel, 12 accumulator registers (of 16: no spill;
    10 for ``"avx2u8"``, whose ``vpmaddubsw`` + ``vpmaddwd`` step also holds a vector of ones and an int16
    temporary). For im2col convolutions a ``PB`` that divides the pixel count is preferred (no padded rows,
    so the pixel loop of the im2col stage splits into rows and columns without a division per element)."""
    if isa == "vnni512":
        return _tiles_512(g)
    o8 = -(-g.o // 8)
    p = g.n * g.out_hw[0] * g.out_hw[1]
    if p <= 4:
        return p, min(o8, 4)
    obv = 2 if o8 % 2 == 0 else 1
    if isa == "avx2u8":
        cands = (5, 4, 6) if obv == 2 else (10, 8, 12)
    else:
        cands = (6, 4, 5) if obv == 2 else (12, 8, 10)
    if g.pointwise:
        return cands[0], obv
    return next((c for c in cands if p % c == 0), cands[0]), obv


# LLVM unrolls a reduction of up to about this many steps completely; the whole tile, epilogue included,
# is then one basic block whose register pressure the cost model does not see
SHORT_REDUCTION = 16
PROBED_TILES = 6


def reduction_steps(g: ConvGeom, isa: str) -> int:
    """Micro-kernel steps per tile: ``KH * KW * ceil(C / L)``."""
    return g.kh * g.kw * -(-g.c // lanes(isa))


def tile_candidates(g: ConvGeom, isa: str) -> list[tuple[int, int]]:
    """The register tiles worth building, best modelled first (``tiles`` is the first). Only the VNNI kernels
    (zmm; ymm, whose AVX-VNNI CPUs have 16 registers) with a short reduction get alternatives
    (``choose_tile``)."""
    if isa in ("vnni512", "vnni") and reduction_steps(g, isa) <= SHORT_REDUCTION:
        ranked = _tiles_512_ranked(g) if isa == "vnni512" else list(dict.fromkeys([tiles(g, isa),
                                                                                   *_ranked(g, 8, 10)]))
        if not g.pointwise:              # whole pixel blocks keep the im2col stage free of padded rows
            p = g.n * g.out_hw[0] * g.out_hw[1]
            ranked = [t for t in ranked if p % t[0] == 0] + [t for t in ranked if p % t[0]]
        return ranked[:PROBED_TILES]
    return [tiles(g, isa)]


def choose_tile(cands: list, build, spills) -> tuple:
    """``(tile, built)`` for the first tile in ``cands`` whose kernel ``build(tile)`` does not spill
    (``spills(built)``: its stack accesses), else for the one that spills least (the earliest on ties).

    Why: with a reduction of a few steps LLVM unrolls it, and the tile's accumulators, its weight vectors and
    the epilogue's per-channel constants (multiplier, rounding, shift: about five zmm per vector of 16
    channels) share one block; past 32 zmm it spills inside the loop. EfficientNet-Lite0's 40 -> 240
    expansion (28x28) ran 54 us with the modelled best tile (5 x 3, 130 stack accesses in the hot block)
    and 33 us with the next one (4 x 3, none), one thread on a Xeon."""
    best = None
    for t in cands:
        built = build(t)
        if len(cands) == 1:
            return t, built
        n = spills(built)
        if n == 0:
            return t, built
        if best is None or n < best[0]:
            best = (n, t, built)
    return best[1], best[2]


def padded_channels(o: int, isa: str, obv: int) -> int:
    """Output channels the micro-kernels compute: whole tiles of ``obv`` vectors of ``vec(isa)``."""
    v = vec(isa)
    return -(-(-(-o // v)) // obv) * obv * v


def weight_dtype(w: np.ndarray) -> str:
    """int8 whenever the integer weights fit, else int16 (the u8 x s8 kernels take int8 weights only)."""
    return "int8" if w.size == 0 or (int(w.min()) >= -128 and int(w.max()) <= 127) else "int16"


WIDE_WEIGHTS_MIN_PIXELS = 8


def packed_weight_dtype(w4: np.ndarray, isa: str, pixels: int) -> str:
    """Storage of packed weights: int8 for the u8 kernels (``weight_dtype``); for AVX2 ``vpmaddwd`` int16,
    its operand, when each weight vector serves at least ``WIDE_WEIGHTS_MIN_PIXELS`` pixels, else
    ``weight_dtype``. Int8 storage halves the weights' memory traffic but sign-extends every weight vector
    in the register (``vpmovsxbw``, a shuffle-port instruction on Intel that competes with ``vpaddd``): on a
    Xeon running AVX2 code, int16 weights made EfficientNet-Lite0's 20 vpmaddwd GEMMs 7.5% faster alone
    (llvm-mca models them faster on Zen 3 and Skylake too) and its classifier (one pixel, 1.3M weights,
    memory-bound) 2.7x slower."""
    if lanes(isa) == 2 and pixels >= WIDE_WEIGHTS_MIN_PIXELS:
        return "int16"
    return weight_dtype(w4)


def pack_weights(w4: np.ndarray, isa: str, obv: int, dtype: str | None = None) -> np.ndarray:
    """``[O, KH, KW, C]`` integer weights -> ``[Ovp, KH * KW * ceil(C/L), V, L]`` (``V = vec(isa)``) as
    ``dtype`` (default ``weight_dtype``), zero padded in ``O`` and ``C``."""
    L, V = lanes(isa), vec(isa)
    o, kh, kw, c = w4.shape
    ovp = padded_channels(o, isa, obv) // V
    cl = -(-c // L)
    p = np.zeros((ovp * V, kh, kw, cl * L), dtype or weight_dtype(w4))
    p[:o, :, :, :c] = w4
    return np.ascontiguousarray(p.reshape(ovp, V, kh * kw * cl, L).transpose(0, 2, 1, 3))


def vnni_offset(x_dtype: str) -> int:
    """VNNI activations are ``u = x + off`` (uint8): 128 for int8 ``x``, 0 for uint8."""
    return 128 if x_dtype in ("int8", "i8") else 0


def vnni_bias(w2: np.ndarray, x_zp: int, x_dtype: str) -> np.ndarray:
    """Per output channel ``-(x_zp + off) * sum_k w[o, k]`` (int64), so that
    ``sum_k u[k] * w[o, k] + vnni_bias[o] == sum_k (x[k] - x_zp) * w[o, k]`` with ``u = x + off`` and
    the padding of ``u`` equal to ``x_zp + off`` (the real zero)."""
    return -(int(x_zp) + vnni_offset(x_dtype)) * np.asarray(w2, np.int64).sum(axis=1)


def build(g: ConvGeom, x_dtype: str, x_zp: int, isa: str, ep: Epilogue, mode: str,
          tile: tuple[int, int], skip_dtype: str = "int8", nchw: bool = False, o_outer: bool | None = None,
          w_dtype: str = "int8"):
    """Scheduled PrimFunc ``(x, w, [pre,] mult, rb, shift, lo, hi[, skip], y)``; ``x`` is ``[P, C]`` when
    ``g.pointwise`` else ``[N, H, W, C]`` (``[N, C, H, W]`` with ``nchw``, for few input channels);
    ``y`` (and ``skip``) are ``[P, O]``; ``w_dtype`` is the packed weights' (``packed_weight_dtype``; int8 for
    the u8 kernels). ``o_outer`` walks output-channel blocks outside pixel blocks, so a layer with more weights
    than activations streams its weights once; default: when ``O > P`` on AVX2, never with VNNI, where
    pixel blocks outside ran 1.2-1.4x faster at 2 threads (each thread then reads the rows of ``A`` it
    converted itself; with channel blocks outside both threads read all of ``A``) and 3-5% slower at 1."""
    from tvm import te, tirx
    from tvm.s_tir import Schedule
    L, V = lanes(isa), vec(isa)
    pb, obv = tile
    oh, ow = g.out_hw
    P, O, C = g.n * oh * ow, g.o, g.c
    Pp, CL = -(-P // pb) * pb, -(-C // L)
    OVp = padded_channels(O, isa, obv) // V
    assert not (nchw and g.pointwise)
    xshape = (P, C) if g.pointwise else (g.n, C, g.h, g.w) if nchw else (g.n, g.h, g.w, C)
    X = te.placeholder(xshape, x_dtype, name="x")
    assert L == 2 or w_dtype == "int8"
    Wp = te.placeholder((OVp, g.kh * g.kw * CL, V, L), w_dtype, name="w")
    if L == 2:
        adt, off, fill = "int16", -x_zp, 0
    else:
        adt, off = "uint8", vnni_offset(x_dtype)
        fill = x_zp + off

    def convert(v, conds):
        """``v + off`` as ``adt``, ``fill`` (the real zero) where a condition fails."""
        v = (v.astype("int32") + tirx.const(off, "int32")).astype(adt)
        return tirx.if_then_else(tirx.all(*conds), v, tirx.const(fill, adt)) if conds else v

    # uint8 [P, C] input with whole groups of L channels is A already: the micro-kernel reads x itself
    direct = g.pointwise and L == 4 and off == 0 and x_dtype == "uint8" and CL * L == C

    def a_val(p, kh, kw, cl, j):
        c = cl * L + j
        conds = [c < C] if CL * L != C else []
        pc = tirx.min(p, P - 1) if Pp != P else p           # rows >= P: any valid pixel (never written)
        if g.pointwise:
            v = X[pc, c]
            if direct:
                return v
        else:
            n_, r = pc // (oh * ow), pc % (oh * ow)
            ih = (r // ow) * g.stride[0] - g.pad[0] + kh * g.dilation[0]
            iw = (r % ow) * g.stride[1] - g.pad[1] + kw * g.dilation[1]
            conds += [ih >= 0, ih < g.h, iw >= 0, iw < g.w]
            v = X[n_, c, ih, iw] if nchw else X[n_, ih, iw, c]
        return convert(v, conds)
    # NCHW input (a stem): convert it once into a padded pixel-major image X4 (each pixel's channels as one
    # group of L bytes) and let the micro-kernel read X4 directly, instead of gathering single bytes from
    # C planes for every pixel and tap (about half of EfficientNet's stem went into that im2col)
    packed = nchw and Pp == P and L == 4
    if packed:
        def x4_val(n_, i, j, c):
            ih, iw = i - g.pad[0], j - g.pad[1]
            conds = [ih >= 0, ih < g.h, iw >= 0, iw < g.w] + ([c < C] if CL * L != C else [])
            return convert(X[n_, tirx.min(c, C - 1), ih, iw], conds)
        X4 = te.compute((g.n, *g.window_hw, CL * L), x4_val, name="X4")
        A = te.compute((Pp, g.kh, g.kw, CL, L), lambda p, kh, kw, cl, j: X4[
            p // (oh * ow), p % (oh * ow) // ow * g.stride[0] + kh * g.dilation[0],
            p % ow * g.stride[1] + kw * g.dilation[1], cl * L + j], name="A")
    else:
        A = te.compute((Pp, g.kh, g.kw, CL, L), a_val, name="A")
    rh = te.reduce_axis((0, g.kh), "rh")
    rw = te.reduce_axis((0, g.kw), "rw")
    rc = te.reduce_axis((0, CL), "rc")
    rj = te.reduce_axis((0, L), "rj")
    Acc = te.compute((Pp, OVp, V), lambda p, o, i: te.sum(
        A[p, rh, rw, rc, rj].astype("int32") * Wp[o, (rh * g.kw + rw) * CL + rc, i, rj].astype("int32"),
        axis=[rh, rw, rc, rj]), name="Acc")
    split_hi = mode in ("hi", "hiz") and ep.m.size == OVp * V      # the product's high word by intrin.HI32
    if split_hi:
        params, high, f = te_epilogue(ep, mode, split=True)
        Hi = te.compute((Pp, OVp, V), lambda p, o, i: high(Acc[p, o, i], o * V + i), name="Hi")
    else:
        params, f = te_epilogue(ep, mode)
        Hi = Acc
    ins = [X, Wp, *params]
    if ep.residual is not None:
        S = te.placeholder((P, O), skip_dtype, name="skip")
        ins.append(S)
        Y = te.compute((P, O), lambda p, o: f(Hi[p, o // V, o % V], o, S[p, o]), name="Y")
    else:
        Y = te.compute((P, O), lambda p, o: f(Hi[p, o // V, o % V], o, None), name="Y")
    sch = Schedule(te.create_prim_func([*ins, Y]))
    if packed or direct:
        sch.compute_inline(sch.get_sblock("A"))
    acc = sch.get_sblock("Acc")
    p, o, i, kh, kw, k, j = sch.get_loops(acc)
    po, pi = sch.split(p, [None, pb])
    oo, oi = sch.split(o, [None, obv])
    if o_outer is None:
        o_outer = OVp * V > Pp and isa not in ("vnni", "vnni512")
    outer, inner = (oo, po) if o_outer else (po, oo)
    sch.reorder(outer, inner, kh, kw, k, pi, oi, i, j)
    if split_hi:
        hb = sch.get_sblock("Hi")
        sch.reverse_compute_at(hb, inner)
    y = sch.get_sblock("Y")
    sch.reverse_compute_at(y, inner)
    yl = sch.get_loops(y)
    # Y's channel loop per tile: obv * V channels, or all O when one tile of channels covers them
    yvec = next((v for v in (V, 8) if O % (obv * v) == 0 or (OVp == obv and O % v == 0)), None)
    if yvec:
        _, yv = sch.split(yl[-1], [None, yvec])
        sch.vectorize(yv)
    fused = sch.fuse(outer, inner)
    if Pp // pb * (OVp // obv) > 1:
        sch.parallel(fused)
    sch.unroll(pi)
    sch.unroll(oi)
    init = sch.decompose_reduction(acc, kh)
    avx2 = intrin.PMADDWD_W8 if w_dtype == "int8" else intrin.PMADDWD
    sch.tensorize(i, intrin.register({"avx2": avx2, "vnni": intrin.VNNI, "vnni512": intrin.VNNI512,
                                      "avx2u8": intrin.PMADDUBSW}[isa]))
    sch.vectorize(sch.get_loops(init)[-1])
    if packed:
        xl = sch.get_loops(sch.get_sblock("X4"))
        sch.parallel(sch.fuse(xl[0], xl[1]))
        sch.unroll(xl[3])
    elif not direct:
        al = sch.get_loops(sch.get_sblock("A"))
        if not g.pointwise and Pp == P:      # pixel loop as (row, column): no division per element
            rows, _ = sch.split(al[0], [None, ow])
            sch.parallel(rows)
        else:
            sch.parallel(al[0])
        inner = sch.fuse(al[3], al[4])
        if CL * L % 16 == 0 and g.pointwise:
            _, av = sch.split(inner, [None, 16])
            sch.vectorize(av)
    if split_hi:
        sch.tensorize(sch.get_loops(sch.get_sblock("Hi"))[-1], intrin.register(intrin.HI32[V]))
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
