# SPDX-License-Identifier: Apache-2.0
"""Activation QuantType placement follows docs/numerics.md (fused, inherited, shared-concat, clamped)."""
import numpy as np
import pytest

from dyadiq.errors import PassError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.numerics import quantize
from dyadiq.ir.types import QuantType
from dyadiq.passes.annotate_quant import act_quant, annotate_activations, check_contract
from dyadiq.passes.calibrate import collect_ranges
from dyadiq.passes.quantize_weights import quantize_weights

RNG = np.random.default_rng(0)


def w(*shape):
    return (RNG.normal(size=shape) * 0.3).astype(np.float32)


def cnn():
    """x -> conv -> relu -> maxpool -> reshape -> linear -> (graph output)."""
    b = GraphBuilder()
    x = b.input("x", (2, 3, 8, 8))
    c = b.op("conv2d", [x, b.const("w1", w(4, 3, 3, 3)), b.const("b1", w(4))], "conv", pad=(1, 1, 1, 1))
    r = b.op("relu", [c], "relu")
    p = b.op("maxpool", [r], "pool", kernel=(2, 2), stride=(2, 2))
    f = b.op("reshape", [p], "flat", shape=(2, 64))
    return b.build([b.op("linear", [f, b.const("w2", w(10, 64)), b.const("b2", w(10))], "logits")])


def annotate(g, n=8):
    x = RNG.normal(size=(n,) + g.type_of(g.inputs[0]).shape[1:]).astype(np.float32)
    return annotate_activations(g, collect_ranges(g, x)), x


def test_act_quant_follows_the_contract_formula():
    q = act_quant(-1.0, 3.0)
    assert q.bits == 8 and q.signed and q.axis is None
    assert q.scale[0] == np.float32(4.0 / 255)
    assert q.zero_point[0] == -128 - round(-1.0 / q.scale[0])
    assert quantize(np.zeros(1), q)[0] == q.zero_point[0]            # 0 is exactly representable
    assert act_quant(2.0, 5.0) == act_quant(0.0, 5.0)                 # ranges are widened to contain 0
    assert act_quant(-5.0, -2.0).zero_point[0] == 127
    assert act_quant(0.0, 0.0).scale[0] > 0                           # constant zero still gets a scale


def test_placement_fuses_conv_relu_and_data_movement_inherits():
    q, _ = annotate(cnn())
    assert q.quant_of("x") is not None
    assert q.quant_of("conv") is None                                 # fused: only consumer is relu
    assert q.quant_of("relu").zero_point[0] == -128                   # relu output starts at 0
    assert q.quant_of("pool") == q.quant_of("relu") == q.quant_of("flat")
    assert q.quant_of("logits") is not None                           # graph output
    for c in ("w1", "b1", "w2", "b2"):
        assert q.quant_of(c) is None                                  # weights are quantize_weights' job
    lines = {ln.split(" = ")[0].strip(): ln for ln in str(q).splitlines() if " = " in ln}   # printed IR
    assert lines["%conv"].endswith(": f32[2,4,8,8]")                  # CHECK: no q= on the fused conv
    qs = [lines[v].rsplit(" q=", 1)[1] for v in ("%relu", "%pool", "%flat")]
    assert qs[0] == qs[1] == qs[2] and qs[0].endswith("z=-128)")
    assert check_contract(quantize_weights(q)) == []


def test_no_fusion_when_the_layer_output_has_other_readers_or_is_an_output():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    h = b.op("linear", [x, b.const("w", w(4, 4))], "h")
    r = b.op("relu", [h], "r")
    s = b.op("add", [r, h], "s")                     # h is read twice
    m = b.op("matmul", [s, b.const("wm", w(4, 4))], "m")
    c = b.op("clip", [m], "c", min=0.0, max=6.0)
    g = b.build([c, m])                              # m is a graph output
    q, _ = annotate(g)
    assert q.quant_of("h") is not None and q.quant_of("m") is not None


def test_relu_and_clip_ranges_never_exceed_their_bounds():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    r = b.op("relu", [x], "r")
    c = b.op("clip", [x], "c", min=-1.0, max=6.0)
    g = b.build([r, c])
    ranges = {"x": (-9.0, 9.0), "r": (-2.0, 7.0), "c": (-3.0, 7.5)}
    q = annotate_activations(g, ranges)
    assert q.quant_of("r") == act_quant(0.0, 7.0)
    assert q.quant_of("c") == act_quant(-1.0, 6.0)


def concat_graph(extra_reader=False, pooled=False):
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4, 4))
    a = b.op("relu", [b.op("conv2d", [x, b.const("wa", w(3, 2, 1, 1))], "ca")], "a")
    c = b.op("relu", [b.op("conv2d", [x, b.const("wc", w(3, 2, 1, 1))], "cc")], "c")
    if pooled:
        c = b.op("maxpool", [c], "cp", kernel=(1, 1))
    cat = b.op("concat", [a, c], "cat", axis=1)
    outs = [cat] + ([b.op("sigmoid", [a], "other")] if extra_reader else [])
    return b.build(outs)


def test_concat_shares_one_quant_type_over_the_union_range():
    g = concat_graph()
    ranges = {"x": (-1.0, 1.0), "ca": (-1, 1), "a": (0.0, 2.0), "cc": (-1, 1), "c": (0.0, 5.0), "cat": (0.0, 5.0)}
    q = annotate_activations(g, ranges)
    assert q.quant_of("a") == q.quant_of("c") == q.quant_of("cat") == act_quant(0.0, 5.0)


@pytest.mark.parametrize("variant", [dict(extra_reader=True), dict(pooled=True)])
def test_concat_keeps_own_quant_types_when_an_input_cannot_change(variant):
    g = concat_graph(**variant)
    ranges = {"x": (-1.0, 1.0), "ca": (-1, 1), "a": (0.0, 2.0), "cc": (-1, 1), "c": (0.0, 5.0), "cp": (0.0, 5.0),
              "cat": (0.0, 5.0), "other": (0.5, 0.9)}
    q = annotate_activations(g, ranges)
    assert q.quant_of("a") == act_quant(0.0, 2.0)
    assert q.quant_of("cat") is not None


@pytest.mark.parametrize("value, mode, inherits", [(0.0, "constant", True), (1.0, "constant", False),
                                                   (0.0, "reflect", True)])
def test_pad_inherits_only_when_the_padding_is_zero_or_copied(value, mode, inherits):
    b = GraphBuilder()
    x = b.input("x", (1, 1, 4, 4))
    y = b.op("pad", [b.op("sigmoid", [x], "s")], "p", pads=(0, 0, 1, 1, 0, 0, 1, 1), mode=mode, value=value)
    q, _ = annotate(b.build([y]))
    assert (q.quant_of("p") == q.quant_of("s")) is inherits


def test_existing_quant_types_are_kept_and_a_second_run_changes_nothing():
    g = cnn()
    mine = QuantType.make(8, True, 0.01, 5)
    g = g.with_quant("x", mine)
    q, _ = annotate(g)
    assert q.quant_of("x") == mine
    assert annotate_activations(q, {}) is q


def test_simulated_run_of_an_annotated_graph_is_close_to_float():
    g = cnn()
    q, x = annotate(g, 16)
    q = quantize_weights(q)
    f, s = run(g, x[:2]), run(q, x[:2], "simulated")
    assert np.abs(f - s).max() < 0.05 * np.abs(f).max()


def test_missing_range_or_bad_bits_are_pass_errors():
    g = cnn()
    with pytest.raises(PassError, match="no calibration range for value %x"):
        annotate_activations(g, {})
    with pytest.raises(PassError, match="activation bits must be 2..16, got 1"):
        annotate_activations(g, {}, bits=1)


def test_check_contract_names_what_is_missing():
    g = cnn()
    bad = check_contract(g)
    assert any("graph input/output %x" in m for m in bad)
    assert any("[%conv conv2d] weight %w1 is not a quantized constant" in m for m in bad)
    assert any("output %relu has no QuantType" in m for m in bad)


def test_a_vanishing_activation_is_named_in_the_refusal():
    """A float model whose activations decay to ~1e-45 (a badly initialized network) cannot get a float32
    scale there: the error names the value."""
    b = GraphBuilder("g")
    x = b.input("x", (1, 4))
    g = b.build([b.op("relu", [x], "tiny")])
    with pytest.raises(PassError, match=r"activation %tiny: range .* too narrow"):
        annotate_activations(g, {"x": (-1.0, 1.0), "tiny": (-1.4e-45, 1.4e-45)})
