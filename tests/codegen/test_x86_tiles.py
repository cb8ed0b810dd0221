# SPDX-License-Identifier: Apache-2.0
"""codegen.x86 register tiles: a short reduction (LLVM unrolls it, so the tile's accumulators, weights and
epilogue constants share one block) only gets a tile whose hot loop keeps everything in registers.

- ``asm``: basic blocks, the hot loop (most multiply-accumulates) and its stack accesses, on a small listing;
- ``choose_tile``: the first candidate without spills wins, the one that spills least when all spill (the
  earliest on ties), and a lone candidate is never probed;
- ``tile_candidates``: several tiles only for the VNNI kernels (zmm, ymm) with a short reduction, im2col
  convolutions with whole pixel blocks first;
- EfficientNet-Lite0's 40 -> 240 expansion at 28x28 (compiled, not run: any host): the modelled best tile
  spills in its hot loop, the chosen one does not.
"""
import numpy as np

from dyadiq.codegen.tvm import to_relax
from dyadiq.codegen.x86 import asm
from dyadiq.codegen.x86.gemm import ConvGeom, build, choose_tile, tile_candidates, tiles
from dyadiq.codegen.x86.lower import PROBE_TARGETS, kernel_spills
from dyadiq.ir.builder import GraphBuilder

LISTING = """\t.text
kernel:
\tmovq %rdi, %rax
.LBB0_1:
\tvpdpbusd %zmm1, %zmm2, %zmm0
\tvmovdqu64 %zmm3, 128(%rsp)
\tvpdpbusd 128(%rsp), %zmm2, %zmm4
\tvpdpbusd %zmm5, %zmm2, %zmm6
\tjne .LBB0_1
.LBB0_2:
\tvmovdqu64 %zmm7, -64(%rsp)
\tvpmuldq %zmm0, %zmm8, %zmm9
\tretq
"""


def test_the_hot_loop_is_the_block_with_the_most_multiply_accumulates_and_its_spills_are_counted():
    assert [label for label, _ in asm.basic_blocks(LISTING)] == ["kernel", ".LBB0_1", ".LBB0_2"]
    hot = asm.hot_loop(LISTING)
    assert hot[0] == "vpdpbusd %zmm1, %zmm2, %zmm0" and len(hot) == 5
    assert asm.stack_accesses(hot) == 2                      # the spill and the reload, not the epilogue's
    assert asm.stack_accesses(["movq %rax, 8(%rsp)", "vmovdqu64 %zmm1, 64(%rsp)"]) == 1   # vector ones only
    assert asm.hot_loop("\tretq\n") == []


def test_the_first_tile_without_spills_wins_else_the_least_spilling():
    spills = {(5, 3): 130, (4, 3): 0, (15, 1): 0}
    built = []
    t, b = choose_tile([(5, 3), (4, 3), (15, 1)], lambda t: built.append(t) or ("fn", t), lambda b: spills[b[1]])
    assert (t, b) == ((4, 3), ("fn", (4, 3))) and built == [(5, 3), (4, 3)]    # stops at the first good one
    counts = {(5, 3): 9, (7, 2): 4, (4, 2): 4}
    assert choose_tile([(5, 3), (7, 2), (4, 2)], lambda t: t, lambda b: counts[b]) == ((7, 2), (7, 2))


def test_a_lone_candidate_is_never_probed():
    def never(_):
        raise AssertionError("probed")
    assert choose_tile([(6, 2)], lambda t: t, never) == ((6, 2), (6, 2))


def test_only_the_vnni_kernels_with_a_short_reduction_get_alternatives():
    short, long = ConvGeom(1, 28, 28, 40, 240), ConvGeom(1, 14, 14, 112, 672)
    cands = tile_candidates(short, "vnni512")
    assert cands[0] == tiles(short, "vnni512") and len(cands) > 1
    assert tile_candidates(long, "vnni512") == [tiles(long, "vnni512")]
    assert tile_candidates(short, "avx2") == [tiles(short, "avx2")]
    ymm = tile_candidates(short, "vnni")
    assert ymm[0] == tiles(short, "vnni") and len(ymm) == len(set(ymm)) > 1
    stem = ConvGeom(1, 224, 224, 3, 32, 3, 3, (2, 2), (0, 0, 1, 1))     # 12544 pixels
    pbs = [pb for pb, _ in tile_candidates(stem, "vnni512")]
    whole = [12544 % pb == 0 for pb in pbs]
    assert whole[0] and whole == sorted(whole, reverse=True)            # whole pixel blocks first


def _expansion():
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    x = b.input("x", (1, 40, 28, 28), "u8")
    acc = b.op("qconv2d", [x, b.const("w", rng.integers(-127, 128, size=(240, 40, 1, 1)).astype(np.int8)),
                           b.const("b", rng.integers(-3000, 3000, size=240).astype(np.int32))], x_zp=5)
    m = rng.integers(2**30, 2**31, size=(1, 240, 1, 1)).astype(np.int32)
    s = np.full((1, 240, 1, 1), 40, np.int32)
    y = b.op("requantize", [acc, b.const("m", m), b.const("s", s)], in_zp=0, out_zp=-3, qmin=0, qmax=255,
             dtype="u8")
    return b.build([y])


def test_the_40_to_240_expansion_gets_a_tile_whose_hot_loop_does_not_spill():
    import tvm
    mod = to_relax(_expansion(), isa="vnni512")
    (gv,) = [gv for gv in mod.functions if gv.name_hint.startswith("dq_gemm")]
    lib = tvm.tirx.build(mod[gv].with_attr("global_symbol", "k"), target=tvm.target.Target(PROBE_TARGETS["vnni512"]))
    assert asm.stack_accesses(asm.hot_loop(lib.inspect_source("asm"))) == 0
    # the premise: the tile the cost model ranks first spills there
    from dyadiq.codegen.x86.epilogue import Epilogue
    g = ConvGeom(1, 28, 28, 40, 240)
    ep = Epilogue(np.zeros(240, np.int64), np.full(240, 2**30, np.int64), np.full(240, 40, np.int64),
                  np.zeros(240, np.int64), np.full(240, 255, np.int64), -3, "u8")
    consts, mode = ep.args(255.0 * 127 * 40)
    fn = build(g, "uint8", 5, "vnni512", ep, mode, tiles(g, "vnni512"))
    assert kernel_spills(fn, None, "vnni512") > 0
