# SPDX-License-Identifier: Apache-2.0
"""rewrite: the graph-editing helpers passes build on never mutate, keep names, types and QuantTypes."""
from __future__ import annotations

import numpy as np
import pytest

from dyadiq.errors import PassError
from dyadiq.ir import GraphBuilder, QuantType, verify
from dyadiq.ir.graph import Node
from dyadiq.passes.rewrite import bias_hint, bypass, dce, fresh_name, rename, splice, toposort, use_counts

Q = QuantType.make(8, True, 0.1, 3)


def chain():
    """x -> relu (quantized) -> neg -> y, plus constant c read by an add."""
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    r = b.op("relu", [x], name="r", quant=Q)
    n = b.op("neg", [r], name="n")
    return b.build([b.op("add", [n, b.const("c", np.ones(3, np.float32))], name="y")])


def test_splice_replaces_in_place_and_keeps_the_quant_of_a_reused_name():
    g = chain()
    out = splice(g, {"r": [Node.make("abs", ["x"], "t"), Node.make("relu", ["t"], "r")]})
    verify(out)
    assert [n.name for n in out.nodes] == ["t", "r", "n", "y"]
    assert out.quant_of("r") == Q and out.quant_of("t") is None
    assert g.node("r").op == "relu" and "t" not in g.values            # the input graph is untouched


def test_splice_sets_constants_redirects_uses_and_drops_dead_code():
    g = chain()
    out = splice(g, {"y": [Node.make("mul", ["r", "k"], "y")]}, constants={"k": np.float32([2.0])})
    assert [n.op for n in out.nodes] == ["relu", "mul"] and "c" not in out.constants
    out2 = splice(g, redirect={"n": "r"})
    assert out2.node("y").inputs == ("r", "c") and "n" not in out2.values


def test_splice_re_sorts_when_a_new_node_reads_a_later_value():
    g = chain()
    out = splice(g, {"r": [Node.make("relu", ["n2"], "r")], "n": [Node.make("neg", ["x"], "n2"),
                                                                 Node.make("neg", ["r"], "n")]})
    verify(out)
    assert [n.name for n in out.nodes] == ["n2", "r", "n", "y"]


def test_splice_refuses_type_changes_duplicates_and_cycles():
    g = chain()
    with pytest.raises(PassError, match="change type"):
        splice(g, {"r": [Node.make("reduce_sum", ["x"], "r", axes=(0,))]})
    with pytest.raises(PassError, match="defined twice"):
        splice(g, {"r": [Node.make("relu", ["x"], "n")]})
    with pytest.raises(PassError, match="cycle"):
        splice(g, {"r": [Node.make("relu", ["n"], "r")]})


def test_bypass_keeps_graph_output_names():
    g = chain()
    inner = bypass(g, g.node("n"), "r")
    assert inner.node("y").inputs == ("r", "c")
    b = GraphBuilder()
    x = b.input("x", (2,))
    g2 = b.build([b.op("identity", [b.op("exp", [x], name="e")], name="out")])
    out = bypass(g2, g2.node("out"), "e")
    assert [(n.op, n.outputs) for n in out.nodes] == [("exp", ("out",))] and out.outputs == ("out",)
    b = GraphBuilder()
    x = b.input("x", (2,))
    g3 = b.build([b.op("identity", [x], name="out")])
    assert bypass(g3, g3.node("out"), "x") is None                    # an input cannot be renamed


def test_toposort_dce_rename_and_names():
    g = chain()
    assert toposort(g) is g and dce(g) is g
    shuffled = g.replace(nodes=g.nodes[::-1])
    assert [n.name for n in toposort(shuffled).nodes] == ["r", "n", "y"]
    r = rename(g, {"n": "m"})
    assert r.node("y").inputs == ("m", "c") and "n" not in r.values
    assert fresh_name(g, "r") == "r_1" and fresh_name(g, "a/b") == "a.b"
    assert use_counts(g) == {"x": 1, "r": 1, "n": 1, "c": 1, "y": 1}
    assert bias_hint(Node.make("conv2d", ["x", "conv.weight"], "c")) == "conv.bias"
    assert bias_hint(Node.make("conv2d", ["x", "w"], "c")) == "c.bias"
