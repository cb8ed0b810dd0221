# SPDX-License-Identifier: Apache-2.0
"""Dyadic requantize equals an exact rational reference; dyadic() approximates within 2^-30 relative."""
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st

from dyadiq.ir.numerics import dyadic
from dyadiq.ir.ops import op_def

ACC = st.integers(-(2**31), 2**31 - 1)
MULT = st.integers(2**30, 2**31 - 1)
SHIFT = st.integers(1, 62)


def exact(acc: int, m: int, s: int, zp: int, qmin: int, qmax: int) -> int:
    """floor(acc * m / 2^s + 1/2) + zp, clamped — with Python rationals."""
    v = Fraction(acc * m, 2**s) + Fraction(1, 2)
    return max(qmin, min(qmax, (v.numerator // v.denominator) + zp))


@settings(max_examples=300, deadline=None)
@given(st.lists(ACC, min_size=1, max_size=16), MULT, SHIFT, st.integers(-128, 127))
def test_requantize_kernel_equals_rational_reference(accs, m, s, zp):
    kernel = op_def("requantize").kernel
    acc = np.asarray(accs, np.int32)
    (y,) = kernel([acc, np.asarray(m, np.int32), np.asarray(s, np.int32)],
                  {"out_zp": zp, "qmin": -128, "qmax": 127, "dtype": "i8"})
    assert y.tolist() == [exact(a, m, s, zp, -128, 127) for a in accs]


@settings(max_examples=300, deadline=None)
@given(st.floats(2.0**-31, 2.0**29, allow_nan=False))
def test_dyadic_multiplier_is_within_half_ulp(M):
    m, s = dyadic(M)
    assert 2**30 <= int(m) < 2**31 and 1 <= int(s) <= 62
    assert abs(Fraction(int(m), 2**int(s)) - Fraction(M)) <= Fraction(M) * Fraction(1, 2**30)


def test_dyadic_rejects_out_of_range():
    import pytest
    for bad in (0.0, -1.0, float("inf"), 2.0**31, 2.0**-40):
        with pytest.raises(ValueError):
            dyadic(bad)
