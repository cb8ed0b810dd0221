# SPDX-License-Identifier: Apache-2.0
"""Weight quantization: symmetric per-channel / per-tensor scales, on-grid weights, per-layer widths."""
import numpy as np
import pytest

from dyadiq.errors import PassError
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.numerics import fake_quant, quantize
from dyadiq.passes.quantize_weights import quantize_weights, snap_weights

RNG = np.random.default_rng(0)


def two_layers(w1=None, shared=False):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 6))
    w1 = b.const("w1", RNG.normal(size=(4, 3, 3, 3)).astype(np.float32) if w1 is None else w1)
    c = b.op("conv2d", [x, w1, b.const("b1", np.ones(4, np.float32))], "conv")
    f = b.op("reshape", [c], "flat", shape=(1, 64))
    w2 = b.const("w2", RNG.normal(size=(5, 64)).astype(np.float32))
    y = b.op("linear", [f, w2], "fc")
    if shared:
        y = b.op("linear", [f, w2], "fc2")
    return b.build([y])


def test_symmetric_per_channel_scales_and_on_grid_weights():
    g = two_layers()
    q = quantize_weights(g)
    for name in ("w1", "w2"):
        w, qt = g.const(name), q.quant_of(name)
        flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        assert qt.axis == 0 and qt.bits == 8 and set(qt.zero_point) == {0}
        assert np.array_equal(np.asarray(qt.scale), (flat / 127).astype(np.float32).astype(np.float64))
        assert np.array_equal(q.const(name), fake_quant(w, qt))               # replaced by its grid value
        codes = quantize(q.const(name), qt).reshape(w.shape[0], -1)
        assert np.array_equal(np.abs(codes).max(axis=1), np.full(w.shape[0], 127))
    assert q.quant_of("b1") is None and np.array_equal(q.const("b1"), g.const("b1"))   # biases untouched


RNG_W1 = np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32)


def test_per_tensor_has_one_scale():
    q = quantize_weights(two_layers(RNG_W1), per_channel=False, bits=4)
    qt = q.quant_of("w1")
    assert qt.axis is None and qt.bits == 4
    assert qt.scale[0] == np.float32(np.abs(RNG_W1).max() / 7)
    assert np.abs(quantize(q.const("w1"), qt)).max() == 7


def test_rounding_is_half_to_even():
    b = GraphBuilder()
    w = np.array([[0.5, 1.5, 2.5, -2.5, 127.0], [1, 2, 3, 4, 5]], np.float32)   # row 0: scale 1, exact ties
    g = b.build([b.op("linear", [b.input("x", (1, 5)), b.const("w", w)], "y")])
    assert quantize_weights(g).const("w")[0].tolist() == [0.0, 2.0, 2.0, -2.0, 127.0]


def test_per_layer_bits_and_errors():
    g = two_layers()
    q = quantize_weights(g, bits={"conv": 4})
    assert q.quant_of("w1").bits == 4 and q.quant_of("w2").bits == 8
    with pytest.raises(PassError, match="weight bits must be 2..8, got 9"):
        quantize_weights(g, bits=9)
    with pytest.raises(PassError, match=r"weight bits must be 2..8, got 1 for layer %fc"):
        quantize_weights(g, bits={"fc": 1})
    with pytest.raises(PassError, match=r"unknown layer\(s\) \['conv1'\]"):
        quantize_weights(g, bits={"conv1": 4})
    with pytest.raises(PassError, match=r"\[%fc2 linear\] weight %w2 is shared with %fc at 4 bits"):
        quantize_weights(two_layers(shared=True), bits={"fc": 4})


def test_zero_and_dead_channels_get_a_usable_scale():
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    w[1] = 0.0
    w[2] *= 1e-12                                       # e.g. a BatchNorm-folded dead channel
    qt = quantize_weights(two_layers(w)).quant_of("w1")
    top = max(qt.scale)
    assert min(qt.scale) >= top * 2 ** -16 * (1 - 1e-6)   # never a vanishing scale (int32 bias, shift)
    assert qt.scale[1] == qt.scale[2] == top                 # dead channels: the largest scale, weights 0
    assert not quantize_weights(two_layers(w)).const("w1")[1:3].any()
    q = quantize_weights(two_layers(np.zeros((4, 3, 3, 3), np.float32)))
    assert all(s > 0 for s in q.quant_of("w1").scale) and not q.const("w1").any()


def test_asymmetric_weights_have_zero_points_and_stay_within_half_a_step():
    w = (RNG.random(size=(4, 3, 3, 3)) * 2 + 0.1).astype(np.float32)    # all positive
    q = quantize_weights(two_layers(w), symmetric=False)
    qt = q.quant_of("w1")
    assert all(z == -128 for z in qt.zero_point)
    assert np.all(np.abs(q.const("w1") - w) <= np.asarray(qt.scale)[:, None, None, None] / 2 + 1e-7)


def test_idempotent_and_snap_false_defers_the_rounding():
    g = two_layers()
    q = quantize_weights(g)
    assert quantize_weights(q) is q and snap_weights(q) is q
    lazy = quantize_weights(g, snap=False)
    assert lazy.quant_of("w1") == q.quant_of("w1") and np.array_equal(lazy.const("w1"), g.const("w1"))
    assert snap_weights(lazy) == q


def test_dynamic_weights_are_rejected():
    b = GraphBuilder()
    x, w = b.input("x", (2, 4)), b.input("w", (3, 4))
    g = b.build([b.op("linear", [x, w], "y")])
    with pytest.raises(PassError, match=r"\[%y linear\] weight %w is not a constant"):
        quantize_weights(g)


def test_biases_go_on_the_int32_grid_of_the_layer_input_and_weight_scales():
    from dyadiq.passes.annotate_quant import act_quant
    g = two_layers()
    b1 = RNG.normal(size=4).astype(np.float32)
    g = g.replace(constants={**g.constants, "b1": b1}).with_quant("x", act_quant(-2.0, 2.0))
    q = quantize_weights(g)
    step = q.quant_of("x").scale[0] * np.asarray(q.quant_of("w1").scale)
    k = q.const("b1").astype(np.float64) / step
    assert np.array_equal(np.rint(k), np.rint(b1 / step)) and np.allclose(k, np.rint(k), atol=1e-3)
    assert np.all(np.abs(q.const("b1") - b1) <= step / 2 + 1e-7)
    assert q.quant_of("b1") is None                                   # biases still carry no QuantType
