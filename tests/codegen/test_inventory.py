# SPDX-License-Identifier: Apache-2.0
"""codegen.x86.inventory: every fast kernel of a small integer graph (two dense 3x3 convs and a depthwise
conv, each with its requantize) is listed under its conv with a ``<kind> <isa>`` label, its chain and
argument shapes, and its library (symbol ``kernel``) runs and writes the chain's output; ``kernel_label``
strips Relax's de-duplicating number also after an instruction-set name that ends in digits."""
import numpy as np
import pytest

from dyadiq.codegen.x86.inventory import KERNEL_NAME, built_kernels, kernel_label
from dyadiq.codegen.x86.lower import select_isa
from dyadiq.ir.builder import GraphBuilder
from dyadiq.targets.cpu import host_cpu_flags, make_target

RNG = np.random.default_rng(3)
FLAGS = host_cpu_flags() or set()
VNNI = {"avx512_vnni", "avx512vl"} <= FLAGS or "avx_vnni" in FLAGS


def small_graph():
    """x (1x16x8x8 i8) -> conv3x3 -> requantize -> conv3x3 -> requantize -> depthwise 3x3 -> requantize."""
    b = GraphBuilder()
    y = b.input("x", (1, 16, 8, 8), "i8")
    for i, groups in enumerate((1, 1, 16)):
        w = b.const(f"w{i}", RNG.integers(-128, 128, size=(16, 16 // groups, 3, 3)).astype(np.int8))
        acc = b.op("qconv2d", [y, w], x_zp=0, stride=(1, 1), pad=(1, 1, 1, 1), dilation=(1, 1), groups=groups)
        m = b.const(f"m{i}", np.full((1, 16, 1, 1), 2**30, np.int32))
        s = b.const(f"s{i}", np.full((1, 16, 1, 1), 40, np.int32))
        y = b.op("requantize", [acc, m, s], in_zp=0, out_zp=0, qmin=-128, qmax=127, dtype="i8")
    return b.build([y])


def test_kernel_label_reads_kind_and_isa_of_any_name():
    assert kernel_label("dq_gemm_avx2u8") == "gemm avx2u8"
    assert kernel_label("dq_depthwise_avx2") == "depthwise avx2"
    assert kernel_label("dq_gemm_vnni512") == "gemm vnni512"
    names = ["dq_gemm_vnni512", "dq_gemm_vnni5121", "dq_gemm_vnni5122", "dq_conv_amx", "dq_conv_amx1"]
    assert [kernel_label(n, names) for n in names] == ["gemm vnni512"] * 3 + ["conv amx"] * 2
    assert kernel_label("fused_add", names) == "fused_add"
    many = ["dq_gemm_vnni512"] + [f"dq_gemm_vnni512{j}" for j in range(1, 40)] + ["dq_gemm_vnni", "dq_gemm_vnni1"]
    assert {kernel_label(n, many) for n in many} == {"gemm vnni512", "gemm vnni"}


@pytest.mark.parametrize("mcpu", ["x86-64-v3"] + (["native"] if VNNI else []))
def test_every_kernel_is_listed_labelled_and_runs(mcpu):
    import tvm
    if "avx2" not in FLAGS:
        pytest.skip("the fast kernels need an AVX2 host to run")
    g = small_graph()
    target = make_target(mcpu)
    isa = select_isa(target)
    ks = built_kernels(g, target)
    convs = [n.name for n in g.nodes if n.op == "qconv2d"]
    assert sorted(ks) == sorted(convs)
    for name, (label, chain, lib, shapes) in ks.items():
        kind, kisa = label.split()
        assert KERNEL_NAME.fullmatch(f"dq_{kind}_{kisa}")
        assert chain is not None and chain.conv.name == name and chain.add is None
        depthwise = int(chain.conv.attr("groups", 1)) > 1
        assert kind == ("depthwise" if depthwise else "gemm")
        if not depthwise and "vnni" in isa:
            assert "vnni" in kisa
        # NHWC activations in; between kernels stored as uint8 x + 128 (codegen.x86.unsigned)
        assert shapes[0][0] == (1, 8, 8, 16) and shapes[0][1] in ("int8", "uint8")
        assert int(np.prod(shapes[-1][0])) == 16 * 8 * 8 and shapes[-1][1] in ("int8", "uint8")
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(RNG.integers(-128, 128, size=s).astype(d) if d in ("int8", "int16")
                                   else np.zeros(s, d), dev) for s, d in shapes[:-1]]
        out = tvm.runtime.tensor(np.full(shapes[-1][0], 99, shapes[-1][1]), dev)
        lib["kernel"](*args, out)
        assert not (out.numpy() == 99).all()                      # it wrote its output


def test_a_target_without_fast_kernels_has_none():
    assert built_kernels(small_graph(), make_target("x86-64-v2")) == {}
