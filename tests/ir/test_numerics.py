# SPDX-License-Identifier: Apache-2.0
"""Property tests of the quantize/dequantize contract (docs/numerics.md) against plain Python."""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from dyadiq.ir.numerics import dequantize, fake_quant, quantize
from dyadiq.ir.types import QuantType

bits = st.integers(2, 16)
scales = st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False)
floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def quant_types(draw, signed=None):
    b = draw(bits)
    s = draw(st.booleans()) if signed is None else signed
    q = QuantType.make(b, s, draw(scales), 0)
    lo, hi = q.qrange
    return QuantType.make(b, s, q.scale[0], draw(st.integers(lo, hi)))


def ref_quantize(x: float, q: QuantType) -> int:
    """The contract in plain Python: clamp(round_half_even(x / s) + zp, qmin, qmax)."""
    lo, hi = q.qrange
    return min(max(round(float(x) / q.scale[0]) + q.zero_point[0], lo), hi)   # round(): half to even


@settings(max_examples=100, deadline=None)
@given(quant_types(), st.lists(floats, min_size=1, max_size=20))
def test_quantize_matches_the_plain_python_contract(q, xs):
    x = np.asarray(xs, np.float32)
    assert quantize(x, q).tolist() == [ref_quantize(v, q) for v in x]


@settings(max_examples=100, deadline=None)
@given(quant_types(), st.integers(-20, 20), st.integers(-4, 4))
def test_ties_round_half_to_even(q, e, k):
    q = QuantType.make(q.bits, q.signed, 2.0 ** e, q.zero_point[0])     # exact ties: power-of-2 scale
    x = np.asarray([(k + 0.5) * q.scale[0]], np.float64)
    lo, hi = q.qrange
    want = min(max((k if k % 2 == 0 else k + 1) + q.zero_point[0], lo), hi)
    assert quantize(x, q)[0] == want


@settings(max_examples=100, deadline=None)
@given(quant_types(), st.lists(floats, min_size=1, max_size=20))
def test_codes_are_clamped_to_the_integer_range(q, xs):
    lo, hi = q.qrange
    v = quantize(np.asarray(xs, np.float32), q)
    assert v.min() >= lo and v.max() <= hi


@settings(max_examples=100, deadline=None)
@given(quant_types(), st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_error_is_at_most_half_a_step_inside_the_range(q, fracs):
    lo, hi = q.qrange
    s, z = q.scale[0], q.zero_point[0]
    x = np.asarray([s * (lo - z) + f * s * (hi - lo) for f in fracs], np.float64)
    err = np.abs(fake_quant(x, q) - x)
    assert np.all(err <= s / 2 * (1 + 1e-9))


@settings(max_examples=100, deadline=None)
@given(quant_types())
def test_every_code_survives_dequantize_then_quantize(q):
    lo, hi = q.qrange
    codes = np.arange(lo, hi + 1) if hi - lo < 5000 else np.linspace(lo, hi, 5000).astype(np.int64)
    assert np.array_equal(quantize(dequantize(codes, q), q), codes)


@settings(max_examples=100, deadline=None)
@given(quant_types(), st.lists(floats, min_size=1, max_size=20))
def test_fake_quant_is_idempotent(q, xs):
    once = fake_quant(np.asarray(xs, np.float32), q)
    assert np.array_equal(fake_quant(once, q), once)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.lists(scales, min_size=2, max_size=6), st.data())
def test_per_channel_quantizes_each_channel_with_its_scale(b, ss, data):
    q = QuantType.make(b, True, ss, 0, axis=0)
    x = np.asarray(data.draw(st.lists(floats, min_size=len(ss) * 3, max_size=len(ss) * 3)),
                   np.float32).reshape(len(ss), 3)
    v = quantize(x, q)
    for c, s in enumerate(ss):
        assert v[c].tolist() == [ref_quantize(e, QuantType.make(b, True, s, 0)) for e in x[c]]


def test_zero_point_maps_zero_exactly():
    q = QuantType.make(8, True, 0.0173, -37)
    assert quantize(np.zeros(3, np.float32), q).tolist() == [-37] * 3
    assert dequantize(np.asarray([-37]), q)[0] == 0.0
    assert math.isclose(dequantize(np.asarray([-36]), q)[0], 0.0173, rel_tol=1e-6)
