# SPDX-License-Identifier: Apache-2.0
"""Fast x86 lowering of ``qconv2d | qlinear -> requantize [-> qadd]`` groups into one hand-scheduled kernel.

``select_isa(target)``: ``"vnni512"`` (AVX-512 VNNI + BW + VL: u8 x s8 ``vpdpbusd`` on zmm, 16 output
channels per vector; layers with at most 8 output channels keep the ymm kernel), ``"vnni"`` (AVX-VNNI
without AVX-512: ymm ``vpdpbusd``), ``"avx2"``
(int16 ``vpmaddwd``) or None (no fast path: the generic Relax lowering of ``codegen.tvm``).
On ``"avx2"`` a gemm/linear layer whose integer weights all lie in [-64, 64] (7-bit or narrower) takes the
u8 x s8 ``vpmaddubsw`` kernel instead (``kernel_isa``; exact there, twice the products per instruction).
``groups(g)`` finds the fusable chains; ``lower(emitter, chain, isa)`` emits the kernel as a
``call_tir`` on NHWC activations (``emitter.value_nhwc``), or returns False so that the generic
lowering handles the chain (unusual shapes, non-per-channel parameters, wide dtypes).
Kernel classes: groups = 1 (any kernel size, stride, padding, dilation) and linear -> ``gemm``;
depthwise (groups = C = O) -> ``depthwise`` (one tap per lane: ``vpdpwssds`` with VNNI, ``vpmaddwd`` on AVX2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.ops.window import hw_attrs
from . import asm, depthwise, gemm, intrin, pairing
from .epilogue import TVM_INT, make_epilogue


@dataclass(frozen=True)
class Chain:
    conv: Node
    rq: Node
    add: Node | None

    @property
    def out(self) -> str:
        return (self.add or self.rq).name


def select_isa(target) -> str | None:
    """The fast-kernel instruction set the LLVM ``target`` allows (None: none)."""
    from tvm.target import codegen
    if "mcpu" not in target.attrs or "x86" not in (codegen.llvm_get_system_triple() or ""):
        return None
    feats = set(codegen.llvm_get_cpu_features(target))
    if "avx2" not in feats:
        return None
    if {"avx512vnni", "avx512vl", "avx512bw"} <= feats:
        return "vnni512"
    if "avx512vnni" in feats and "avx512vl" in feats or "avxvnni" in feats:
        return "vnni"
    return "avx2"


def has_vbmi(target) -> bool:
    """The LLVM ``target`` has AVX-512 VBMI (byte permutes: the depthwise ``"rows"`` kernel)."""
    from tvm.target import codegen
    return "mcpu" in target.attrs and "avx512vbmi" in set(codegen.llvm_get_cpu_features(target))


def groups(g: Graph) -> dict[str, Chain]:
    """conv/linear name -> its chain, for every ``qconv2d|qlinear`` whose only consumer is a requantize
    (whose only consumer may be a same-shape ``qadd`` whose other operand exists before the conv)."""
    cons, outs, found = g.consumers(), set(g.outputs), {}
    pos = {n.name: i for i, n in enumerate(g.nodes)}          # graph inputs and constants: -1
    for i, n in enumerate(g.nodes):
        if n.op not in ("qconv2d", "qlinear") or n.name in outs:
            continue
        c = cons.get(n.name, [])
        if len(c) != 1 or c[0].op != "requantize" or c[0].inputs[0] != n.name:
            continue
        rq, add = c[0], None
        c2 = cons.get(rq.name, [])
        if (rq.name not in outs and len(c2) == 1 and c2[0].op == "qadd" and len(set(c2[0].inputs)) == 2
                and g.type_of(c2[0].inputs[0]).shape == g.type_of(c2[0].inputs[1]).shape
                == g.type_of(c2[0].name).shape):
            skip = c2[0].inputs[1] if c2[0].inputs[0] == rq.name else c2[0].inputs[0]
            if pos.get(skip, -1) < i:                          # defined before the kernel is emitted
                add = c2[0]
        found[n.name] = Chain(n, rq, add)
    return found


def _x_range(dtype: str, zp: int) -> int:
    lo, hi = (-128, 127) if dtype == "i8" else (0, 255)
    return max(abs(lo - zp), abs(hi - zp))


def kernel_isa(isa: str, kind: str, w4: np.ndarray) -> str:
    """The gemm kernel's instruction set for this layer (``[O, KH, KW, C]`` integer weights): ``"avx2u8"``
    (``vpmaddubsw``) on AVX2 when no channel pair's int16 sum can saturate (``pairing.pairable``: always
    for weights in [-64, 64]; 8-bit weights after ``pairing.permute_channels``), else ``isa``."""
    if kind == "depthwise":
        return isa
    if isa == "vnni512" and w4.shape[0] <= 8:        # one ymm of channels: a zmm would be half padding
        return "vnni"
    if isa == "avx2" and pairing.pairable(w4):
        return "avx2u8"
    return isa


PROBE_TARGETS = {"vnni512": {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vnni"]},
                 "vnni": {"kind": "llvm", "mcpu": "alderlake"}}
_SPILLS: dict = {}          # (structural hash of the kernel, target) -> its stack accesses


def kernel_spills(fn, target, isa: str) -> int:
    """Stack accesses (register spills and reloads) in the kernel ``fn`` compiled for ``target`` (None: a
    generic CPU with ``isa``, ``PROBE_TARGETS``); only compiled, never run, so any target works on any
    host. A short-reduction tile is one basic block, so these are its hot loop's."""
    import tvm
    import tvm_ffi
    if target is None:
        target = tvm.target.Target(PROBE_TARGETS.get(isa, {"kind": "llvm", "mcpu": "x86-64-v3"}))
    key = (tvm_ffi.structural_hash(fn), str(target))
    if key not in _SPILLS:
        lib = tvm.tirx.build(fn.with_attr("global_symbol", "probe"), target=target)
        _SPILLS[key] = asm.stack_accesses(lib.inspect_source("asm").splitlines())
    return _SPILLS[key]


def lower(em, ch: Chain, isa: str) -> bool:
    """Emit ``ch`` as one fast kernel through the emitter ``em``; False when not covered."""
    g, n = em.g, ch.conv
    xt = g.type_of(n.inputs[0])
    if xt.dtype not in ("i8", "u8") or not g.is_const(n.inputs[1]):
        return False
    if len(n.inputs) == 3 and not g.is_const(n.inputs[2]):
        return False
    w = np.asarray(g.const(n.inputs[1]), np.int64)
    zp = int(n.attr("x_zp", 0))
    if n.op == "qlinear":
        if xt.rank != 2:
            return False
        geom, kind = gemm.ConvGeom(xt.shape[0], 1, 1, xt.shape[1], w.shape[0]), "linear"
        ep = make_epilogue(g, n, ch.rq, ch.add, w.shape[0], axis=-1)
        w4 = w.reshape(w.shape[0], 1, 1, -1)
    else:
        _, s, p, d = hw_attrs(n.attr_dict)           # the kernel size is the weight's
        grp = int(n.attr("groups", 1))
        nb, c, h, wd = xt.shape
        geom = gemm.ConvGeom(nb, h, wd, c, w.shape[0], w.shape[2], w.shape[3], tuple(s), tuple(p), tuple(d))
        if grp == 1:
            kind, w4 = "gemm", w.transpose(0, 2, 3, 1)
        elif grp == c == w.shape[0] and w.shape[1] == 1:
            kind, w4 = "depthwise", w.transpose(0, 2, 3, 1)
        else:
            return False
        if tuple(g.type_of(n.name).shape[2:]) != geom.out_hw:
            return False
        ep = make_epilogue(g, n, ch.rq, ch.add, w.shape[0], axis=1)
    if ep is None:
        return False
    if ch.add is not None and g.type_of(ep.residual.name).dtype not in TVM_INT:
        return False
    w2 = w4.reshape(w4.shape[0], -1)
    kisa = kernel_isa(isa, kind, w4)
    if kind == "depthwise" or kisa in gemm.U8_ISAS:  # u = x + 128 (i8) or x (u8): acc = sum(u w) - (x_zp + off) sum(w)
        ep.bias = ep.bias + gemm.vnni_bias(w2, zp, xt.dtype)
        bound = 255.0 * float(np.abs(w2).sum(axis=1).max(initial=0))
    else:
        bound = float(_x_range(xt.dtype, zp)) * float(np.abs(w2).sum(axis=1).max(initial=0))
    if bound >= 2**31:               # the raw accumulator must be an exact int32
        return False
    consts, mode = ep.args(bound)
    skip_dt = TVM_INT[g.type_of(ep.residual.name).dtype] if ep.residual else "int8"
    R = em.R
    oh, ow = geom.out_hw
    P = geom.n * oh * ow
    if kind == "depthwise":
        dkind = depthwise.kernel(geom, isa, w, em.vbmi)
        fn = depthwise.build(geom, TVM_INT[xt.dtype], zp, ep, mode, skip_dt, isa, dkind)
        wp = depthwise.pack_weights(w, isa, dkind)
        extra = [intrin.interleave_index(depthwise.vec(isa))] if dkind == "rows" else []
        x = em.value_nhwc(n.inputs[0])
        out_shape = (geom.n, oh, ow, geom.o)
    else:
        # few input channels (a stem): read NCHW directly rather than transposing the input first
        nchw = (kind == "gemm" and not geom.pointwise and geom.c < 8 and n.inputs[0] not in em.nhwc
                and n.inputs[0] not in em.flat)

        def build(tile):
            e, c, md = ep, consts, mode
            ovp = gemm.padded_channels(geom.o, kisa, tile[1])
            if md in ("hi", "hiz") and ovp != geom.o:      # whole vectors of channels for intrin.HI32
                e = ep.padded(ovp)
                c, md = e.args(bound)
            wp = gemm.pack_weights(w4, kisa, tile[1], gemm.packed_weight_dtype(w4, kisa, P))
            return gemm.build(geom, TVM_INT[xt.dtype], zp, kisa, e, md, tile, skip_dt, nchw,
                              w_dtype=str(wp.dtype)), wp, e, c
        _, (fn, wp, ep, consts) = gemm.choose_tile(gemm.tile_candidates(geom, kisa), build,
                                                   lambda b: kernel_spills(b[0], em.target, kisa))
        extra = []
        if kind == "linear":
            x = em.value(n.inputs[0])
        elif geom.pointwise:
            x = em.value_flat(n.inputs[0])
        else:
            x = em.value(n.inputs[0]) if nchw else em.value_nhwc(n.inputs[0])
        out_shape = (P, geom.o)
    args = [x, em.const(wp), *[em.const(a) for a in extra + list(consts)]]
    if ep.residual is not None:
        skip = {"linear": em.value, "gemm": em.value_flat, "depthwise": em.value_nhwc}[kind](ep.residual.name)
        args.append(skip)
    gv = em.bb.add_func(fn.without_attr("global_symbol").with_attr("dyadiq.node", n.name), f"dq_{kind}_{kisa}")
    y = em.emit(R.call_tir(gv, args, R.TensorType(out_shape, TVM_INT[ep.out_dtype])))
    if kind == "linear":
        em.env[ch.out] = y
    elif kind == "gemm":
        em.flat[ch.out] = (y, (geom.n, oh, ow, geom.o))
    else:
        em.nhwc[ch.out] = y
    return True
