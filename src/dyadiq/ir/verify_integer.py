# SPDX-License-Identifier: Apache-2.0
"""Prove every integer op's arithmetic bound from its operands' integer ranges (never wrap).

Ranges flow forward from the graph inputs: a raw integer input spans its QuantType's range (else its
dtype's), ``quantize`` / ``requantize`` / ``qadd`` produce ``[qmin, qmax]``, ``lut`` its table's values,
data movement (``moves_data`` ops) the union of its data inputs' ranges (plus the pad value), an
accumulator ``[-bound, bound]``; constants span their own values. For each integer op the registry's
``acc_bound`` gives ``(bound, limit)`` (see ``ir/ops/integer.py``) and ``bound < limit`` must hold: an
int32 product that could reach 2^31 is refused here, at compile time, instead of wrapping at run time.
"""
from __future__ import annotations

import numpy as np

from ..errors import VerifyError
from .graph import Graph, Node
from .ops import OPS
from .types import int_range


def _dtype_range(dtype: str) -> tuple[int, int] | None:
    if dtype == "i1":
        return 0, 1
    if not dtype.startswith(("i", "u")):
        return None
    bits = int(dtype[1:])
    return int_range(bits, dtype.startswith("i"))


def _out_range(g: Graph, n: Node, ranges: dict, bound: int | None) -> tuple[int, int] | None:
    d = OPS[n.op]
    a = n.attr_dict
    if n.op in ("quantize",):
        return int_range(a["bits"], a["signed"])
    if "qmin" in a and "qmax" in a:
        return int(a["qmin"]), int(a["qmax"])
    if n.op == "lut":
        t = np.asarray(g.const(n.inputs[1])) if g.is_const(n.inputs[1]) else None
        return (int(t.min()), int(t.max())) if t is not None and t.size else _dtype_range(g.type_of(n.name).dtype)
    if bound is not None:
        return -bound, bound
    if d.moves_data:
        rs = [ranges.get(i) for i in (n.inputs[:1] if n.op != "concat" else n.inputs)]
        if any(r is None for r in rs):
            return _dtype_range(g.type_of(n.name).dtype)
        lo, hi = min(r[0] for r in rs), max(r[1] for r in rs)
        if n.op == "pad" and a.get("mode", "constant") == "constant":
            v = int(a.get("value", 0))
            lo, hi = min(lo, v), max(hi, v)
        return lo, hi
    if n.op == "gather":
        return ranges.get(n.inputs[0])
    return _dtype_range(g.type_of(n.name).dtype)


def value_ranges(g: Graph, *, check: bool = True) -> dict[str, tuple[int, int]]:
    """Integer range of every integer value of ``g``; with ``check``, VerifyError naming the first node
    whose ``acc_bound`` is not below its limit."""
    ranges: dict[str, tuple[int, int]] = {}
    for name in g.inputs:
        q = g.quant_of(name)
        r = q.qrange if q is not None else _dtype_range(g.type_of(name).dtype)
        if r is not None:
            ranges[name] = (int(r[0]), int(r[1]))
    for name, arr in g.constants.items():
        a = np.asarray(arr)
        if a.dtype.kind in "iu" and a.size:
            ranges[name] = (int(a.min()), int(a.max()))
    for n in g.nodes:
        d = OPS[n.op]
        bound = None
        if d.acc_bound is not None:
            rs = [ranges.get(i) or _dtype_range(g.type_of(i).dtype) for i in n.inputs]
            if any(r is None for r in rs):
                raise VerifyError("integer op with a non-integer operand", node=n)
            consts = [np.asarray(g.const(i)) if g.is_const(i) else None for i in n.inputs]
            types = [g.type_of(i) for i in n.inputs]
            bound, limit = d.acc_bound(types, rs, consts, n.attr_dict)
            if check and bound >= limit:
                raise VerifyError(f"arithmetic bound {bound} is not below {limit} "
                                  f"(2^{int(limit).bit_length() - 1}) for operand ranges {rs}: it could overflow",
                                  node=n)
            bound = int(bound) if limit == 1 << 31 else None       # an int32 accumulator's own range
        r = _out_range(g, n, ranges, bound)
        if r is not None:
            ranges[n.name] = (int(r[0]), int(r[1]))
    return ranges


def verify_integer(g: Graph) -> Graph:
    """``g`` itself after proving every integer op's bound (VerifyError naming the node otherwise)."""
    value_ranges(g, check=True)
    return g
