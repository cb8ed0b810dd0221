# SPDX-License-Identifier: Apache-2.0
"""ir.verify_integer: every integer op's arithmetic bound is proven from operand ranges at compile time, so no
backend ever wraps; the cases that used to overflow are refused with the node named."""
import numpy as np
import pytest

from dyadiq.errors import PassError, VerifyError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.types import QuantType
from dyadiq.ir.verify_integer import value_ranges, verify_integer
from dyadiq.passes.integerize import integerize


def _mul_graph(bits: int):
    """x * y with both activations quantized at ``bits`` on [0, 1]."""
    b = GraphBuilder()
    x, y = b.input("x", (1, 4)), b.input("y", (1, 4))
    g = b.build([b.op("mul", [x, y])])
    q = QuantType.make(bits, True, 1.0 / ((1 << bits) - 1), -(1 << (bits - 1)))
    for v in (*g.inputs, g.outputs[0]):
        g = g.with_quant(v, q)
    return g


def test_a_product_of_two_16_bit_activations_is_refused_at_compile_time():
    """(2^16 - 1)^2 >= 2^31: the int32 product could wrap (the cpu artifact used to return 0.0 for 1.0 * 1.0)."""
    with pytest.raises(PassError, match=r"\[%mul.acc qmul\] arithmetic bound 4294836225 is not below 2147483648"):
        integerize(_mul_graph(16))


def test_a_product_of_two_8_bit_activations_is_proven_and_exact_at_the_extremes():
    ig = integerize(_mul_graph(8))
    assert value_ranges(ig)["mul.acc"] == (-65025, 65025)
    one = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(run(ig, [one, one]), 1.0, atol=1 / 255)


def _conv_chain(w: np.ndarray, x_dtype: str = "i8"):
    b = GraphBuilder()
    x = b.input("x", (1, w.shape[1], 4, 4), x_dtype)
    acc = b.op("qconv2d", [x, b.const("w", w)], x_zp=0)
    return b.build([acc])


def test_a_conv_bound_one_step_past_int32_is_refused_and_one_step_below_passes():
    """dmax * sum|w| = 128 * 127 * K: K = 132104 overflows int32, K = 132103 does not."""
    k_ok = (2**31 - 1) // (128 * 127)
    ok = _conv_chain(np.full((1, k_ok, 1, 1), 127, np.int8))
    assert verify_integer(ok) is ok
    bad = _conv_chain(np.full((1, k_ok + 1, 1, 1), 127, np.int8))
    with pytest.raises(VerifyError, match=r"\[%qconv2d qconv2d\] arithmetic bound"):
        verify_integer(bad)


def test_a_requantize_shift_outside_1_62_is_refused():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "i32")
    y = b.op("requantize", [x, b.const("m", np.asarray(2**30, np.int32)), b.const("s", np.asarray(63, np.int32))],
             in_zp=0, out_zp=0, qmin=-128, qmax=127, dtype="i8")
    with pytest.raises(VerifyError, match="requantize"):
        verify_integer(b.build([y]))


def test_a_lut_whose_input_range_leaves_its_table_is_refused():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "i8")
    y = b.op("lut", [x, b.const("t", np.arange(200, dtype=np.int8) - 100)], in_min=-128)
    with pytest.raises(VerifyError, match="lut"):
        verify_integer(b.build([y]))


def test_ranges_flow_through_data_movement_and_requantize():
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4, 4), "i8")
    p = b.op("maxpool", [x], kernel=(2, 2), stride=(2, 2))
    r = b.op("reshape", [p], shape=(1, 8))
    g = b.build([r])
    assert value_ranges(g)[r] == (-128, 127)
