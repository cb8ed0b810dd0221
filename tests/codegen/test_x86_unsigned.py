# SPDX-License-Identifier: Apache-2.0
"""codegen.x86.unsigned: int8 activations between kernels become uint8 ``x + 128`` with every zero point
moved by 128, the graph computes the same numbers, and a u8 pointwise GEMM then reads its input directly."""
from __future__ import annotations

import numpy as np
import pytest

from dyadiq.codegen.x86 import gemm
from dyadiq.codegen.x86.epilogue import Epilogue
from dyadiq.codegen.x86.unsigned import unsigned_activations
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.graph import verify
from dyadiq.targets.cpu import compile_cpu, host_cpu_flags

RNG = np.random.default_rng(11)
FLAGS = host_cpu_flags() or set()


def _rq(b, acc, o, name_suffix, out_zp=-7, lo=-128, hi=127):
    m = b.const(f"m{name_suffix}", RNG.integers(2**29, 2**30, size=(1, o, 1, 1)).astype(np.int32))
    s = b.const(f"s{name_suffix}", np.full((1, o, 1, 1), 40, np.int32))
    return b.op("requantize", [acc, m, s], out_zp=out_zp, qmin=lo, qmax=hi, dtype="i8")


def conv_block(tail: str = "conv"):
    """x -> conv -> requantize (a) -> conv -> requantize (b) -> [qadd(b, a) | qsum(b)]."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 6, 6), "i8")
    w1 = b.const("w1", RNG.integers(-128, 128, size=(8, 8, 1, 1)).astype(np.int8))
    w2 = b.const("w2", RNG.integers(-128, 128, size=(8, 8, 3, 3)).astype(np.int8))
    a = _rq(b, b.op("qconv2d", [x, w1], x_zp=-3), 8, "1", out_zp=-128, lo=-128, hi=40)      # ReLU-like
    y = _rq(b, b.op("qconv2d", [a, w2], x_zp=-128, pad=(1, 1, 1, 1)), 8, "2")
    if tail == "add":
        y = b.op("qadd", [y, a], a_zp=-7, b_zp=-128, a_m=3 << 28, b_m=5 << 27, shift=30, out_zp=1,
                 qmin=-128, qmax=127, dtype="i8")
    elif tail == "sum":
        y = b.op("qsum", [y], axes=(2, 3), x_zp=-7)
    return b.build([y])


def _by_name(g):
    return {n.name: n for n in g.nodes}


@pytest.mark.parametrize("tail", ["conv", "add", "sum"])
def test_the_same_numbers_with_activations_between_kernels_unsigned(tail):
    g = conv_block(tail)
    u = verify(unsigned_activations(g))
    x = RNG.integers(-128, 128, size=(1, 8, 6, 6)).astype(np.int8)
    np.testing.assert_array_equal(run(u, [x]), run(g, [x]))
    assert [u.type_of(o).dtype for o in u.outputs] == [g.type_of(o).dtype for o in g.outputs]


def test_zero_points_clamps_and_types_move_by_128():
    g = conv_block("add")
    u = unsigned_activations(g)
    before, after = _by_name(g), _by_name(u)
    a = next(n for n in g.nodes if n.op == "requantize")                  # read by a conv and the qadd
    assert (after[a.name].attr("dtype"), after[a.name].attr("out_zp")) == ("u8", 0)
    assert (after[a.name].attr("qmin"), after[a.name].attr("qmax")) == (0, 168)
    assert u.type_of(a.name).dtype == "u8"
    conv2 = next(n for n in g.nodes if n.op == "qconv2d" and a.name in n.inputs)
    assert after[conv2.name].attr("x_zp") == 0
    add = next(n for n in g.nodes if n.op == "qadd")
    assert (after[add.name].attr("a_zp"), after[add.name].attr("b_zp")) == (-7 + 128, -128 + 128)
    assert after[add.name].attr("dtype") == "i8"                          # a graph output keeps its type
    first = next(n for n in g.nodes if n.op == "qconv2d")
    assert after[first.name].attr("x_zp") == before[first.name].attr("x_zp")   # the graph input is as it was


def test_a_value_read_without_a_zero_point_stays_int8():
    g = conv_block("sum")
    u = unsigned_activations(g)
    rq2 = [n for n in g.nodes if n.op == "requantize"][1]                 # read by qsum only (no fast kernel)
    qsum = next(n for n in u.nodes if n.op == "qsum")
    assert u.type_of(rq2.name).dtype == "i8" and qsum.attr("x_zp") == -7


def test_requantize_with_clamp_tensors_stays_int8():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 3, 3), "i8")
    acc = b.op("qconv2d", [x, b.const("w", np.ones((4, 4, 1, 1), np.int8))], x_zp=0)
    lo = b.const("lo", np.full((1, 4, 1, 1), -5, np.int32))
    y = b.op("requantize", [acc, b.const("m", np.full((1, 4, 1, 1), 1 << 30, np.int32)),
                            b.const("s", np.full((1, 4, 1, 1), 31, np.int32)), lo],
             out_zp=0, qmin=-128, qmax=127, dtype="i8")
    z = b.op("qconv2d", [y, b.const("w2", np.ones((4, 4, 1, 1), np.int8))], x_zp=0)
    g = b.build([z])
    assert unsigned_activations(g) is g


def test_a_uint8_pointwise_vnni_gemm_reads_its_input_without_a_copy():
    geom = gemm.ConvGeom(1, 7, 7, 32, 16)
    ep = Epilogue(bias=np.zeros(16, np.int64), m=np.full(16, 1 << 30, np.int64), s=np.full(16, 40, np.int64),
                  lo=np.zeros(16, np.int64), hi=np.full(16, 255, np.int64), out_zp=0, dtype="u8")
    _, mode = ep.args(255 * 128 * 32)
    script = {dt: gemm.build(geom, dt, 0, "vnni512", ep, mode, (7, 1)).script() for dt in ("uint8", "int8")}
    assert 'sblock("A")' in script["int8"]                   # x + 128 first
    assert 'sblock("A")' not in script["uint8"]              # x itself


@pytest.mark.skipif(not ({"avx512_vnni", "avx512vl"} <= FLAGS), reason="needs an AVX-512 VNNI host to run")
def test_compiled_block_equals_the_interpreter_on_the_original_graph():
    g = conv_block("add")
    x = RNG.integers(-128, 128, size=(1, 8, 6, 6)).astype(np.int8)
    np.testing.assert_array_equal(compile_cpu(g).run([x]), run(g, [x]))


@pytest.mark.skipif("avx2" not in FLAGS, reason="the fast kernels need an AVX2 host to run")
def test_a_flipped_value_read_by_a_generic_grouped_conv_stays_exact():
    b = GraphBuilder()
    x = b.input("x", (1, 8, 6, 6), "i8")
    a = _rq(b, b.op("qconv2d", [x, b.const("w1", RNG.integers(-128, 128, size=(8, 8, 1, 1)).astype(np.int8))],
                    x_zp=5), 8, "1")
    w2 = b.const("w2", RNG.integers(-128, 128, size=(8, 4, 3, 3)).astype(np.int8))       # groups 2: generic
    y = _rq(b, b.op("qconv2d", [a, w2], x_zp=-7, groups=2, pad=(1, 1, 1, 1)), 8, "2")
    g = b.build([y])
    assert unsigned_activations(g).type_of(a).dtype == "u8"
    x_in = RNG.integers(-128, 128, size=(1, 8, 6, 6)).astype(np.int8)
    np.testing.assert_array_equal(compile_cpu(g, mcpu="x86-64-v3").run([x_in]), run(g, [x_in]))


@pytest.mark.parametrize("bits", [4, 6])
def test_narrow_activations_move_by_half_their_range_and_compile_exactly(bits):
    """A 4-bit activation in [-8, 7] becomes uint8 [0, 15] with its zero points + 8 (its quantization type
    stays a valid unsigned 4-bit type; + 128 would not); the compiled model equals the interpreter."""
    import torch

    import dyadiq
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1),
                            torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    calib = RNG.standard_normal((8, 3, 8, 8)).astype(np.float32)
    q, _ = dyadiq.quantize(dyadiq.from_torch(m, (torch.from_numpy(calib[:1]),)), calib, act_bits=bits,
                           rounding="nearest")
    ig = dyadiq.integerize(q)
    u = unsigned_activations(ig)
    flipped = [n for n in u.nodes if n.op == "requantize" and n.attr("dtype") == "u8"]
    assert flipped and all(n.attr("qmin") == 0 and n.attr("qmax") == 2**bits - 1 for n in flipped)
    assert all(u.values[n.name].quant.bits == bits and not u.values[n.name].quant.signed for n in flipped)
    if "avx2" in FLAGS:
        np.testing.assert_array_equal(dyadiq.compile(q, target="cpu").run(calib[:2]),
                                      np.concatenate([run(ig, calib[i:i + 1]) for i in range(2)]))
