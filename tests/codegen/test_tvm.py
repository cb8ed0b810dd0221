# SPDX-License-Identifier: Apache-2.0
"""codegen.tvm: every integer op, compiled by TVM for this CPU, equals the interpreter's kernel bit for bit."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dyadiq.codegen.tvm import module_constants, pack_bits, to_relax, unpack_bits
from dyadiq.errors import CodegenError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.types import QuantType
from dyadiq.targets.cpu import compile_cpu

RNG = np.random.default_rng(0)


def i8(shape, lo=-128, hi=128):
    return RNG.integers(lo, hi, size=shape).astype(np.int8)


def assert_compiled_equals_interp(g, *inputs):
    """Build ``g`` for this CPU; its outputs equal the interpreter's (values and dtype) on ``inputs``."""
    art = compile_cpu(g)
    got, ref = art.run(list(inputs)), run(g, list(inputs))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def one_op(op, inputs: dict, consts: dict = None, **attrs):
    """A graph with one ``op`` on graph inputs ``{name: array}`` then constants ``{name: array}``."""
    b = GraphBuilder()
    names = [b.input(k, v.shape, {np.int8: "i8", np.int32: "i32", np.uint8: "u8", np.float32: "f32",
                                  np.int16: "i16"}[v.dtype.type]) for k, v in inputs.items()]
    for k, v in (consts or {}).items():
        if isinstance(v, tuple):                       # (array, dtype, quant)
            names.append(b.const(k, v[0], dtype=v[1], quant=v[2]))
        else:
            names.append(b.const(k, v))
    return b.build([b.op(op, names, **attrs)])


# ---- requantize: the contract's rescale ---------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), in_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127),
       per_channel=st.booleans(), bounds=st.sampled_from(["none", "lo", "lo_hi"]),
       out=st.sampled_from([("i8", -128, 127), ("i16", -32768, 32767), ("i8", -8, 7)]))
def test_requantize_matches_interpreter(seed, in_zp, out_zp, per_channel, bounds, out):
    rng = np.random.default_rng(seed)
    c = 16
    mag = 2 ** rng.integers(0, 32, size=(2, c, 4, 4))                     # accumulators of every magnitude
    acc = rng.integers(-mag, mag).clip(-2**31, 2**31 - 1).astype(np.int32)
    shape = (1, c, 1, 1) if per_channel else ()
    m = rng.integers(2**30, 2**31, size=shape).astype(np.int32)
    s = rng.integers(1, 63, size=shape).astype(np.int32)
    consts = {"m": m, "s": s}
    dtype, qmin, qmax = out
    if bounds != "none":
        consts["lo"] = rng.integers(qmin, 0, size=shape).astype(np.int32)
    if bounds == "lo_hi":
        consts["hi"] = rng.integers(0, qmax + 1, size=shape).astype(np.int32)
    g = one_op("requantize", {"acc": acc}, consts, in_zp=in_zp, out_zp=out_zp, qmin=qmin, qmax=qmax, dtype=dtype)
    assert_compiled_equals_interp(g, acc)


# ---- quantize / dequantize ----------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), log2_scale=st.integers(-12, 2), zp=st.integers(-128, 127),
       power_of_two=st.booleans())
def test_quantize_rounds_half_to_even_in_float64(seed, log2_scale, zp, power_of_two):
    rng = np.random.default_rng(seed)
    scale = 2.0**log2_scale if power_of_two else float(rng.uniform(0.5, 1.0) * 2.0**log2_scale)
    k = rng.integers(-300, 300, size=256)
    x = np.concatenate([(k + 0.5) * scale, rng.normal(size=256) * 200 * scale,   # exact ties and noise
                        [np.inf, -np.inf, 0.0, -0.0]]).astype(np.float32).reshape(1, -1)
    g = one_op("quantize", {"x": x}, scale=(scale,), zero_point=(zp,), bits=8, signed=True, dtype="i8")
    assert_compiled_equals_interp(g, x)


def test_per_channel_quantize_and_dequantize():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32) * 5
    q = dict(scale=(0.01, 0.1, 0.7), zero_point=(-3, 0, 5), axis=1)
    assert_compiled_equals_interp(one_op("quantize", {"x": x}, bits=8, signed=True, dtype="i8", **q), x)
    v = i8((2, 3, 4))
    assert_compiled_equals_interp(one_op("dequantize", {"v": v}, **q), v)


# ---- accumulating ops ---------------------------------------------------------------------------------
CONV_CASES = [  # (groups, stride, pad, dilation, x_zp, bias)
    (1, (1, 1), (1, 1, 1, 1), (1, 1), 7, True),
    (1, (2, 2), (0, 1, 2, 0), (1, 1), -128, False),
    (4, (1, 2), (1, 0, 1, 0), (2, 1), 3, True),      # grouped + dilated
    (8, (1, 1), (1, 1, 1, 1), (1, 1), -5, False),    # depthwise
    (8, (2, 2), (0, 0, 0, 0), (1, 1), 0, True),
]


@pytest.mark.parametrize("groups,stride,pad,dilation,x_zp,bias", CONV_CASES)
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_qconv2d(groups, stride, pad, dilation, x_zp, bias, bits):
    x = i8((2, 8, 9, 7))
    lim = (1 << (bits - 1)) - 1
    w = RNG.integers(-lim, lim + 1, size=(8, 8 // groups, 3, 3)).astype(np.int8)
    qw = QuantType.make(bits, True, np.full(8, 0.1), 0, 0)
    consts = {"w": (w, "i4" if bits <= 4 else "i8", qw)}
    if bias:
        consts["b"] = RNG.integers(-5000, 5000, size=8).astype(np.int32)
    g = one_op("qconv2d", {"x": x}, consts, stride=stride, pad=pad, dilation=dilation, groups=groups, x_zp=x_zp)
    assert_compiled_equals_interp(g, x)


@pytest.mark.parametrize("bits,bias,x_zp", [(8, True, -20), (4, False, 9), (2, True, 0), (6, False, 1)])
def test_qlinear(bits, bias, x_zp):
    x = i8((3, 2, 40))
    lim = (1 << (bits - 1)) - 1
    w = RNG.integers(-lim, lim + 1, size=(11, 40)).astype(np.int8)
    consts = {"w": (w, "i4" if bits <= 4 else "i8", QuantType.make(bits, True, 0.1))}
    if bias:
        consts["b"] = RNG.integers(-5000, 5000, size=11).astype(np.int32)
    assert_compiled_equals_interp(one_op("qlinear", {"x": x}, consts, x_zp=x_zp), x)


def test_qmatmul_qmul_qadd():
    a, b = i8((2, 3, 5, 7)), i8((1, 3, 7, 4))
    assert_compiled_equals_interp(one_op("qmatmul", {"a": a, "b": b}, a_zp=-3, b_zp=11), a, b)
    a, b = i8((2, 4, 5)), i8((4, 1))
    assert_compiled_equals_interp(one_op("qmul", {"a": a, "b": b}, a_zp=-128, b_zp=127), a, b)
    b = i8((2, 4, 5))
    g = one_op("qadd", {"a": a, "b": b}, a_zp=-7, b_zp=100, a_m=1518500250, b_m=1073741824 + 12345, shift=31,
               out_zp=-3, qmin=-100, qmax=90, dtype="i8")
    assert_compiled_equals_interp(g, a, b)


@pytest.mark.parametrize("axes,x_zp", [((2, 3), -11), ((1,), 0), ((0, 2), 127)])
def test_qsum(axes, x_zp):
    x = i8((2, 3, 5, 6))
    assert_compiled_equals_interp(one_op("qsum", {"x": x}, axes=axes, x_zp=x_zp), x)


@pytest.mark.parametrize("kernel,stride,pad,ceil_mode", [((2, 2), (2, 2), (0, 0, 0, 0), False),
                                                          ((3, 3), (2, 2), (1, 1, 1, 1), True),
                                                          ((3, 2), (2, 3), (1, 0, 0, 1), True)])
def test_qavgpool_and_maxpool(kernel, stride, pad, ceil_mode):
    x = i8((1, 3, 9, 8))
    attrs = dict(kernel=kernel, stride=stride, pad=pad, ceil_mode=ceil_mode)
    assert_compiled_equals_interp(one_op("qavgpool", {"x": x}, x_zp=-9, **attrs), x)
    assert_compiled_equals_interp(one_op("maxpool", {"x": x}, **attrs), x)


def test_lut():
    x = i8((2, 3, 4))
    table = RNG.integers(-128, 128, size=256).astype(np.int8)
    assert_compiled_equals_interp(one_op("lut", {"x": x}, {"t": table}, in_min=-128), x)


# ---- data movement ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [
    ("reshape", dict(shape=(6, 20))), ("transpose", dict(perm=(2, 0, 3, 1))),
    ("slice", dict(starts=(1, -1), ends=(3, -6), axes=(1, 3), steps=(1, -2))),
    ("slice", dict(starts=(0,), ends=(100,), axes=(2,), steps=(2,))),
    ("pad", dict(pads=(0, 1, 0, 2, 0, 0, 2, 1), mode="constant", value=-7)),
    ("pad", dict(pads=(0, 0, 1, 2, 0, 0, 1, 1), mode="reflect")),
    ("pad", dict(pads=(0, 0, 1, 2, 0, 1, 0, 1), mode="edge")),
    ("identity", {}),
])
def test_data_movement(op, attrs):
    x = i8((2, 3, 4, 5))
    assert_compiled_equals_interp(one_op(op, {"x": x}, **attrs), x)


def test_gather_with_negative_constant_indices():
    x = i8((2, 5, 3))
    g = one_op("gather", {"x": x}, {"i": np.array([[4, -1], [0, -5]], np.int64)}, axis=1)
    assert_compiled_equals_interp(g, x)


def test_concat_and_multiple_outputs():
    b = GraphBuilder()
    x, y = b.input("x", (1, 2, 3), "i8"), b.input("y", (1, 4, 3), "i8")
    c = b.op("concat", [x, y], axis=-2)
    g = b.build([c, b.op("transpose", [c], perm=(0, 2, 1))])
    xs, ys = i8((1, 2, 3)), i8((1, 4, 3))
    got, ref = compile_cpu(g).run({"x": xs, "y": ys}), run(g, [xs, ys])
    assert len(got) == 2 and all(np.array_equal(a, r) for a, r in zip(got, ref))


# ---- sub-byte weights ---------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 8), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_pack_bits_round_trips_in_ceil_bits_n_over_8_bytes(bits, n, seed):
    v = np.random.default_rng(seed).integers(-(1 << (bits - 1)), 1 << (bits - 1), size=n)
    p = pack_bits(v, bits)
    assert p.dtype == np.uint8 and p.size == math.ceil(bits * n / 8)
    np.testing.assert_array_equal(unpack_bits(p, bits, n), v)


def test_sub_byte_weights_are_stored_packed_in_the_module():
    w = RNG.integers(-7, 8, size=(16, 8, 3, 3)).astype(np.int8)
    g = one_op("qconv2d", {"x": i8((1, 8, 6, 6))}, {"w": (w, "i4", QuantType.make(4, True, 0.1))}, pad=(1, 1, 1, 1))
    consts = module_constants(to_relax(g))
    assert any(c.dtype == np.uint8 and c.size == w.size // 2 for c in consts)
    assert not any(c.size >= w.size for c in consts)                    # no unpacked copy
    assert any(c.size == w.size for c in module_constants(to_relax(g, pack_weights=False)))


def test_weight_that_does_not_fit_its_bits_is_an_error():
    with pytest.raises(CodegenError, match="do not fit 4 signed bits"):
        pack_bits(np.array([9]), 4)


def test_unsupported_op_is_named():
    g = one_op("qsum", {"x": i8((2, 3))}, axes=(1,))
    g = g.replace(nodes=(g.nodes[0].__class__.make("softmax", g.nodes[0].inputs, g.nodes[0].outputs),))
    with pytest.raises(CodegenError, match=r"softmax.*no TVM lowering"):
        to_relax(g)
