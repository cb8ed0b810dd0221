# SPDX-License-Identifier: Apache-2.0
"""bench/kernel_model.py on one small kernel: the assembly of a dense 3x3 conv kernel built (not run) for
sapphirerapids splits into basic blocks, its hot block is the loop of ``vpdpbusd``, the MACs per iteration are
counted from the instructions' width, and llvm-mca's report of that block parses into cycles per iteration
that give at most the instruction's peak (2 ports x 64 MAC for ``vpdpbusd`` zmm on this model)."""
import importlib.util
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dyadiq.codegen.x86.inventory import built_kernels
from dyadiq.ir.builder import GraphBuilder
from dyadiq.targets.cpu import make_target

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kernel_model.py"
spec = importlib.util.spec_from_file_location("kernel_model", BENCH)
km = importlib.util.module_from_spec(spec)
spec.loader.exec_module(km)
needs_mca = pytest.mark.skipif(not os.access(km.LLVM_MCA, os.X_OK), reason=f"{km.LLVM_MCA} is not installed")

ASM = """\t.text
kernel:
\tmovq %rdi, %rax
\t.p2align 4
.LBB0_1:
.Ltmp3:
\tvpdpbusd %zmm1, %zmm2, %zmm0   # a comment
\tvpdpbusd %ymm1, %ymm2, %ymm3
\tvpmaddubsw %ymm1, %ymm2, %ymm4
\tvpmaddwd %ymm5, %ymm4, %ymm4
\t{vex}\tvpmaddwd %ymm5, %ymm6, %ymm7
\taddq $64, %rax
\tjne .LBB0_1
\tvpmulld %xmm1, %xmm2, %xmm3
\tretq
"""


def test_blocks_split_at_block_labels_and_jumps_and_macs_follow_the_width():
    blocks = km.basic_blocks(ASM)
    assert [label for label, _ in blocks] == ["kernel", ".LBB0_1", ".LBB0_1+1"]
    label, body = km.hot_block(ASM)
    assert label == ".LBB0_1" and len(body) == 7 and body[0] == "vpdpbusd %zmm1, %zmm2, %zmm0"
    c = km.mac_instructions(body)
    assert c == Counter({("vpdpbusd", 512): 1, ("vpdpbusd", 256): 1, ("vpmaddubsw", 256): 1,
                         ("vpmaddwd", 256): 2})
    assert km.macs(c) == 64 + 32 + 32 + 16        # one vpmaddwd widens the vpmaddubsw pairs: no MACs
    assert km.main_instruction(c) == ("vpdpbusd", 512)


def test_an_llvm_mca_report_parses():
    text = ("Iterations:        200\nInstructions:      43400\nTotal Cycles:      12619\nTotal uOps:        66200\n"
            "\nDispatch Width:    6\nBlock RThroughput: 55.2\n\nResources:\n[0]   - SKXDivider\n"
            "[1]   - SKXFPDivider\n[2]   - SKXPort0\n")
    r = km.parse_mca(text)
    assert r["iterations"] == 200 and r["instructions"] == 217 and r["total_cycles"] == 12619
    assert r["block_rthroughput"] == 55.2 and r["cycles_per_iteration"] == pytest.approx(63.095)
    assert r["model"] == "Skylake-server (SKXPort0, ...)"


def one_conv():
    """x (1x16x8x8 i8) -> 3x3 conv to 16 channels -> requantize."""
    b = GraphBuilder()
    x = b.input("x", (1, 16, 8, 8), "i8")
    w = b.const("w", np.random.default_rng(0).integers(-128, 128, size=(16, 16, 3, 3)).astype(np.int8))
    acc = b.op("qconv2d", [x, w], x_zp=0, stride=(1, 1), pad=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    m, s = b.const("m", np.full((1, 16, 1, 1), 2**30, np.int32)), b.const("s", np.full((1, 16, 1, 1), 40, np.int32))
    return b.build([b.op("requantize", [acc, m, s], in_zp=0, out_zp=0, qmin=-128, qmax=127, dtype="i8")])


@needs_mca
def test_the_hot_loop_of_a_vnni_kernel_is_modelled_for_a_cpu_this_host_need_not_have():
    target = make_target("sapphirerapids")               # compiled only: any host
    (label, _, lib, _), = built_kernels(one_conv(), target).values()
    assert label.startswith("gemm ") and "vnni" in label
    m = km.model_kernel(lib, "sapphirerapids")
    assert m["main"] == ("vpdpbusd", 512)
    n = m["mac_instructions"][("vpdpbusd", 512)]
    assert n >= 8 and m["mac_per_iter"] == 64 * n
    assert m["instructions"] > n and m["iterations"] == km.ITERATIONS
    assert 0 < m["block_rthroughput"] <= m["cycles_per_iteration"] + 1e-9
    peak = km.peaks([("vpdpbusd", 512)], "sapphirerapids")[("vpdpbusd", 512)]
    assert peak == pytest.approx(128, rel=0.02)          # 2 ports x 64 MAC
    assert m["mac_per_iter"] / m["block_rthroughput"] <= peak * 1.001
