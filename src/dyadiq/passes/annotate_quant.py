# SPDX-License-Identifier: Apache-2.0
"""Activation quantization: give every activation its QuantType, following docs/numerics.md.

A range ``(lo, hi)`` is first widened to contain 0, then becomes a signed ``bits``-wide asymmetric
per-tensor QuantType with

    scale = (hi - lo) / (2^bits - 1)          (rounded to float32, so exporters are exact)
    zp    = clamp(qmin - round_half_even(lo / scale), qmin, qmax)

so 0 is exactly representable (code ``zp``). Placement:

- graph inputs and outputs, and every float node output, get their own QuantType, except
- *fused*: a ``conv2d`` / ``linear`` / ``matmul`` / ``add`` output whose only consumer is ``relu`` or
  ``clip`` (and is not a graph output) gets none; the clamp's output carries it;
- *inherit*: ``reshape``, ``transpose``, ``flatten``, ``maxpool``, ``slice``, ``identity`` and ``pad``
  (constant 0, which is code ``zp``, or reflect/edge) keep their input's QuantType;
- ``concat``: inputs and output share one QuantType (the union range) when every input is a
  non-constant value read only by this concat whose QuantType is its own (not inherited); otherwise
  the output gets its own and integerize requantizes.
- ``relu`` / ``clip`` output ranges are clamped to the op's bounds (``relu``: ``lo >= 0``).

Values that already carry a QuantType (e.g. imported from a QDQ model) keep it.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node, Value
from ..ir.numerics import fake_quant
from ..ir.ops.registry import ops_with
from ..ir.types import QuantType, int_range

FUSE_FROM = ops_with(fusable=True)                     # conv2d, linear, matmul, add
CLAMPS = ops_with(clamp=True)                          # relu, clip, minimum/maximum with a constant bound
INHERIT = ops_with(quant="inherit")                    # data movement
WEIGHTED = ops_with(weight=True, integer=False)        # conv2d, linear


def act_quant(lo: float, hi: float, bits: int = 8) -> QuantType:
    """The signed asymmetric per-tensor QuantType of the range ``[lo, hi]`` (widened to contain 0)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise PassError(f"range [{lo}, {hi}] is not finite")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:                      # constant zero: any scale is exact; take [0, 1]
        hi = 1.0
    qmin, qmax = int_range(bits, True)
    scale = float(np.float32((hi - lo) / (qmax - qmin)))
    if not scale > 0.0:
        raise PassError(f"range [{lo}, {hi}] is too narrow for a float32 scale")
    zp = int(np.clip(qmin - np.rint(lo / scale), qmin, qmax))
    return QuantType.make(bits, True, scale, zp)


def check_value_bits(g: Graph, bits: int, value_bits: Mapping[str, int] | None) -> dict[str, int]:
    """Validated per-value activation widths (2..16, float values of ``g``)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise PassError(f"activation bits must be 2..16, got {bits!r}")
    out = {}
    for k, v in (value_bits or {}).items():
        if k not in g.values or g.is_const(k) or not g.type_of(k).is_float:
            raise PassError(f"activation bits given for %{k}, which is not a float activation of the graph")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 2 <= v <= 16:
            raise PassError(f"activation bits for %{k} must be 2..16, got {v!r}")
        out[k] = int(v)
    return out


def is_clamp(g: Graph, n: Node | None) -> bool:
    """``relu``, ``clip``, or ``minimum`` / ``maximum`` with one constant bound (a per-channel clamp)."""
    if n is None or n.op not in CLAMPS:
        return False
    return sum(not g.is_const(i) for i in n.inputs) == 1


def is_fused(g: Graph, name: str, consumers: Mapping[str, list[Node]], producer: Node | None) -> bool:
    """``name`` comes out of conv/linear/matmul/add (possibly through clamps) and is read only by one
    clamp (and is not a graph output): the clamp chain's last output carries the QuantType."""
    c = consumers.get(name, [])
    if producer is None or name in g.outputs or len(c) != 1 or not is_clamp(g, c[0]):
        return False
    if producer.op in FUSE_FROM:
        return True
    if not is_clamp(g, producer):
        return False
    src = next(i for i in producer.inputs if not g.is_const(i))
    return is_fused(g, src, consumers, g.producers().get(src))


def inherits(n: Node) -> bool:
    """``n`` only moves data, so its output keeps its input's QuantType."""
    if n.op != "pad":
        return n.op in INHERIT
    return n.attr("mode", "constant") in ("reflect", "edge") or float(n.attr("value", 0.0)) == 0.0


def _clamped(n: Node | None, lo: float, hi: float, g: Graph | None = None) -> tuple[float, float]:
    if n is not None and g is not None and n.op in ("minimum", "maximum") and is_clamp(g, n):
        c = next(np.asarray(g.const(i)) for i in n.inputs if g.is_const(i))
        if n.op == "minimum":
            return min(lo, float(c.max())), min(hi, float(c.max()))
        return max(lo, float(c.min())), max(hi, float(c.min()))
    if n is not None and n.op == "relu":
        return max(lo, 0.0), max(hi, 0.0)
    if n is not None and n.op == "clip":
        a, b = n.attr("min", -math.inf), n.attr("max", math.inf)
        return min(max(lo, a), b), max(min(hi, b), a)
    return lo, hi


def _shared_concats(g: Graph, consumers, producers, own: set[str]) -> dict[str, list[str]]:
    """concat output -> its inputs, for each concat whose inputs and output can share one QuantType."""
    out = {}
    for n in g.nodes:
        if n.op != "concat" or not g.type_of(n.name).is_float or n.name in own:
            continue
        ok = all(not g.is_const(i) and i not in own and all(c is n for c in consumers.get(i, []))
                 and (i in g.inputs or not inherits(producers[i])) for i in n.inputs)
        if ok:
            out[n.name] = list(dict.fromkeys(n.inputs))
    return out


def annotate_activations(g: Graph, ranges: Mapping[str, tuple[float, float]], *, bits: int = 8,
                         value_bits: Mapping[str, int] | None = None) -> Graph:
    """Set the activation QuantType of every value that needs one, from calibrated ``ranges``.

    ``value_bits`` overrides the width ``bits`` per value name (e.g. a few 16-bit activations); the
    values of a shared-scale concat take the widest of theirs."""
    widths = check_value_bits(g, bits, value_bits)

    def width(name: str) -> int:
        return widths.get(name, bits)
    consumers, producers = g.consumers(), g.producers()
    own = {k for k, v in g.values.items() if v.quant is not None}   # already quantized: kept
    quant: dict[str, QuantType] = {}

    def rng(name: str, node: Node | None = None) -> tuple[float, float]:
        if name not in ranges:
            raise PassError(f"no calibration range for value %{name}", node=node)
        lo, hi = ranges[name]
        return _clamped(producers.get(name), float(lo), float(hi), g)

    def act_quant_of(name: str, node: Node | None, lo: float, hi: float, bits: int) -> QuantType:
        try:
            return act_quant(lo, hi, bits)
        except PassError as e:               # name the value (activations that vanish to ~1e-45, inf)
            raise PassError(f"activation %{name}: {e} (its calibration values; is the float model's output "
                            f"there degenerate?)", node=node) from None

    for cat, ins in _shared_concats(g, consumers, producers, own).items():
        node = producers[cat]
        los, his = zip(*(rng(v, node) for v in [*ins, cat]))
        q = act_quant_of(cat, node, min(los), max(his), max(width(v) for v in [*ins, cat]))
        for v in [*ins, cat]:
            quant[v] = q

    def current(name: str) -> QuantType | None:
        return quant.get(name, g.quant_of(name))

    for name in g.inputs:
        if g.type_of(name).is_float and name not in own and name not in quant:
            quant[name] = act_quant_of(name, None, *rng(name), width(name))
    for n in g.nodes:
        for o in n.outputs:
            if not g.type_of(o).is_float or o in own or o in quant:
                continue
            if is_fused(g, o, consumers, n):
                continue
            if inherits(n) and o == n.name and current(n.inputs[0]) is not None \
                    and not current(n.inputs[0]).per_channel:
                quant[o] = current(n.inputs[0])
                continue
            quant[o] = act_quant_of(o, n, *rng(o, n), width(o))
    if not quant:
        return g
    values = dict(g.values)
    for k, q in quant.items():
        values[k] = Value(k, values[k].type, q)
    return g.replace(values=values)


def check_contract(g: Graph) -> list[str]:
    """Where ``g`` breaks the quantized-graph contract of docs/numerics.md (empty when it follows it)."""
    bad = []
    consumers = g.consumers()
    for name in (*g.inputs, *g.outputs):
        q = g.quant_of(name)
        if g.type_of(name).is_float and (q is None or q.per_channel):
            bad.append(f"graph input/output %{name} has no per-tensor activation QuantType")
    for n in g.nodes:
        if n.op in WEIGHTED:
            w = n.inputs[1]
            q = g.quant_of(w)
            if not g.is_const(w) or q is None:
                bad.append(f"[%{n.name} {n.op}] weight %{w} is not a quantized constant")
            elif not np.array_equal(fake_quant(g.const(w), q), g.const(w)):
                bad.append(f"[%{n.name} {n.op}] weight %{w} is not on its quantization grid")
            if len(n.inputs) > 2 and g.quant_of(n.inputs[2]) is not None:
                bad.append(f"[%{n.name} {n.op}] bias %{n.inputs[2]} carries a QuantType")
        for o in n.outputs:
            if not g.type_of(o).is_float:
                continue
            q = g.quant_of(o)
            if is_fused(g, o, consumers, n):
                if q is not None:
                    bad.append(f"[%{n.name} {n.op}] fused output %{o} carries a QuantType")
            elif q is None:
                bad.append(f"[%{n.name} {n.op}] output %{o} has no QuantType")
            elif inherits(n) and o == n.name and q != (qi := g.quant_of(n.inputs[0])) \
                    and qi is not None and not qi.per_channel:
                bad.append(f"[%{n.name} {n.op}] data-movement output %{o} does not keep its input's QuantType")
    return bad
