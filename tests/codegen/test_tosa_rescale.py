# SPDX-License-Identifier: Apache-2.0
"""The exact TOSA forms of requantize and qadd (``codegen.tosa_rescale``): the arithmetic in numpy
over whole input ranges at extreme multipliers and shifts, and the same cases through IREE."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyadiq.codegen import tosa_rescale as rs
from dyadiq.ir.numerics import requantize_ref

M_EDGES = (1 << 30, (1 << 30) + 1, (1 << 31) - 1)


def _tosa_rescale(v, m, s, zp):
    """TOSA rescale (scale32, SINGLE_ROUND) on int32 -> int8 per the spec, REQUIREs asserted."""
    v = np.asarray(v, np.int64)
    assert np.all(v >= -(1 << (s - 1))) and np.all(v < (1 << (s - 1))), "value REQUIRE"
    r = (v * m + (1 << (s - 1))) >> s
    assert np.all(np.abs(r) + abs(zp) < 2**31), "result REQUIRE"
    return np.clip(r + zp, -128, 127)


@pytest.mark.parametrize("m", M_EDGES)
@pytest.mark.parametrize("s", [2, 3, 16, 30, 31, 32, 33, 47, 62])
@pytest.mark.parametrize("zp", [-128, 0, 127])
def test_rescale_plan_is_exact_on_the_full_int32_range(m, s, zp):
    lo, hi = -128, 127
    acc = np.concatenate([np.array([-2**31, -2**31 + 1, 2**31 - 1, 2**31 - 2, 0, -1, 1]),
                          np.random.default_rng(s).integers(-2**31, 2**31, 4000)])
    plan = rs.rescale_plan(2**31, m, s, zp, lo, hi)
    v = acc if plan is None else np.clip(acc, plan[0], plan[1])
    want = requantize_ref(acc, m, s, zp, lo, hi)
    assert np.array_equal(np.clip(_tosa_rescale(v, m, s, zp), lo, hi), want)
    if plan is not None:        # the saturating bounds are tight: the output changes right at them
        a_lo, a_hi = int(plan[0]), int(plan[1])
        assert requantize_ref(a_hi - 1, m, s, zp, lo, hi) < hi == requantize_ref(a_hi, m, s, zp, lo, hi)
        assert requantize_ref(a_lo, m, s, zp, lo, hi) == lo < requantize_ref(a_lo + 1, m, s, zp, lo, hi)


def test_rescale_plan_is_none_when_the_plain_rescale_fits():
    assert rs.rescale_plan(2**31, np.full(4, 1 << 30), np.full(4, 40), 3, -128, 127) is None
    assert rs.rescale_plan(255, 1 << 30, 20, 0, -128, 127) is None                  # i8 input, M = 2^10


def test_shift_one_is_refused():
    with pytest.raises(ValueError, match=r"\[2, 62\]"):
        rs.rescale_plan(255, 1 << 30, 1, 0, -128, 127)


def _qadd_ref(va, vb, a_m, b_m, sh):
    return (va.astype(np.int64) * a_m + vb.astype(np.int64) * b_m + (1 << (sh - 1))) >> sh


@pytest.mark.parametrize("a_m,b_m", [((1 << 31) - 1, (1 << 31) - 1), (1 << 30, 0), ((1 << 31) - 1, 1),
                                     (0x7FFF0000, 0xFFFF), ((1 << 30) + 0xFFFF, (1 << 31) - 0x10001)])
@pytest.mark.parametrize("sh", [17, 18, 30, 31, 32, 46, 47])
def test_qadd_int32_form_is_exact_over_every_int8_pair(a_m, b_m, sh):
    va, vb = np.meshgrid(np.arange(-255, 256), np.arange(-255, 256))
    p = rs.qadd_plan(a_m, b_m, sh, 255)
    assert np.array_equal(rs.qadd_int32(va, vb, p), _qadd_ref(va, vb, a_m, b_m, sh))


@pytest.mark.parametrize("a_m,b_m", [((1 << 31) - 1, (1 << 31) - 1), (1 << 30, 0), ((1 << 31) - 1, 8191),
                                     ((1 << 30) + 8191, (1 << 31) - 8193)])
@pytest.mark.parametrize("sh", [27, 30, 31, 32, 45, 57])
def test_qadd_int32_form_is_exact_for_16_bit_operands(a_m, b_m, sh):
    edge = np.array([-65535, -65534, -32768, -1, 0, 1, 32767, 65534, 65535])
    rand = np.random.default_rng(sh).integers(-65535, 65536, 300)
    va, vb = np.meshgrid(np.concatenate([edge, rand]), np.concatenate([edge, rand]))
    p = rs.qadd_plan(a_m, b_m, sh, 65535)
    assert np.array_equal(rs.qadd_int32(va, vb, p), _qadd_ref(va, vb, a_m, b_m, sh))


@settings(max_examples=200, deadline=None)
@given(a_m=st.integers(0, 2**31 - 1), b_m=st.integers(0, 2**31 - 1), sh=st.integers(17, 47),
       va=st.integers(-255, 255), vb=st.integers(-255, 255))
def test_qadd_int32_form_property(a_m, b_m, sh, va, vb):
    p = rs.qadd_plan(a_m, b_m, sh, 255)
    assert int(rs.qadd_int32(np.array([va]), np.array([vb]), p)[0]) == int(_qadd_ref(np.array([va]), np.array([vb]),
                                                                                     a_m, b_m, sh)[0])


def test_qadd_outside_the_form_is_refused():
    with pytest.raises(ValueError, match="shift 16"):
        rs.qadd_plan(1 << 30, 1 << 30, 16, 255)
    with pytest.raises(ValueError, match="wider than 16 bits"):
        rs.qadd_plan(1 << 30, 1 << 30, 30, 65536)


# ---- the same through IREE ----------------------------------------------------------------------------
def test_requantize_at_the_extremes_through_iree():
    """Per-channel multipliers at both ends of [2^30, 2^31), shifts 2..62, int32 accumulators at both ends
    (plain rescale where it fits, saturating pre-clamp where it does not)."""
    from dyadiq.interp.run import run_all
    from dyadiq.ir.builder import GraphBuilder
    ms = np.array([m for m in M_EDGES for _ in range(10)], np.int32)
    ss = np.array(list(range(2, 62, 6)) * 3, np.int32)
    b = GraphBuilder()
    x = b.input("x", (64, 30), "i32")
    y = b.op("requantize", [x, b.const("m", ms), b.const("s", ss)], qmin=-100, qmax=120, out_zp=7, dtype="i8")
    ig = b.build([y])
    acc = np.concatenate([np.array([-2**31, 2**31 - 1, 0, -1, 1, 2**30, -2**30, 12345], np.int64),
                          np.random.default_rng(0).integers(-2**31, 2**31, 56)]).astype(np.int32)
    xs = np.repeat(acc[:, None], 30, axis=1)
    want = run_all(ig, xs)[ig.outputs[0]]
    from dyadiq import targets
    pytest.importorskip("iree.runtime")
    got = targets.compile(ig, target="tosa").run_integer([xs])[0]
    assert np.array_equal(got, want)


def test_qadd_at_the_extremes_through_iree():
    from dyadiq.interp.run import run_all
    from dyadiq.ir.builder import GraphBuilder
    pytest.importorskip("iree.runtime")
    from dyadiq import targets
    a, bb = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
    a, bb = a.astype(np.int8).reshape(1, -1), bb.astype(np.int8).reshape(1, -1)
    for a_m, b_m, sh in [((1 << 31) - 1, (1 << 31) - 1, 31), (1 << 30, 12345, 17), (0x7FFF0000, 0xFFFF, 47)]:
        b = GraphBuilder()
        xa, xb = b.input("a", a.shape, "i8"), b.input("b", bb.shape, "i8")
        y = b.op("qadd", [xa, xb], a_zp=127, b_zp=-128, a_m=a_m, b_m=b_m, shift=sh, out_zp=-3, qmin=-128,
                 qmax=127, dtype="i8")
        ig = b.build([y])
        got = targets.compile(ig, target="tosa").run_integer([a, bb])[0]
        assert np.array_equal(got, run_all(ig, {"a": a, "b": bb})[ig.outputs[0]]), (a_m, b_m, sh)
