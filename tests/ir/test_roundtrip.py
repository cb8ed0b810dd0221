# SPDX-License-Identifier: Apache-2.0
"""parse(print(g)) == g, for hand-built and hypothesis-generated graphs; the text is valid MLIR."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dyadiq.errors import ParseError
from dyadiq.ir import GraphBuilder, QuantType, parse_mlir, print_mlir

UNARY = ["relu", "sigmoid", "tanh", "silu", "hardswish", "gelu", "identity", "abs"]


@st.composite
def graphs(draw):
    """Random well-typed graphs over a [1, C, H, W] input: unary ops, convs, adds, reshapes, quant types."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    c = draw(st.integers(1, 4))
    b = GraphBuilder(draw(st.sampled_from(["main", "g", "net_1"])))
    x = b.input(draw(st.sampled_from(["x", "input.1", "/in/0"])), (1, c, 4, 4))
    live = [x]
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "conv", "add", "clip", "quant"]))
        src = draw(st.sampled_from(live))
        if kind == "unary":
            live.append(b.op(draw(st.sampled_from(UNARY)), [src]))
        elif kind == "conv":
            w = b.const("w", rng.normal(size=(c, c, 3, 3)).astype(np.float32))
            live.append(b.op("conv2d", [src, w], pad=(1, 1, 1, 1), stride=(1, 1)))
        elif kind == "add":
            live.append(b.op("add", [src, draw(st.sampled_from(live))]))
        elif kind == "clip":
            lo = draw(st.floats(-10, 0, allow_nan=False))
            live.append(b.op("clip", [src], min=lo, max=draw(st.floats(0.5, 1e6, allow_nan=False))))
        else:
            scale = draw(st.lists(st.floats(1e-12, 1e6, allow_nan=False), min_size=1, max_size=1))
            b.set_quant(src, QuantType.make(draw(st.integers(2, 16)), draw(st.booleans()), scale, 0))
    return b.build([live[-1]])


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_parse_print_roundtrip(g):
    assert parse_mlir(print_mlir(g), g.constants) == g


def test_printed_text_parses_with_mlir_python_bindings():
    ir = pytest.importorskip("torch_mlir.ir")
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4, 4))
    w = b.const("w", np.ones((2, 2, 1, 1), np.float32), quant=QuantType.make(4, True, [0.5, 0.25], 0, axis=0))
    y = b.op("conv2d", [x, w], quant=QuantType.make(8, True, 0.1, -3))
    g = b.build([b.op("clip", [y], min=0.0, max=float("inf"))])
    with ir.Context() as ctx, ir.Location.unknown():
        ctx.allow_unregistered_dialects = True
        m = ir.Module.parse(print_mlir(g))
        assert m.operation.verify()
        assert "dq.conv2d" in str(m)


def test_parse_error_names_line_and_column():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    text = print_mlir(b.build([b.op("relu", [x])])).replace('"dq.relu"', '"dq.relu" @')
    with pytest.raises(ParseError, match=r"line 4:"):
        parse_mlir(text)


def test_unknown_version_is_refused():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    text = print_mlir(b.build([b.op("relu", [x])])).replace("dq.version = 1", "dq.version = 99")
    with pytest.raises(ParseError, match="version 99"):
        parse_mlir(text)
