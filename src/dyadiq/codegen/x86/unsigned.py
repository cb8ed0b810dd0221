# SPDX-License-Identifier: Apache-2.0
"""Activations between kernels stored as uint8 ``x + 128``, so the u8 x s8 GEMMs read them without a copy.

The VNNI and ``vpmaddubsw`` kernels multiply ``u = x + 128`` (``gemm.vnni_offset``): with int8 activations a
pointwise GEMM first copies its whole input as ``x + 128``. An int8 value ``x`` with zero point ``z`` carries
the same numbers as the uint8 value ``x + 128`` with zero point ``z + 128``. ``unsigned_activations(g)``
makes every int8 ``requantize`` (without clamp tensors) / ``qadd`` output that is not a graph output, and
whose readers all take it through a zero point (``qconv2d`` / ``qlinear`` input, ``qadd`` operand), a uint8
output: ``out_zp``, ``qmin`` and ``qmax`` + ``off``, the value's quantization type unsigned with its zero
points + ``off``, and each reader's zero point + ``off``, where ``off = 2^(bits - 1)`` for a ``bits``-wide
activation (128 at 8 bits; 8 for 4-bit codes in [-8, 7], which become [0, 15]). Every reader computes the
same numbers bit for bit, and no graph input or output changes.
"""
from __future__ import annotations

from dataclasses import replace

from ...ir.graph import Graph, Node, Value

ZP_OF = {"qconv2d": ("x_zp",), "qlinear": ("x_zp",), "qadd": ("a_zp", "b_zp")}   # zero point of input 0, 1


def _reads_through_zero_point(n: Node, v: str) -> bool:
    keys = ZP_OF.get(n.op)
    return keys is not None and all(i < len(keys) for i, x in enumerate(n.inputs) if x == v)


def _flippable(n: Node, cons: dict, outs: set) -> bool:
    v = n.name
    if n.op not in ("requantize", "qadd") or n.attr("dtype") != "i8" or v in outs or not cons.get(v):
        return False
    if n.op == "requantize" and len(n.inputs) > 3:
        return False
    return all(_reads_through_zero_point(c, v) for c in cons[v])


def _offset(g: Graph, v: str) -> int:
    """``2^(bits - 1)`` for the activation ``v`` (8 bits when it carries no quantization type)."""
    q = g.quant_of(v)
    return 1 << ((q.bits if q is not None else 8) - 1)


def unsigned_activations(g: Graph) -> Graph:
    """``g`` with the int8 activations described in the module docstring stored as uint8 ``x + off``."""
    cons, outs = g.consumers(), set(g.outputs)
    flip = {n.name: _offset(g, n.name) for n in g.nodes if _flippable(n, cons, outs)}
    if not flip:
        return g
    values, nodes = dict(g.values), []
    for n in g.nodes:
        changes = {}
        for i, x in enumerate(n.inputs):
            if x in flip:
                key = ZP_OF[n.op][i]
                changes[key] = int(changes.get(key, n.attr(key, 0))) + flip[x]
        if n.name in flip:
            off = flip[n.name]
            changes.update(dtype="u8", out_zp=int(n.attr("out_zp", 0)) + off,
                           qmin=int(n.attr("qmin")) + off, qmax=int(n.attr("qmax")) + off)
            val = values[n.name]
            q = val.quant
            if q is not None:
                q = replace(q, signed=False, zero_point=tuple(int(z) + off for z in q.zero_point))
            values[n.name] = Value(n.name, val.type.with_dtype("u8"), q)
        nodes.append(n.with_attrs(**changes) if changes else n)
    return g.replace(nodes=tuple(nodes), values=values)
