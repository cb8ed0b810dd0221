# SPDX-License-Identifier: Apache-2.0
"""Small quantized graphs that the FileCheck files under tests/filecheck/ name on their ``# MODEL:`` line."""
from __future__ import annotations

import numpy as np

from dyadiq.ir.builder import GraphBuilder
from quant_helpers import simple_quantize

RNG = np.random.default_rng(5)


def _q(b: GraphBuilder, y: str, shape=(1, 3, 8, 8)):
    g = b.build([y])
    return simple_quantize(g, RNG.normal(size=(8,) + shape[1:]).astype(np.float32))


def conv_relu6():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.op("conv2d", [x, b.const("w", RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)),
                        b.const("b", RNG.normal(size=4).astype(np.float32))], pad=(1, 1, 1, 1), name="conv")
    return _q(b, b.op("clip", [y], min=0.0, max=6.0, name="relu6"))


def residual_add():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.op("conv2d", [x, b.const("w", RNG.normal(size=(3, 3, 1, 1)).astype(np.float32))], name="conv")
    return _q(b, b.op("add", [y, x], name="sum"))


def hardswish_as_exported():
    """``x * clip(x + 3, 0, 6) / 6``: how exporters write hard-swish."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    t = b.op("add", [x, b.const("three", np.asarray(3.0, np.float32))], name="plus3")
    t = b.op("clip", [t], min=0.0, max=6.0, name="relu6")
    t = b.op("mul", [x, t], name="gate")
    return _q(b, b.op("div", [t, b.const("six", np.asarray(6.0, np.float32))], name="hswish"))


def avgpool_dilated():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    return _q(b, b.op("avgpool", [x], kernel=(2, 2), stride=(2, 2), dilation=(2, 2), ceil_mode=True, name="pool"))


MODELS = {f.__name__: f for f in (conv_relu6, residual_add, hardswish_as_exported, avgpool_dilated)}
