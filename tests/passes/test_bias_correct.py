# SPDX-License-Identifier: Apache-2.0
"""bias_correct: the mean per-channel output error of rounded weights goes away (empirical: exactly on
the calibration data; analytic: from Gaussian statistics), weights end on their grid, nothing else moves."""
from __future__ import annotations

import re

import numpy as np
import pytest

from golden_text import check_golden_text, golden_text
from dyadiq.errors import InputError, PassError
from dyadiq.interp import run_all
from dyadiq.interp.run import run_batched
from dyadiq.ir import GraphBuilder, QuantType, verify
from dyadiq.ir.numerics import fake_quant
from dyadiq.passes.bias_correct import bias_correct, clamped_gaussian_mean



def check_golden(name: str, before, after) -> None:
    """Compare with tests/golden/bias-correct/<name>.dq (rewritten when DYADIQ_UPDATE_GOLDEN=1).

    Bias digests are masked: corrected biases are sums over data, whose last bits depend on the BLAS.
    """
    text = re.sub(r"(\.bias = const \S+ )#[0-9a-f]{8}", r"\1#<digest>", golden_text("bias-correct", before, after))
    check_golden_text("bias-correct", name, text)


def weight_quant(w, bits=4):
    """Symmetric per-output-channel weight QuantType (numerics.md)."""
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    return QuantType.make(bits, True, m / ((1 << (bits - 1)) - 1), 0, 0)


def qconst(b, name, w, bits=4):
    return b.const(name, w, quant=weight_quant(w, bits))


def tiny(kind="conv2d", seed=0, bits=4):
    """layer1 (no bias) -> relu -> layer2 (bias), both weights quantized to ``bits`` but still float."""
    rng, b = np.random.default_rng(seed), GraphBuilder()
    if kind == "conv2d":
        x = b.input("x", (4, 3, 8, 8))
        w1, w2 = rng.normal(size=(8, 3, 3, 3)), rng.normal(size=(8, 8, 3, 3))
        attrs = dict(pad=(1, 1, 1, 1))
    else:
        x = b.input("x", (4, 12))
        w1, w2 = rng.normal(size=(16, 12)), rng.normal(size=(8, 16))
        attrs = {}
    h = b.op("relu", [b.op(kind, [x, qconst(b, "l1.weight", w1.astype(np.float32), bits)], name="l1", **attrs)],
             name="act")
    l2 = [h, qconst(b, "l2.weight", w2.astype(np.float32), bits), b.const("l2.bias", np.zeros(8, np.float32))]
    return b.build([b.op(kind, l2, name="l2", **attrs)])


def data(g, n=64, seed=1):
    shape = (n,) + g.type_of(g.inputs[0]).shape[1:]
    return (np.random.default_rng(seed).normal(size=shape) + 1.0).astype(np.float32)


def mean_channel_error(q, g, xs, mode="float"):
    """Mean over channels of |mean over data and positions of (y_q - y_float)|."""
    d = run_batched(q, xs, mode) - run_batched(g, xs, "float")
    axes = tuple(i for i in range(d.ndim) if i != 1)
    return float(np.abs(d.mean(axis=axes)).mean())


def act_stats(g, xs, name):
    v = np.concatenate([run_all(g, xs[i:i + 4])[name] for i in range(0, len(xs), 4)])
    axes = tuple(i for i in range(v.ndim) if i != 1)
    return {name: (v.mean(axis=axes), v.std(axis=axes))}


# ---- the error goes away ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv2d", "linear"])
def test_empirical_correction_removes_most_of_the_mean_error_on_held_out_data(kind):
    g = tiny(kind)
    out = bias_correct(g, data(g, seed=1))
    held_out = data(g, seed=2)
    before, after = mean_channel_error(g, g, held_out, "simulated"), mean_channel_error(out, g, held_out)
    assert after < 0.25 * before


@pytest.mark.parametrize("kind", ["conv2d", "linear"])
def test_analytic_correction_from_gaussian_stats_also_helps(kind):
    g = tiny(kind)
    out = bias_correct(g, mode="analytic", stats=act_stats(g, data(g, seed=1), "l1"))
    held_out = data(g, seed=2)
    assert mean_channel_error(out, g, held_out) < 0.5 * mean_channel_error(g, g, held_out, "simulated")
    np.testing.assert_array_equal(out.const("l1.weight"), g.const("l1.weight"))   # x has no stats: untouched


def test_empirical_shift_is_exact_on_the_calibration_data_with_strides_padding_and_groups():
    rng, b = np.random.default_rng(4), GraphBuilder()
    x = b.input("x", (2, 4, 9, 7))
    w = rng.normal(size=(6, 2, 3, 2)).astype(np.float32)
    g = b.build([b.op("conv2d", [x, qconst(b, "w", w, bits=3)], name="y", stride=(2, 1), pad=(1, 0, 2, 1),
                      dilation=(1, 2), groups=2)])
    xs = data(g, n=8, seed=5)
    out = bias_correct(g, xs)
    d = run_batched(out, xs) - run_batched(g, xs)
    assert np.abs(d.mean(axis=(0, 2, 3))).max() < 1e-5 * np.abs(d).max()


# ---- quantized_acts: the mean shift of the whole quantized prefix ---------------------------------
def offset_data(g, n=16, seed=6):
    """Inputs whose channels vary little around a per-channel level, so the rounding of an activation is
    nearly the same offset on every input (as in the deep layers of a network): a mean output shift that
    no weight error explains."""
    shape = g.type_of(g.inputs[0]).shape[1:]
    level = np.random.default_rng(0).uniform(0.5, 1.5, size=(shape[0],) + (1,) * (len(shape) - 1))
    return (level + 0.02 * np.random.default_rng(seed).normal(size=(n,) + shape)).astype(np.float32)


def with_acts(g, xs, bits=4):
    """``g`` with every activation quantized (min/max ranges, ``bits`` wide; the output 16-bit, so the
    error measured is the layers'), weights still float."""
    from dyadiq.passes.annotate_quant import annotate_activations
    from dyadiq.passes.calibrate import collect_ranges
    wide = {o: 16 for o in g.outputs}
    return annotate_activations(g, collect_ranges(g, xs, "minmax", bits=bits, value_bits=wide), bits=bits,
                                value_bits=wide)


def layer_mean_errors(q, g, xs):
    """Per weighted layer of ``q``: max over channels of |mean over data and positions of (its output in
    simulated mode, before its own rounding) - (the float model's)|, and the bias grid step s_x * max s_w."""
    from dyadiq.interp.run import _bias_on_grid
    from dyadiq.ir.ops import op_def
    layers = [n for n in q.nodes if n.op in ("conv2d", "linear")]
    sums = {n.name: 0.0 for n in layers}
    batch = g.type_of(g.inputs[0]).shape[0]
    for i in range(0, len(xs), batch):
        sim, flt = run_all(q, xs[i:i + batch], "simulated"), run_all(g, xs[i:i + batch])
        for n in layers:
            args = [sim[i] for i in n.inputs]
            args[2] = _bias_on_grid(q, n, args[2])
            d = op_def(n.op).kernel(args, n.attr_dict)[0] - flt[n.name]
            sums[n.name] = sums[n.name] + d.mean(axis=tuple(i for i in range(d.ndim) if i != 1))
    step = {n.name: q.quant_of(n.inputs[0]).scale[0] * float(np.max(q.quant_of(n.inputs[1]).scale))
            for n in layers}
    return {k: (float(np.abs(v / (len(xs) // batch)).max()), step[k]) for k, v in sums.items()}


@pytest.mark.parametrize("kind", ["conv2d", "linear"])
def test_quantized_acts_makes_every_layer_mean_output_match_the_float_model(kind):
    """With ``quantized_acts`` each layer's mean output per channel, run as simulated mode runs it (rounded
    weights, fake-quantized activations before it), equals the float model's on the calibration data, up
    to the integer code's bias grid; the float-input correction leaves the activations' mean shift."""
    g = tiny(kind, bits=8)
    xs = offset_data(g)
    q = with_acts(g, xs)
    new = layer_mean_errors(bias_correct(q, xs, quantized_acts=True), g, xs)
    old = layer_mean_errors(bias_correct(q, xs), g, xs)
    for layer, (err, step) in new.items():
        assert err <= 0.5 * step + 1e-9, (layer, err, step)
    assert old["l2"][0] > 10 * new["l2"][0] and old["l2"][0] > 2 * old["l2"][1]


def test_quantized_acts_lowers_the_output_error_on_held_out_data():
    g = tiny("conv2d", bits=8)
    xs = offset_data(g, seed=6)
    q = with_acts(g, xs)
    held_out = offset_data(g, seed=7)
    new, old = bias_correct(q, xs, quantized_acts=True), bias_correct(q, xs)
    assert mean_channel_error(new, g, held_out, "simulated") < 0.25 * mean_channel_error(old, g, held_out, "simulated")
    err = lambda out: float(np.mean((run_batched(out, held_out, "simulated")
                                     - run_batched(g, held_out)) ** 2))
    assert err(new) < 0.9 * err(old)


def test_quantized_acts_keeps_weights_rounded_to_nearest_and_needs_empirical_mode():
    g = tiny(bits=8)
    xs = offset_data(g)
    q = with_acts(g, xs)
    out = bias_correct(q, xs, quantized_acts=True)
    verify(out)
    for w in ("l1.weight", "l2.weight"):
        assert out.quant_of(w) == g.quant_of(w)
        np.testing.assert_array_equal(out.const(w), fake_quant(g.const(w), g.quant_of(w)))
    assert out.node("l1").inputs == ("x", "l1.weight", "l1.bias")   # a bias was created
    assert bias_correct(out, xs, quantized_acts=True) is out          # weights on their grid: nothing to do
    with pytest.raises(PassError, match="quantized_acts needs mode='empirical'"):
        bias_correct(q, mode="analytic", stats={}, quantized_acts=True)


def test_the_pipeline_with_round_to_nearest_corrects_against_the_quantized_model():
    """``quantize(rounding="nearest")`` corrects each bias on the quantized model: every layer's mean output
    on the calibration data is the float model's, up to the bias grid (BatchNorm folded: the float
    reference is the canonicalized graph)."""
    from dyadiq.passes.canonicalize import canonicalize
    from dyadiq.passes.pipeline import quantize
    g = tiny(bits=8).with_quant("l1.weight", None).with_quant("l2.weight", None)     # the pipeline rounds them
    xs = offset_data(g)
    q, _ = quantize(g, xs, act_bits=4, calib_method="minmax", rounding="nearest")
    for layer, (err, step) in layer_mean_errors(q, canonicalize(g), xs).items():
        assert err <= 0.5 * step + 1e-9, (layer, err, step)


# ---- the graph after correction -----------------------------------------------------------------
def test_weights_are_snapped_to_their_grid_and_keep_their_quant_types():
    g = tiny()
    out = bias_correct(g, data(g))
    verify(out)
    for w in ("l1.weight", "l2.weight"):
        assert out.quant_of(w) == g.quant_of(w)
        np.testing.assert_array_equal(out.const(w), fake_quant(g.const(w), g.quant_of(w)))
    assert out.node("l1").inputs == ("x", "l1.weight", "l1.bias")   # a bias was created
    assert out.quant_of("l1.bias") is None and out.outputs == g.outputs


def test_a_second_run_finds_nothing_to_correct():
    g = tiny()
    out = bias_correct(g, data(g))
    assert bias_correct(out, data(g)) is out


def test_graphs_without_off_grid_quantized_weights_come_back_unchanged():
    g = tiny()
    plain = g.with_quant("l1.weight", None).with_quant("l2.weight", None)
    assert bias_correct(plain, data(g)) is plain
    snapped = g.replace(constants={**g.constants, **{w: fake_quant(g.const(w), g.quant_of(w))
                                                     for w in ("l1.weight", "l2.weight")}})
    assert bias_correct(snapped, data(g)) is snapped


def test_analytic_without_stats_for_any_layer_input_changes_nothing():
    g = tiny()
    assert bias_correct(g, mode="analytic", stats={"unrelated": (np.zeros(3), np.ones(3))}) is g


def test_bad_arguments_raise():
    g = tiny()
    with pytest.raises(PassError, match="unknown mode"):
        bias_correct(g, data(g), mode="magic")
    with pytest.raises(PassError, match="calibration"):
        bias_correct(g)
    with pytest.raises(PassError, match="stats"):
        bias_correct(g, mode="analytic")
    with pytest.raises(InputError):
        bias_correct(g, np.zeros((8, 3, 4, 4), np.float32))


def test_golden_conv_relu_conv():
    g = tiny(seed=3)
    check_golden("conv_relu_conv", g, bias_correct(g, data(g, n=16)))


# ---- the clamped-Gaussian mean ------------------------------------------------------------------
@pytest.mark.parametrize("lo,hi", [(0.0, np.inf), (0.0, 6.0), (-1.0, 1.0), (-np.inf, np.inf), (-np.inf, 0.5)])
def test_clamped_gaussian_mean_matches_monte_carlo(lo, hi):
    m, d = np.array([0.5, -1.0, 2.0, 5.5]), np.array([1.0, 2.0, 0.5, 1.5])
    z = np.random.default_rng(0).normal(size=(400_000, 1)) * d + m
    np.testing.assert_allclose(clamped_gaussian_mean(m, d, lo, hi), np.clip(z, lo, hi).mean(axis=0), atol=1e-2)


def test_clamped_gaussian_mean_of_a_point_mass_is_the_clamped_point():
    np.testing.assert_array_equal(clamped_gaussian_mean([-1.0, 3.0, 9.0], 0.0, 0.0, 6.0), [0.0, 3.0, 6.0])
