# SPDX-License-Identifier: Apache-2.0
"""codegen.x86: the hand-scheduled conv/linear kernels (with requantize and residual add fused) are bit-exact
with the integer interpreter on random data, for every kernel class and for awkward shapes: channels that
are not a multiple of the 8-lane block, pixel counts that are not a multiple of the register tile, stride 2,
asymmetric padding, dilation, zero points, per-channel clamps and both shift paths (s < 32, s >= 32)."""
import re

import numpy as np
import pytest

from dyadiq.codegen.tvm import to_relax
from dyadiq.codegen.x86.gemm import packed_weight_dtype
from dyadiq.codegen.x86.lower import select_isa
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.targets.cpu import compile_cpu, host_cpu_flags, make_target

RNG = np.random.default_rng(7)
FLAGS = host_cpu_flags() or set()
AVX2 = "avx2" in FLAGS
VNNI = {"avx512_vnni", "avx512vl"} <= FLAGS or "avx_vnni" in FLAGS
needs_avx2 = pytest.mark.skipif(not AVX2, reason="the fast kernels need an AVX2 host to run")
AVX2_CPU = "x86-64-v3"          # AVX2 without VNNI: the avx2 kernels on any AVX2 host


def _i8(shape):
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


def _shifts(acc: np.ndarray, axis: int, low_shift: bool) -> np.ndarray:
    """Per-channel shifts that map the accumulators onto roughly [-200, 200] (some clamp)."""
    red = tuple(a for a in range(acc.ndim) if a != axis)
    mag = np.abs(acc.astype(np.int64)).max(axis=red) + 1
    s = np.ceil(np.log2(mag)).astype(np.int64) + 31 - 7
    if low_shift:
        s = np.minimum(s, RNG.integers(5, 31, size=s.shape))      # also exercises s < 32
    return s.clip(1, 62).astype(np.int32)


def chain(x, w, *, op="qconv2d", bias=True, x_zp=0, clamps=False, residual=None, low_shift=False, **attrs):
    """``op -> requantize [-> qadd]`` with random parameters sized from the real accumulators."""
    o = w.shape[0]
    consts = {"w": w}
    if bias:
        consts["b"] = RNG.integers(-5000, 5000, size=o).astype(np.int32)
    b = GraphBuilder()
    xin = b.input("x", x.shape, {np.int8: "i8", np.uint8: "u8"}[x.dtype.type])
    names = [xin] + [b.const(k, v) for k, v in consts.items()]
    acc = b.op(op, names, x_zp=x_zp, **attrs)
    acc_v = run(b.build([acc]), [x])
    axis = 1
    shape = [1] * acc_v.ndim
    shape[axis] = o
    m = RNG.integers(2**30, 2**31, size=o).astype(np.int32).reshape(shape)
    s = _shifts(acc_v, axis, low_shift).reshape(shape)
    rq_in = [acc, b.const("m", m), b.const("s", s)]
    if clamps:
        rq_in += [b.const("lo", RNG.integers(-128, -20, size=o).astype(np.int32).reshape(shape)),
                  b.const("hi", RNG.integers(20, 128, size=o).astype(np.int32).reshape(shape))]
    y = b.op("requantize", rq_in, in_zp=int(RNG.integers(-3, 4)), out_zp=int(RNG.integers(-10, 10)),
             qmin=-128, qmax=127, dtype="i8")
    inputs = [x]
    if residual is not None:
        r = b.input("r", residual.shape, "i8")
        inputs.append(residual)
        ab = [y, r] if RNG.integers(2) else [r, y]
        y = b.op("qadd", ab, a_zp=3, b_zp=-5, a_m=int(RNG.integers(2**29, 2**31)),
                 b_m=int(RNG.integers(2**29, 2**31)), shift=31, out_zp=2, qmin=-128, qmax=127, dtype="i8")
    return b.build([y]), inputs


def assert_fast_and_exact(g, inputs, kernel: str):
    """The avx2 kernel (built for x86-64-v3) and, on a VNNI host, the host's default (vnni512 or vnni) kernel
    and, where the CPU has AVX-VNNI, the ymm VNNI kernel of an AVX-VNNI CPU without AVX-512 all equal the
    interpreter."""
    mod = to_relax(g, isa="avx2")
    assert any(gv.name_hint.startswith(f"dq_{kernel}") for gv in mod.functions), "fast kernel not used"
    ref = run(g, inputs)
    host = [(None, select_isa(make_target()))] if VNNI else []
    if "avx_vnni" in FLAGS and host != [(None, "vnni")]:
        host.append(("alderlake", "vnni"))
    for mcpu, isa in [(AVX2_CPU, "avx2")] + host:
        art = compile_cpu(g, mcpu=mcpu)
        assert art.manifest["kernels"] == isa
        got = art.run(inputs)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


CONV_CASES = [  # (x shape, w shape, attrs): groups = 1 -> gemm kernel
    ((1, 13, 5, 5), (20, 13, 1, 1), {}),                                                 # odd C, O % 8, P % 6
    ((1, 16, 7, 7), (24, 16, 1, 1), {}),
    ((2, 8, 6, 6), (16, 8, 1, 1), {}),                                                   # batch 2
    ((1, 3, 15, 15), (10, 3, 3, 3), {"stride": (2, 2), "pad": (0, 0, 1, 1)}),           # stem-like
    ((1, 6, 9, 8), (8, 6, 3, 3), {"pad": (1, 1, 1, 1), "dilation": (2, 2)}),
    ((1, 5, 10, 10), (9, 5, 1, 1), {"stride": (2, 2)}),                                  # strided 1x1
    ((1, 4, 7, 9), (12, 4, 5, 3), {"pad": (2, 0, 1, 1), "stride": (1, 2)}),
    ((1, 20, 14, 14), (40, 20, 1, 1), {}),                                               # 2.5 zmm of channels
    ((1, 24, 9, 9), (96, 24, 3, 3), {"pad": (1, 1, 1, 1)}),                             # 6 zmm, P = 81
]


@needs_avx2
@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("variant", ["plain", "zp_clamps_lowshift"])
def test_gemm_conv_kernel(xs, ws, attrs, variant):
    extra = dict(x_zp=-7, clamps=True, low_shift=True) if variant != "plain" else {}
    g, inputs = chain(_i8(xs), _i8(ws), **extra, **attrs)
    assert_fast_and_exact(g, inputs, "gemm")


@needs_avx2
@pytest.mark.parametrize("kind", ["gemm", "depthwise"])
def test_small_shifts_with_4_bit_weights_take_the_exact_pre_shift_path(kind):
    """s < 32 with small accumulators: acc << (32 - s), then the high word (Epilogue.args mode "pre")."""
    from dyadiq.codegen.x86.epilogue import Epilogue
    w4 = RNG.integers(-8, 8, size=(16, 1 if kind == "depthwise" else 16, 3, 3)).astype(np.int8)
    attrs = {"groups": 16} if kind == "depthwise" else {}
    g, inputs = chain(_i8((1, 16, 7, 7)), w4, pad=(1, 1, 1, 1), x_zp=-128, low_shift=True, **attrs)
    s = [n for n in g.nodes if n.op == "requantize"][0]
    assert np.asarray(g.const(s.inputs[2])).min() < 32
    assert_fast_and_exact(g, inputs, kind)
    ep = Epilogue(np.zeros(2, np.int64), np.array([2**30, 2**31 - 1]), np.array([28, 40]), np.zeros(2, np.int64),
                  np.zeros(2, np.int64), 0, "i8")
    assert ep.args(2.0**20)[1] == "pre" and ep.args(2.0**29)[1] == "wide"
    ep.s = np.array([32, 40])
    assert ep.args(2.0**30)[1] in ("hi", "hiz")


def test_the_output_zero_point_folds_into_the_rounding_term_only_while_the_sum_fits_int64():
    """Mode "hiz": (h >> sh) + zp == (h + (zp << sh)) >> sh, so rb takes zp << s; not when that could overflow."""
    from dyadiq.codegen.x86.epilogue import Epilogue
    ep = Epilogue(np.array([7, -3]), np.array([2**30, 2**31 - 1]), np.array([40, 44]), np.full(2, -128),
                  np.full(2, 127), -5, "i8")
    (m, rb, sh, lo, hi), mode = ep.args(2.0**20)
    assert mode == "hiz"
    np.testing.assert_array_equal(rb, np.array([7, -3]) * ep.m + (1 << (ep.s - 1)) + (-5 << ep.s))
    ep.s = np.array([40, 61])                         # -5 << 61 leaves int64's safe range
    assert ep.args(2.0**20)[1] == "hi"
    acc = np.arange(-2**20, 2**20, 997, dtype=np.int64)
    ep.s = np.array([40, 44])
    for o in range(2):                                # the folded form rounds exactly like the unfolded one
        plain = ((acc * ep.m[o] + ep.bias[o] * ep.m[o] + (1 << int(ep.s[o] - 1))) >> 32 >> int(ep.s[o] - 32)) - 5
        folded = (acc * ep.m[o] + rb[o]) >> 32 >> int(sh[o])
        np.testing.assert_array_equal(folded, plain)


DW_CASES = [
    ((1, 8, 9, 9), 3, {"pad": (1, 1, 1, 1)}),
    ((1, 12, 11, 11), 5, {"pad": (2, 2, 2, 2), "stride": (2, 2)}),                    # C % 8 != 0
    ((1, 16, 10, 10), 3, {"pad": (0, 0, 1, 1), "stride": (2, 2)}),                    # asymmetric pad
    ((2, 5, 6, 7), 3, {"pad": (1, 1, 1, 1), "dilation": (2, 2)}),
    ((1, 64, 70, 70), 3, {"pad": (1, 1, 1, 1)}),                                       # A > 1 MB: row bands
    ((2, 40, 90, 90), 5, {"pad": (2, 2, 2, 2), "stride": (2, 2), "dilation": (2, 2)}),  # bands, batch 2
    ((1, 64, 7, 7), 5, {"pad": (2, 2, 2, 2)}),                                         # one band: channel parts
    ((1, 40, 14, 14), 3, {"pad": (1, 1, 1, 1)}),                                       # parts with padded channels
    ((1, 32, 13, 13), 7, {"pad": (3, 3, 3, 3)}),                        # "rows": two groups of four rows
    ((1, 16, 8, 8), 1, {}),                                              # "rows": one row of four used
    ((1, 24, 15, 16), 3, {"pad": (1, 0, 1, 2), "stride": (2, 1)}),      # row stride only, odd rows
    ((2, 24, 10, 10), 5, {"pad": (2, 2, 2, 2), "stride": (2, 2)}),      # "rows": batch 2, stride 2
]


def test_depthwise_work_is_split_into_row_bands_first_and_channel_chunks_for_small_images():
    from dyadiq.codegen.x86.depthwise import a_rows, plan, vec
    from dyadiq.codegen.x86.gemm import ConvGeom
    big = ConvGeom(1, 56, 56, 144, 144, 3, 3, (1, 1), (1, 1, 1, 1))
    p = plan(big, "vnni512", "rows", counts=(1, 8))
    assert p.parts == 1 and p.ohp // p.band >= 8 and p.ohp >= 56          # enough row bands for 8 threads
    p = plan(big, "vnni512", "rows", counts=(1, 2))
    assert p.parts == 1 and (p.ohp // p.band) % 2 == 0                     # 2 threads: whole pairs, big bands
    small = ConvGeom(1, 7, 7, 1152, 1152, 5, 5, (1, 1), (2, 2, 2, 2))
    p = plan(small, "vnni512", "rows", counts=(1, 8))
    assert p.parts > 1 and (1152 // vec("vnni512")) % p.parts == 0          # 7 rows: channel chunks too
    huge = ConvGeom(1, 300, 300, 256, 256, 3, 3, (1, 1), (1, 1, 1, 1))
    p = plan(huge, "vnni512", "lanes")
    assert a_rows(huge, "lanes", p.band) * 302 * 256 // p.parts <= 1 << 19    # a band's A stays in L2


def test_depthwise_rows_kernel_needs_vbmi_int8_weights_and_no_row_dilation():
    from dyadiq.codegen.x86.depthwise import kernel
    from dyadiq.codegen.x86.gemm import ConvGeom
    g = ConvGeom(1, 14, 14, 32, 32, 3, 3, (2, 2), (1, 1, 1, 1))
    w8, w9 = np.ones((32, 1, 3, 3), np.int64), np.full((32, 1, 3, 3), 200, np.int64)
    assert kernel(g, "vnni512", w8, vbmi=True) == "rows"
    assert kernel(g, "vnni512", w8, vbmi=False) == "lanes" and kernel(g, "avx2", w8, vbmi=True) == "lanes"
    assert kernel(g, "vnni512", w9, vbmi=True) == "lanes"                    # weights beyond int8
    dil = ConvGeom(1, 14, 14, 32, 32, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2))
    assert kernel(dil, "vnni512", w8, vbmi=True) == "lanes"
    x = _i8((1, 16, 6, 6))
    gr, _ = chain(x, _i8((16, 1, 3, 3)), groups=16, pad=(1, 1, 1, 1))
    scripts = [to_relax(gr, isa="vnni512", vbmi=v).script() for v in (True, False)]
    assert "permvar" in scripts[0] and "perm:" in scripts[0]
    assert "permvar" not in scripts[1] and "perm:" not in scripts[1]


@needs_avx2
@pytest.mark.parametrize("xs,k,attrs", DW_CASES)
def test_depthwise_kernel(xs, k, attrs):
    c = xs[1]
    g, inputs = chain(_i8(xs), _i8((c, 1, k, k)), groups=c, x_zp=-128, **attrs)
    assert_fast_and_exact(g, inputs, "depthwise")


@needs_avx2
@pytest.mark.parametrize("kind", ["gemm", "depthwise"])
def test_residual_add_is_fused_and_exact(kind):
    if kind == "gemm":
        x, w, attrs, out = _i8((1, 24, 6, 6)), _i8((16, 24, 1, 1)), {}, (1, 16, 6, 6)
    else:
        x, w, attrs, out = _i8((1, 16, 6, 6)), _i8((16, 1, 3, 3)), {"groups": 16, "pad": (1, 1, 1, 1)}, (1, 16, 6, 6)
    g, inputs = chain(x, w, residual=_i8(out), x_zp=5, **attrs)
    assert [n.op for n in g.nodes][-1] == "qadd"
    main = to_relax(g, isa="avx2")["main"].script()
    assert main.count("R.call_tir") == 1 and "right_shift" not in main        # one kernel, nothing generic
    assert_fast_and_exact(g, inputs, kind)


def test_vpmaddwd_weights_are_int16_where_pixels_reuse_them_and_int8_where_a_layer_streams_them():
    w = _i8((16, 1, 1, 8))
    assert packed_weight_dtype(w, "avx2", 49) == "int16"          # the instruction's operand: no extension
    assert packed_weight_dtype(w, "avx2", 1) == "int8"            # a classifier: memory-bound, half the bytes
    assert packed_weight_dtype(w, "avx2u8", 49) == "int8"         # u8 x s8 kernels take int8 only
    assert packed_weight_dtype(w.astype(np.int16) * 3, "avx2", 1) == "int16"     # wider than int8


@needs_avx2
@pytest.mark.parametrize("n,k,o", [(1, 40, 10), (3, 17, 33)])
def test_linear_kernel(n, k, o):
    g, inputs = chain(_i8((n, k)), _i8((o, k)), op="qlinear", x_zp=-128)
    assert_fast_and_exact(g, inputs, "linear")


@needs_avx2
def test_u8_input_and_no_bias():
    x = RNG.integers(0, 256, size=(1, 10, 6, 6)).astype(np.uint8)
    g, inputs = chain(x, _i8((8, 10, 3, 3)), bias=False, x_zp=128, pad=(1, 1, 1, 1))
    assert_fast_and_exact(g, inputs, "gemm")


@needs_avx2
def test_grouped_conv_falls_back_to_the_generic_lowering():
    g, inputs = chain(_i8((1, 8, 6, 6)), _i8((8, 4, 3, 3)), groups=2, pad=(1, 1, 1, 1))
    names = [gv.name_hint for gv in to_relax(g, isa="avx2").functions]
    assert not any(n.startswith("dq_") for n in names)
    np.testing.assert_array_equal(compile_cpu(g).run(inputs), run(g, inputs))


@pytest.mark.parametrize("o,isa,reg", [(8, "vnni", "ymm"), (24, "vnni512", "zmm"), (64, "vnni512", "zmm")])
def test_avx512_vnni_targets_take_zmm_kernels_except_for_eight_channels(o, isa, reg):
    """On AVX-512 VNNI one ``vpdpbusd`` covers 16 output channels; a layer of at most 8 keeps the ymm form."""
    g, _ = chain(_i8((1, 16, 6, 6)), _i8((o, 16, 1, 1)))
    names = [gv.name_hint for gv in to_relax(g, isa="vnni512").functions if gv.name_hint.startswith("dq_")]
    assert names == [f"dq_gemm_{isa}"]
    asm = compile_cpu(g, mcpu="sapphirerapids").module.mod.imports[0].inspect_source("asm")
    assert re.search(rf"vpdpbusd\s+[^\n]*%{reg}", asm)


def test_generic_kernels_option_and_no_fast_path_below_avx2():
    g, inputs = chain(_i8((1, 8, 4, 4)), _i8((8, 8, 1, 1)))
    assert compile_cpu(g, kernels="generic").manifest["kernels"] == "generic"
    assert compile_cpu(g, mcpu="x86-64").manifest["kernels"] == "generic"
    from dyadiq.codegen.x86.lower import select_isa
    assert select_isa(make_target("x86-64")) is None
    assert select_isa(make_target("x86-64-v3")) == "avx2"
    assert select_isa(make_target("sapphirerapids")) == "vnni512"
    assert select_isa(make_target("alderlake")) == "vnni"


@pytest.mark.parametrize("x_dtype,x_zp", [("int8", -128), ("int8", 13), ("uint8", 0), ("uint8", 200)])
def test_vnni_u8_shift_with_zero_point_compensation_is_exact(x_dtype, x_zp):
    """numpy: sum((x - x_zp) w) over a zero-point-padded window == sum(u w) + vnni_bias with u = x + off
    (padding u = x_zp + off, channel padding u = anything with w = 0), in int32 as the kernel computes."""
    from dyadiq.codegen.x86.gemm import vnni_bias, vnni_offset
    lo, hi = (-128, 128) if x_dtype == "int8" else (0, 256)
    x = RNG.integers(lo, hi, size=(50, 37)).astype(np.int64)
    x[RNG.random(x.shape) < 0.2] = x_zp                           # padded positions hold the zero point
    w = RNG.integers(-128, 128, size=(11, 37)).astype(np.int64)
    ref = (x - x_zp) @ w.T
    u = x + vnni_offset(x_dtype)
    assert u.min() >= 0 and u.max() <= 255                         # fits uint8
    u_pad = np.concatenate([u, RNG.integers(0, 256, size=(50, 3))], axis=1)   # K padded to 40
    w_pad = np.concatenate([w, np.zeros((11, 3), np.int64)], axis=1)
    acc32 = (u_pad @ w_pad.T).astype(np.int32)
    got = acc32.astype(np.int64) + vnni_bias(w, x_zp, x_dtype)
    np.testing.assert_array_equal(got, ref)


@needs_avx2
def test_kernels_in_sequence_keep_nhwc_between_them():
    """1x1 (6 outputs) -> 3x3 on those 6 channels -> depthwise: NHWC (and its [P, C] view) flows from
    kernel to kernel; only the graph's ends are transposed."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 9, 9), "i8")
    v = x
    for i, (w, attrs) in enumerate([(_i8((6, 8, 1, 1)), {}), (_i8((8, 6, 3, 3)), {"pad": (1, 1, 1, 1)}),
                                    (_i8((8, 1, 3, 3)), {"pad": (1, 1, 1, 1), "groups": 8})]):
        acc = b.op("qconv2d", [v, b.const(f"w{i}", w)], x_zp=-128 if i else 0, **attrs)
        o = w.shape[0]
        v = b.op("requantize", [acc, b.const(f"m{i}", np.full((1, o, 1, 1), 2**30 + 12345, np.int32)),
                                b.const(f"s{i}", np.full((1, o, 1, 1), 44 - 2 * i, np.int32))],
                 in_zp=0, out_zp=-128, qmin=-128, qmax=127, dtype="i8")
    g = b.build([v])
    main = to_relax(g, isa="avx2")["main"].script()
    assert main.count("R.permute_dims") == 2 and main.count("R.call_tir") == 3
    xin = _i8((1, 8, 9, 9))
    np.testing.assert_array_equal(compile_cpu(g).run([xin]), run(g, [xin]))


# ---- vpmaddubsw: u8 x s8 pairs, exact for weights in [-64, 64] ------------------------------------------
def _w7(shape, extremes=True):
    """7-bit weights in [-64, 63]; with ``extremes`` whole input-channel runs at -64 and at 63 (and one 64,
    still allowed) so that adjacent pairs of the reduction reach the int16 limit of vpmaddubsw."""
    w = RNG.integers(-64, 64, size=shape).astype(np.int8)
    if extremes:
        w[0] = -64
        w[1 % shape[0]] = 63
        w[2 % shape[0], ..., 0] = 64
    return w


def _asm_of(g) -> str:
    return compile_cpu(g, mcpu=AVX2_CPU).module.mod.imports[0].inspect_source("asm")


def _kernel_isas(g) -> list[str]:
    return [gv.name_hint for gv in to_relax(g, isa="avx2").functions if gv.name_hint.startswith("dq_")]


U8_CASES = [  # (x, w shape, attrs)
    ((1, 13, 5, 5), (20, 13, 1, 1), {}),                                                 # odd C, O % 8, P % 6
    ((1, 3, 15, 15), (10, 3, 3, 3), {"stride": (2, 2), "pad": (0, 0, 1, 1)}),           # stem-like (NCHW read)
    ((1, 6, 9, 8), (8, 6, 3, 3), {"pad": (1, 1, 1, 1), "dilation": (2, 2)}),
    ((2, 9, 7, 7), (17, 9, 3, 3), {"pad": (1, 2, 0, 1), "stride": (1, 2)}),             # batch 2, odd everything
    ((1, 40, 4, 4), (16, 40, 1, 1), {}),
]


@needs_avx2
@pytest.mark.parametrize("xs,ws,attrs", U8_CASES)
@pytest.mark.parametrize("x_kind", ["u8_extremes", "i8_extremes", "random_zp"])
def test_vpmaddubsw_kernel_is_exact_at_the_saturation_limits(xs, ws, attrs, x_kind):
    """Activations at 0/255 (u = x + off) times weights at -64/63/64 in adjacent pairs: the pair sums reach
    +-32640, the int16 limit is 32767; the result must equal the integer interpreter bit for bit."""
    if x_kind == "u8_extremes":
        x = np.where(RNG.random(xs) < 0.7, 255, 0).astype(np.uint8)
        x_zp = 0
    elif x_kind == "i8_extremes":
        x = np.where(RNG.random(xs) < 0.7, 127, -128).astype(np.int8)
        x_zp = -128
    else:
        x = RNG.integers(0, 256, size=xs).astype(np.uint8)
        x_zp = 131
    g, inputs = chain(x, _w7(ws), x_zp=x_zp, clamps=x_kind == "random_zp", **attrs)
    assert any(k.endswith("_avx2u8") for k in _kernel_isas(g))
    assert_fast_and_exact(g, inputs, "gemm")


@needs_avx2
def test_vpmaddubsw_linear_and_residual_are_exact():
    g, inputs = chain(RNG.integers(-128, 128, size=(3, 37)).astype(np.int8), _w7((11, 37)), op="qlinear", x_zp=-128)
    assert _kernel_isas(g) == ["dq_linear_avx2u8"]
    assert_fast_and_exact(g, inputs, "linear")
    g, inputs = chain(_i8((1, 24, 6, 6)), _w7((16, 24, 1, 1)), residual=_i8((1, 16, 6, 6)), x_zp=5)
    assert_fast_and_exact(g, inputs, "gemm")


@needs_avx2
def test_vpmaddubsw_only_for_layers_whose_channel_pairs_cannot_saturate():
    """Per layer: a 7-bit layer's build contains vpmaddubsw; a layer with one channel pair whose same-sign
    weights sum past 128 (127 next to 2, or -127 next to -2) keeps the int16 vpmaddwd kernel and never
    contains the saturating instruction."""
    x = _i8((1, 8, 6, 6))
    w7 = _w7((8, 8, 3, 3))
    g7, in7 = chain(x, w7, pad=(1, 1, 1, 1))
    assert _kernel_isas(g7) == ["dq_gemm_avx2u8"]
    asm7 = _asm_of(g7)
    assert "vpmaddubsw" in asm7 and "vpmaddwd" in asm7
    w8 = w7.copy()
    w8[3, 2:4, 1, 1] = 127, 2
    g8, in8 = chain(x, w8, pad=(1, 1, 1, 1))
    assert _kernel_isas(g8) == ["dq_gemm_avx2"]
    asm8 = _asm_of(g8)
    assert "vpmaddwd" in asm8 and "vpmaddubsw" not in asm8
    np.testing.assert_array_equal(compile_cpu(g8).run(in8), run(g8, in8))
    w8[3, 2:4, 1, 1] = -127, -2
    g8, in8 = chain(x, w8, pad=(1, 1, 1, 1))
    assert _kernel_isas(g8) == ["dq_gemm_avx2"]
