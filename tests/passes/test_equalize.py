# SPDX-License-Identifier: Apache-2.0
"""equalize: cross-layer equalization keeps the float function, evens out weight ranges, never inflates
an activation channel when clamped, rewrites ReLU6 into an exact per-channel clamp, absorbs high biases."""
from __future__ import annotations

import numpy as np
import pytest

from golden_text import check_golden_text, golden_text
from dyadiq.interp import run, run_all
from dyadiq.ir import GraphBuilder, QuantType, print_text, verify
from dyadiq.passes.equalize import equalize



def check_golden(name: str, before, after) -> None:
    """Compare with tests/golden/equalize/<name>.dq; rewrite it when DYADIQ_UPDATE_GOLDEN=1."""
    check_golden_text("equalize", name, golden_text("equalize", before, after))


def unbalanced(rng, *shape):
    """Random weights whose output channels span e^-2 .. e^2 in range."""
    w = rng.normal(size=shape) * np.exp(rng.uniform(-2, 2, (shape[0],) + (1,) * (len(shape) - 1)))
    return w.astype(np.float32)


def conv(b, rng, x, cin, cout, k=3, name="conv", groups=1, bias=True):
    ins = [x, b.const(f"{name}.weight", unbalanced(rng, cout, cin // groups, k, k))]
    ins += [b.const(f"{name}.bias", rng.normal(size=cout).astype(np.float32))] if bias else []
    return b.op("conv2d", ins, name=name, pad=(k // 2,) * 4, groups=groups)


def relu_chain(seed=0):
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", (2, 3, 8, 8))
    h = b.op("relu", [conv(b, rng, x, 3, 8, name="conv1")], name="act")
    return b.build([conv(b, rng, h, 8, 4, name="conv2")])


def relu6_chain(seed=0, c=8):
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", (2, 3, 6, 6))
    h = b.op("clip", [conv(b, rng, x, 3, c, name="conv1")], name="act", min=0.0, max=6.0)
    return b.build([conv(b, rng, h, c, 4, name="conv2", bias=False)])


def hardtanh_chain(seed=0):
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", (2, 3, 6, 6))
    h = b.op("clip", [conv(b, rng, x, 3, 8, name="conv1")], name="act", min=-1.0, max=1.0)
    return b.build([conv(b, rng, h, 8, 4, name="conv2")])


def mbv2(seed=0):
    """1x1 expand -> ReLU6 -> 3x3 depthwise -> ReLU6 -> 1x1 project -> + x."""
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", (2, 4, 6, 6))
    h = b.op("clip", [conv(b, rng, x, 4, 12, k=1, name="expand")], name="act1", min=0.0, max=6.0)
    h = b.op("clip", [conv(b, rng, h, 12, 12, name="dw", groups=12)], name="act2", min=0.0, max=6.0)
    return b.build([b.op("add", [conv(b, rng, h, 12, 4, k=1, name="project"), x], name="y")])


def mlp(seed=0, shape=(4, 16)):
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", shape)
    h = b.op("linear", [x, b.const("fc1.weight", unbalanced(rng, 32, 16)),
                        b.const("fc1.bias", rng.normal(size=32).astype(np.float32))], name="fc1")
    h = b.op("relu", [h], name="act")
    return b.build([b.op("linear", [h, b.const("fc2.weight", unbalanced(rng, 8, 32))], name="fc2")])


def residual(seed=0):
    """conv -> relu -> conv -> + x -> relu: only the first pair may be scaled."""
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", (2, 8, 6, 6))
    h = b.op("relu", [conv(b, rng, x, 8, 8, name="conv1")], name="act")
    y = b.op("add", [conv(b, rng, h, 8, 8, name="conv2"), x], name="sum")
    return b.build([b.op("relu", [y], name="y")])


def grouped(seed=0):
    """conv -> depthwise with channel multiplier 2 -> grouped conv (3 groups) -> conv, all with relu."""
    rng, b = np.random.default_rng(seed), GraphBuilder()
    x = b.input("x", (2, 4, 6, 6))
    h = b.op("relu", [conv(b, rng, x, 4, 6, name="c1")], name="a1")
    h = b.op("relu", [conv(b, rng, h, 6, 12, name="dw", groups=6)], name="a2")
    h = b.op("relu", [conv(b, rng, h, 12, 9, k=1, name="gc", groups=3)], name="a3")
    return b.build([conv(b, rng, h, 9, 5, k=1, name="c4")])


GRAPHS = {"relu": relu_chain, "grouped": grouped, "relu6": relu6_chain, "hardtanh": hardtanh_chain, "depthwise": mbv2,
          "linear": mlp, "linear-rank3": lambda: mlp(shape=(2, 3, 16)), "residual": residual}


def inputs(g, seed=1, n=4, scale=3.0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=g.type_of(g.inputs[0]).shape) * scale).astype(np.float32) for _ in range(n)]


def max_rel_error(g, out, xs):
    return max(float(np.abs(run(out, x) - run(g, x)).max() / np.abs(run(g, x)).max()) for x in xs)


def channel_max(g, name, xs):
    """Per-channel max |value| of ``name`` over the samples (channels: axis 1 of 4-D, else the last)."""
    vals = np.stack([run_all(g, x)[name] for x in xs])
    axis = 2 if vals.ndim == 5 else vals.ndim - 1
    return np.abs(np.moveaxis(vals, axis, 0)).reshape(vals.shape[axis], -1).max(axis=1)


# ---- the float function is kept -----------------------------------------------------------------
@pytest.mark.parametrize("clamp", [True, False])
@pytest.mark.parametrize("kind", list(GRAPHS))
def test_equalization_keeps_the_float_function(kind, clamp):
    g = GRAPHS[kind]()
    out = equalize(g, clamp_scales=clamp)
    assert out is not g
    verify(out)
    assert out.outputs == g.outputs
    assert max_rel_error(g, out, inputs(g)) <= 1e-5


def test_relu6_becomes_relu_then_a_per_channel_minimum():
    g = relu6_chain()
    out = equalize(g)
    assert out.count_ops() == {"conv2d": 2, "relu": 1, "minimum": 1}
    m = out.node("act")                                        # the chain's last value keeps its name
    bound = out.const(m.inputs[1])
    assert m.op == "minimum" and bound.shape == (8, 1, 1)
    assert np.all(bound <= 6.0) and np.any(bound < 6.0)        # clamped scales only shrink the bound
    x = inputs(g, scale=10.0)                                  # saturate the clip: still exact
    assert max_rel_error(g, out, x) <= 1e-5
    assert np.mean(run_all(g, x[0])["act"] == 6.0) > 0.1


def test_a_clip_with_a_negative_floor_gets_per_channel_maximum_and_minimum():
    out = equalize(hardtanh_chain(), clamp_scales=False)
    assert out.count_ops() == {"conv2d": 2, "maximum": 1, "minimum": 1}


def test_residual_side_is_not_scaled():
    g = residual()
    out = equalize(g, clamp_scales=False)
    xs = inputs(g)
    for x in xs:                                               # conv2 feeds the add: its output is unchanged
        ref = run_all(g, x)["conv2"]
        np.testing.assert_allclose(run_all(out, x)["conv2"], ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert not np.allclose(out.const("conv1.weight"), g.const("conv1.weight"))


# ---- what equalization is for -------------------------------------------------------------------
def ranges(w):
    return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)


@pytest.mark.parametrize("clamp", [True, False])
def test_channel_ranges_become_more_uniform(clamp):
    g = relu_chain()
    out = equalize(g, clamp_scales=clamp)
    before, after = ranges(g.const("conv1.weight")), ranges(out.const("conv1.weight"))
    assert after.max() / after.min() < (0.9 if clamp else 0.5) * before.max() / before.min()
    if clamp:                                                  # s >= 1: rows of conv1 only shrink
        assert np.all(after <= before * (1 + 1e-6))
    else:                                                      # one pair: r1 = r2 = sqrt(r1 r2) exactly
        w2 = np.abs(out.const("conv2.weight")).max(axis=(0, 2, 3))
        np.testing.assert_allclose(after, w2, rtol=1e-5)


@pytest.mark.parametrize("kind", ["relu", "relu6", "depthwise", "linear", "residual"])
def test_clamped_scales_never_grow_an_activation_channel(kind):
    g = GRAPHS[kind]()
    xs = inputs(g)
    shared = [n.name for n in g.nodes if n.name in equalize(g).values and n.name not in g.outputs]
    out = equalize(g)
    for name in shared:
        assert np.all(channel_max(out, name, xs) <= channel_max(g, name, xs) * (1 + 1e-6) + 1e-6), name
    free = equalize(g, clamp_scales=False)
    assert any(np.any(channel_max(free, n, xs) > channel_max(g, n, xs) * 1.01) for n in shared)


# ---- high-bias absorption -----------------------------------------------------------------------
def high_bias_mlp():
    rng, b = np.random.default_rng(3), GraphBuilder()
    x = b.input("x", (4, 16))
    w1 = (rng.normal(size=(32, 16)) * 0.1).astype(np.float32)
    b1 = rng.uniform(2, 5, 32).astype(np.float32)
    h = b.op("relu", [b.op("linear", [x, b.const("fc1.weight", w1), b.const("fc1.bias", b1)], name="fc1")],
             name="act")
    g = b.build([b.op("linear", [h, b.const("fc2.weight", unbalanced(rng, 8, 32))], name="fc2")])
    # inputs lie in [-1, 1], so fc1's output never drops below mean - 3 std with std = sum|w| / 3
    return g, {"fc1": (b1, np.abs(w1).sum(axis=1) / 3)}


def test_high_bias_is_absorbed_into_the_next_layer_exactly_when_stats_allow():
    g, stats = high_bias_mlp()
    out = equalize(g, act_stats=stats)
    assert np.all(out.const("fc1.bias") < g.const("fc1.bias"))
    assert out.node("fc2").inputs[2:] != ()                    # fc2 got a bias to hold the absorbed part
    xs = [np.random.default_rng(k).uniform(-1, 1, (4, 16)).astype(np.float32) for k in range(4)]
    assert max_rel_error(g, out, xs) <= 1e-5
    assert channel_max(out, "act", xs).max() < 0.5 * channel_max(g, "act", xs).max()


def test_no_absorption_without_stats_or_when_disabled():
    g, stats = high_bias_mlp()
    plain = equalize(g)
    assert print_text(equalize(g, act_stats=stats, absorb_bias=False)) == print_text(plain)
    assert "fc1.bias" in plain.constants and len(plain.node("fc2").inputs) == 2


# ---- where nothing may happen -------------------------------------------------------------------
def test_no_pair_returns_the_same_object():
    rng, b = np.random.default_rng(0), GraphBuilder()
    x = b.input("x", (1, 3, 6, 6))
    c1 = conv(b, rng, x, 3, 8, name="c1")
    g = b.build([conv(b, rng, b.op("sigmoid", [c1]), 8, 4, name="c2")])      # sigmoid is not homogeneous
    assert equalize(g) is g


def test_quantized_weights_or_a_shared_intermediate_block_the_pair():
    g = relu_chain()
    q = QuantType.make(8, True, 0.1, 0)
    gq = g.with_quant("conv2.weight", q)
    assert equalize(gq) is gq
    gs = g.replace(outputs=g.outputs + ("act",))                 # the activation is also a graph output
    assert equalize(gs) is gs


def test_equalize_is_idempotent_once_converged():
    for make in (relu_chain, relu6_chain, mbv2):
        out = equalize(make())
        assert equalize(out) is out


def test_golden_relu6_pair():
    g = relu6_chain(seed=5, c=4)
    check_golden("conv_relu6_conv", g, equalize(g))


def test_mbv2_block_from_torch_keeps_its_function_and_relu6_bounds():
    pytest.importorskip("torch")
    from dyadiq.frontend import torch_export
    from dyadiq.passes.canonicalize import canonicalize
    from dyadiq.zoo.blocks import mbv2_block

    model, x = mbv2_block()
    g = canonicalize(torch_export.from_torch(model, x))
    out = equalize(g)
    assert out.count_ops()["minimum"] == 2
    ref = model(x).detach().numpy()
    assert np.abs(run(out, x.numpy()) - ref).max() <= 1e-5 * np.abs(ref).max()
    for n in out.nodes:
        if n.op == "minimum":
            assert np.all(out.const(n.inputs[1]) <= 6.0)
