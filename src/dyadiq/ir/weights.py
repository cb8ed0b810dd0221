# SPDX-License-Identifier: Apache-2.0
"""Weights of an integer graph, as every backend and the artifact manifest see them."""
from __future__ import annotations

from .graph import Graph
from .ops.registry import ops_with

WEIGHT_OPS = tuple(sorted(ops_with(weight=True, integer=True)))     # qconv2d, qlinear


def weight_bits(g: Graph, name: str) -> int:
    """Bit width of a weight constant: its QuantType's bits, else its dtype's."""
    q = g.quant_of(name)
    if q is not None:
        return q.bits
    return 4 if g.type_of(name).dtype in ("i4", "u4") else 8 * g.type_of(name).np_dtype.itemsize
