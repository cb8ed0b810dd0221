# SPDX-License-Identifier: Apache-2.0
"""canonicalize: every rule keeps the float function, fires where it should and nowhere else."""
from __future__ import annotations

import numpy as np
import pytest

from golden_text import check_golden_text, golden_text
from dyadiq.errors import PassError
from dyadiq.interp import run
from dyadiq.ir import GraphBuilder, QuantType, verify
from dyadiq.ir.graph import Node
from dyadiq.passes import canonicalize as canon_mod
from dyadiq.passes.canonicalize import canonicalize

RNG = np.random.default_rng(0)


def check_golden(name: str, before, after) -> None:
    """Compare with tests/golden/canonicalize/<name>.dq; rewrite it when DYADIQ_UPDATE_GOLDEN=1."""
    check_golden_text("canonicalize", name, golden_text("canonicalize", before, after))


def rand(*shape, lo=None, hi=None, rng=None):
    rng = rng or RNG
    a = rng.uniform(lo, hi, shape) if lo is not None else rng.normal(size=shape)
    return a.astype(np.float32)


def assert_same_function(g, out, atol=1e-5):
    verify(out)
    xs = [rand(*g.type_of(i).shape) for i in g.inputs]
    ref, got = run(g, xs), run(out, xs)
    for r, o in zip(ref if isinstance(ref, list) else [ref], got if isinstance(got, list) else [got]):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=atol)


def bn(b, x, c, name="bn", rng=None):
    ps = [b.const(f"{name}.{k}", a) for k, a in
          (("gamma", rand(c, lo=0.5, hi=1.5, rng=rng)), ("beta", rand(c, rng=rng)), ("mean", rand(c, rng=rng)),
           ("var", rand(c, lo=0.5, hi=2, rng=rng)))]
    return b.op("batchnorm", [x, *ps], name=name, eps=1e-3)


def conv_bn(bias: bool, extra_reader: bool = False):
    b = GraphBuilder()
    x = b.input("x", (2, 3, 8, 8))
    ins = [x, b.const("conv.weight", rand(4, 3, 3, 3))] + ([b.const("conv.bias", rand(4))] if bias else [])
    c = b.op("conv2d", ins, name="conv", pad=(1, 1, 1, 1))
    y = b.op("relu", [bn(b, c, 4)], name="y")
    return b.build([y, b.op("neg", [c], name="z")] if extra_reader else [y])


# ---- batch norm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_batchnorm_folds_into_conv_and_keeps_names(bias):
    g = conv_bn(bias)
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 1, "relu": 1}
    conv = out.node("bn")                                     # the fused conv is named like the bn output
    assert conv.inputs[:2] == ("x", "conv.weight") and conv.inputs[2] == "conv.bias"
    assert out.outputs == ("y",)
    assert_same_function(g, out)


def test_batchnorm_folds_into_linear():
    b = GraphBuilder()
    x = b.input("x", (3, 5))
    y = bn(b, b.op("linear", [x, b.const("fc.weight", rand(6, 5))], name="fc"), 6)
    g = b.build([y])
    out = canonicalize(g)
    assert out.count_ops() == {"linear": 1}
    assert_same_function(g, out)


def test_batchnorm_whose_conv_has_another_reader_becomes_a_depthwise_conv():
    g = conv_bn(bias=True, extra_reader=True)
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 2, "relu": 1, "neg": 1}
    assert out.node("bn").attr("groups") == 4 and out.type_of(out.node("bn").inputs[1]).shape == (4, 1, 1, 1)
    assert_same_function(g, out)


def test_batchnorm_on_a_graph_input_becomes_a_depthwise_conv_and_off_nchw_mul_add():
    b = GraphBuilder()
    g = b.build([bn(b, b.input("x", (2, 4, 3, 3)), 4)])
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 1} and out.outputs == ("bn",)
    assert_same_function(g, out)
    b = GraphBuilder()
    g = b.build([bn(b, b.input("x", (2, 4, 3)), 4)])
    out = canonicalize(g)
    assert out.count_ops() == {"mul": 1, "add": 1} and out.outputs == ("bn",)
    assert_same_function(g, out)


# ---- small rules ----------------------------------------------------------------------------------
def test_constant_subgraphs_fold_through_the_registry_kernels():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    w = b.op("mul", [b.const("w", rand(2, 3, 1, 1)), b.const("two", np.float32([2.0]))], name="w2")
    w = b.op("transpose", [b.op("transpose", [w], name="t", perm=(1, 0, 2, 3))], name="wt", perm=(1, 0, 2, 3))
    g = b.build([b.op("conv2d", [x, w], name="y")])
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 1} and out.is_const("wt")
    np.testing.assert_array_equal(out.const("wt"), g.const("w") * 2)
    assert_same_function(g, out)


def test_identity_is_removed_and_a_graph_output_keeps_its_name():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    r = b.op("relu", [b.op("identity", [x], name="i0")], name="r")
    g = b.build([b.op("identity", [r], name="out")])
    out = canonicalize(g)
    assert [(n.op, n.inputs, n.outputs) for n in out.nodes] == [("relu", ("x",), ("out",))]
    assert_same_function(g, out)


def test_identity_between_input_and_output_stays():
    b = GraphBuilder()
    g = b.build([b.op("identity", [b.input("x", (2, 3))], name="y")])
    assert canonicalize(g) is g


@pytest.mark.parametrize("order", ["x*sigmoid(x)", "sigmoid(x)*x"])
def test_silu_is_fused_in_either_operand_order(order):
    b = GraphBuilder()
    x = b.input("x", (2, 8))
    s = b.op("sigmoid", [x], name="s")
    g = b.build([b.op("mul", [x, s] if order.startswith("x") else [s, x], name="y")])
    out = canonicalize(g)
    assert [(n.op, n.inputs, n.outputs) for n in out.nodes] == [("silu", ("x",), ("y",))]
    assert_same_function(g, out)


def test_silu_is_not_fused_when_the_sigmoid_has_another_reader():
    b = GraphBuilder()
    x = b.input("x", (2, 8))
    s = b.op("sigmoid", [x], name="s")
    g = b.build([b.op("mul", [x, s], name="y"), s])
    assert canonicalize(g) is g


@pytest.mark.parametrize("op,const,first", [("mul", 1.0, True), ("mul", 1.0, False), ("div", 1.0, False),
                                            ("add", 0.0, True), ("add", 0.0, False), ("sub", 0.0, False)])
def test_neutral_constants_are_removed(op, const, first):
    b = GraphBuilder()
    x = b.op("relu", [b.input("x", (2, 4))], name="r")
    c = b.const("c", np.full((4,), const, np.float32))
    g = b.build([b.op(op, [c, x] if first else [x, c], name="y")])
    out = canonicalize(g)
    assert out.count_ops() == {"relu": 1} and out.outputs == ("y",)
    assert_same_function(g, out)


def test_a_neutral_constant_that_broadcasts_x_up_is_kept():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    g = b.build([b.op("mul", [x, b.const("ones", np.ones((3, 4), np.float32))], name="y")])
    assert canonicalize(g) is g


def test_div_and_sub_by_constants_become_mul_and_add():
    b = GraphBuilder()
    x = b.input("x", (2, 4))
    d = b.op("div", [x, b.const("k", rand(4, lo=1, hi=2))], name="d")
    g = b.build([b.op("sub", [d, b.const("m", rand(4))], name="y")])
    out = canonicalize(g)
    assert out.count_ops() == {"mul": 1, "add": 1}
    assert_same_function(g, out)


@pytest.mark.parametrize("producer", ["linear", "matmul"])
@pytest.mark.parametrize("shape", [(6,), (1, 6), (1, 1, 6), (1,)])
def test_bias_vector_add_after_linear_or_matmul_becomes_a_linear_bias(producer, shape):
    b = GraphBuilder()
    x = b.input("x", (2, 3, 5))
    w = b.const("w", rand(6, 5) if producer == "linear" else rand(5, 6))
    l_ = b.op(producer, [x, w], name="l")
    g = b.build([b.op("add", [b.const("c", rand(*shape)), l_], name="y")])
    out = canonicalize(g)
    assert [(n.op, len(n.inputs)) for n in out.nodes] == [("linear", 3)] and out.outputs == ("y",)
    assert_same_function(g, out)


def test_an_add_that_is_not_a_bias_is_kept():
    b = GraphBuilder()
    x = b.input("x", (2, 5))
    l_ = b.op("linear", [x, b.const("w", rand(6, 5))], name="l")
    g = b.build([b.op("add", [l_, b.const("c", rand(2, 6))], name="y")])
    assert canonicalize(g) is g


def test_per_channel_scale_and_shift_fold_into_conv():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 5, 5))
    c = b.op("conv2d", [x, b.const("w", rand(4, 3, 3, 3))], name="c")
    m = b.op("mul", [c, b.const("s", rand(4, 1, 1))], name="m")
    g = b.build([b.op("add", [m, b.const("t", rand(1, 4, 1, 1))], name="y")])
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 1} and out.node("y").op == "conv2d"
    assert_same_function(g, out)


def test_zero_padding_folds_into_the_conv():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 6))
    p = b.op("pad", [x], name="p", pads=(0, 0, 0, 1, 0, 0, 2, 1), value=0.0)
    g = b.build([b.op("conv2d", [p, b.const("w", rand(4, 3, 3, 3))], name="y", stride=(2, 2))])
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 1} and out.node("y").attr("pad") == (0, 1, 2, 1)
    assert_same_function(g, out)


def test_quantized_values_and_weights_are_left_alone():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 8, 8))
    q = QuantType.make(8, True, 0.05, 0)
    c = b.op("conv2d", [x, b.const("w", rand(4, 3, 3, 3), quant=QuantType.make(8, True, 0.01, 0))], name="c")
    y = b.op("identity", [bn(b, c, 4)], name="y", quant=q)
    g = b.build([b.op("relu", [y], name="out")])
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 2, "identity": 1, "relu": 1}    # the bn: its own depthwise layer
    assert out.is_const("w") and out.quant_of("w") is not None
    np.testing.assert_array_equal(out.const("w"), g.const("w"))      # quantized weight not refolded
    assert out.quant_of("y") == q                                    # the quantized identity output stays
    assert_same_function(g, out)


# ---- driver -------------------------------------------------------------------------------------
def test_nothing_to_do_returns_the_same_object_and_is_idempotent():
    g = conv_bn(bias=True)
    out = canonicalize(g)
    assert canonicalize(out) is out


def test_dead_nodes_are_dropped():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    b.op("exp", [x], name="dead")
    g = b.build([b.op("relu", [x], name="y")])
    assert canonicalize(g).count_ops() == {"relu": 1}


def test_a_rule_that_never_settles_hits_the_sweep_cap(monkeypatch):
    def ping_pong(g, n, ctx):                        # add(a, b) -> add(b, a), forever
        if n.op != "add":
            return None
        from dyadiq.passes.rewrite import splice
        return splice(g, {n.name: [Node(n.op, n.inputs[::-1], n.outputs, n.attrs)]})

    monkeypatch.setattr(canon_mod, "RULES", [("ping-pong", ping_pong)])
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    g = b.build([b.op("add", [x, b.op("relu", [x])], name="y")])
    with pytest.raises(PassError, match="ping-pong"):
        canonicalize(g, max_sweeps=4)


def test_golden_conv_bn_silu_block():
    rng = np.random.default_rng(7)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w = b.op("mul", [b.const("conv.weight", rand(4, 3, 3, 3, rng=rng)), b.const("half", np.float32([0.5]))],
             name="w")
    c = b.op("conv2d", [b.op("identity", [x], name="xi"), w], name="conv", pad=(1, 1, 1, 1))
    y = bn(b, c, 4, rng=rng)
    s = b.op("mul", [b.op("sigmoid", [y], name="sig"), y], name="act")
    f = b.op("reshape", [b.op("global_avgpool", [s], name="gap")], name="flat", shape=(1, 4))
    m = b.op("matmul", [f, b.const("fc.w", rand(4, 10, rng=rng))], name="mm")
    g = b.build([b.op("sub", [m, b.const("fc.b", rand(10, rng=rng))], name="logits")])
    out = canonicalize(g)
    assert out.count_ops() == {"conv2d": 1, "silu": 1, "global_avgpool": 1, "reshape": 1, "linear": 1}
    assert_same_function(g, out)
    check_golden("conv_bn_silu_head", g, out)


# ---- real blocks through the torch frontend -------------------------------------------------------
@pytest.mark.parametrize("block", ["residual_block", "mbv2_block", "mlp", "pool_concat_cnn", "transformer_layer"])
def test_zoo_blocks_lose_their_batchnorms_and_keep_their_function(block):
    pytest.importorskip("torch")
    from dyadiq.frontend import torch_export
    from dyadiq.zoo.blocks import BLOCKS

    model, x = BLOCKS[block]()
    g = torch_export.from_torch(model, x)
    out = canonicalize(g)
    assert "batchnorm" not in out.count_ops() and "identity" not in out.count_ops()
    ref = model(x).detach().numpy()
    np.testing.assert_allclose(run(out, x.numpy()), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("alpha,fused", [(1 / 6, True), (0.2, False)])
def test_x_times_hardsigmoid_of_x_is_hardswish_only_with_its_own_constants(alpha, fused):
    """Opset < 14 exporters write hard-swish as x * HardSigmoid(x, 1/6, 1/2): one op, one table after
    integerize; the ONNX default alpha 0.2 is another function and stays."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 5, 5))
    h = b.op("hardsigmoid", [x], alpha=alpha, beta=0.5)
    g = b.build([b.op("mul", [h, x])])
    out = canonicalize(g)
    assert [n.op for n in out.nodes] == (["hardswish"] if fused else ["hardsigmoid", "mul"])
    xv = np.random.default_rng(0).uniform(-5, 5, size=(1, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(out, [xv]), run(g, [xv]), rtol=1e-6, atol=1e-6)


def test_a_conv1d_batchnorm_from_torch_export_folds_through_its_reshape():
    """torch.export gives Conv1d as conv2d on [N, C, 1, L] and a reshape to [N, C, L] before BatchNorm1d's
    mul and add: both move before the reshape and fold into the conv (one quantization point, not three)."""
    import torch

    import dyadiq
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv1d(2, 8, 9, stride=4), torch.nn.BatchNorm1d(8), torch.nn.ReLU()).eval()
    m[1].running_mean.uniform_(-1, 1)
    m[1].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 2, 120)
    g = dyadiq.from_torch(m, (x,))
    c = verify(canonicalize(g))
    assert [n.op for n in c.nodes] == ["reshape", "conv2d", "reshape", "relu"]
    np.testing.assert_allclose(run(c, x.numpy()), m(x).detach().numpy(), rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("uniform", [True, False])
def test_a_gather_from_a_uniform_constant_table_becomes_a_constant(uniform):
    """RoBERTa gathers its all-zero token_type_ids at run-time position ids: the result is known; a table of
    different values keeps its gather."""
    b = GraphBuilder("g")
    ids, h = b.input("ids", (2, 5), "i64"), b.input("h", (2, 5, 4))
    table = np.zeros(64, np.int64) if uniform else np.arange(64, dtype=np.int64) % 3
    tt = b.op("gather", [b.const("tt", table), ids], "tt_ids", axis=0)
    emb = b.op("gather", [b.const("rows", rand(3, 4)), tt], "emb", axis=0)
    g = b.build([b.op("add", [h, emb], "y")])
    out = canonicalize(g)
    assert any(n.op == "gather" for n in out.nodes) != uniform
    feeds = {"ids": np.random.default_rng(0).integers(0, 64, (2, 5)), "h": rand(2, 5, 4)}
    np.testing.assert_array_equal(run(out, feeds), run(g, feeds))
