# SPDX-License-Identifier: Apache-2.0
"""Canonicalize rules for attention masks: a large negative bias before a softmax becomes a keep mask.

Exporters write a padding / causal mask as a float bias added to the attention scores, in several spellings:

- ``where(keep, 0, -inf)`` or ``where(masked, -inf, 0)`` (torch.onnx's scaled_dot_product_attention, HF
  eager attention with ``finfo.min``),
- ``(1 - cast(keep)) * -10000`` (BERT-era code; ``cast(masked) * -big`` too),
- ``where(keep, scores, -inf)`` / ``where(masked, -inf, scores)`` (``masked_fill``),
- a constant bias of zeros and values at or below ``-1e4`` (a causal mask folded at import),

each possibly reshaped on the way. Quantizing ``scores + bias`` as one tensor gives the bias's -1e4..-3e38
the whole 8-bit range, so the real scores collapse to one code (16 dB measured on a masked BERT). The rule
``masked-softmax`` rewrites ``softmax(scores + bias)`` to ``softmax(scores, keep)``: the same function (a
bias at or below ``-1e4`` gives ``exp`` an exact 0 in float32 for any score spread below ~1e4), with the
mask an integer / i1 value that integerize passes through unchanged (``integerize.EXACT_OPS``).
``drop-nan-guard`` removes ``where(isnan(p), 0, p)`` after a softmax (torch.onnx's guard for rows with
every key masked; the masked softmax makes those rows 0 itself and a softmax of finite scores is never NaN).
"""
from __future__ import annotations

import numpy as np

from ..errors import IRError, PassError
from ..ir.graph import Graph, Node
from .rewrite import bypass, fresh_name, splice

BIG = -1e4          # a bias at or below this is a mask (exp(-1e4) underflows to exactly 0)


def _const(g: Graph, name: str) -> np.ndarray | None:
    """The array of an unquantized constant, else None."""
    return g.const(name) if g.is_const(name) and g.quant_of(name) is None else None


def _all(g: Graph, name: str, test) -> bool:
    c = _const(g, name)
    return c is not None and c.size > 0 and bool(np.all(test(np.asarray(c, np.float64))))


def _is_big(g: Graph, name: str) -> bool:
    return _all(g, name, lambda c: c <= BIG)


def _is_zero(g: Graph, name: str) -> bool:
    return _all(g, name, lambda c: c == 0)


def _is_one(g: Graph, name: str) -> bool:
    return _all(g, name, lambda c: c == 1)


def _flag(g: Graph, name: str) -> bool:
    """``name`` is an integer / i1 value (a mask) without a QuantType."""
    return not g.type_of(name).is_float and g.quant_of(name) is None


class _Keep:
    """Builds the keep mask: a value name plus the nodes that compute it from what the graph has."""

    def __init__(self, g: Graph, producer: dict[str, Node], hint: str):
        self.g, self.producer, self.hint, self.nodes = g, producer, hint, []
        self.taken: set[str] = set()
        self.consts: dict[str, np.ndarray] = {}

    def fresh(self, what: str) -> str:
        name = fresh_name(self.g, f"{self.hint}.{what}", self.taken)
        self.taken.add(name)
        return name

    def node(self, op: str, inputs: tuple, **attrs) -> str:
        name = self.fresh(op)
        self.nodes.append(Node.make(op, inputs, name, **attrs))
        return name

    def negate(self, flag: str) -> str:
        return self.node("logical_not", (flag,))

    def of_float_mask(self, w: str, negated: bool) -> str | None:
        """The flag whose float cast is ``w`` (through reshapes), negated when ``negated``."""
        p, shapes = self.producer.get(w), []
        while p is not None and p.op == "reshape" and self.g.type_of(p.inputs[0]).is_float:
            shapes.append(p.attr("shape"))
            p = self.producer.get(p.inputs[0])
        if p is None or p.op != "cast" or not _flag(self.g, p.inputs[0]):
            return None
        flag = p.inputs[0]
        for shape in reversed(shapes):
            flag = self.node("reshape", (flag,), shape=shape)
        return self.negate(flag) if negated else flag

    def of_bias(self, b: str) -> str | None:
        """The keep mask of a float bias ``b`` (module docstring), else None."""
        g = self.g
        c = _const(g, b)
        if c is not None and g.type_of(b).is_float:          # a constant bias: 0 where kept (a causal mask)
            c = np.asarray(c, np.float64)
            if np.all((c == 0) | (c <= BIG)) and np.any(c <= BIG):
                name = self.fresh("keep")
                self.consts[name] = c == 0
                return name
            return None
        p = self.producer.get(b)
        if p is None or g.quant_of(b) is not None:
            return None
        if p.op == "reshape":
            inner = self.of_bias(p.inputs[0])
            return None if inner is None else self.node("reshape", (inner,), shape=p.attr("shape"))
        if p.op == "where" and _flag(g, p.inputs[0]):
            c, yes, no = p.inputs
            if _is_zero(g, yes) and _is_big(g, no):
                return c
            if _is_big(g, yes) and _is_zero(g, no):
                return self.negate(c)
            return None
        if p.op == "mul":
            for u, k in (p.inputs, p.inputs[::-1]):
                if not _is_big(g, k):
                    continue
                q = self.producer.get(u)
                if q is not None and q.op == "sub" and _is_one(g, q.inputs[0]):
                    return self.of_float_mask(q.inputs[1], negated=False)      # (1 - keep) * -big
                return self.of_float_mask(u, negated=True)                     # masked * -big
        return None


def masked_softmax(g: Graph, n: Node, ctx) -> Graph | None:
    """softmax(scores + mask bias) / softmax(where(keep, scores, -big)) -> softmax(scores, keep)."""
    if n.op != "softmax" or len(n.inputs) != 1 or g.quant_of(n.inputs[0]) is not None:
        return None
    p = ctx.producer.get(n.inputs[0])
    if p is None:
        return None
    keep, scores = _Keep(g, ctx.producer, n.name), None
    if p.op == "add":
        for x, b in (p.inputs, p.inputs[::-1]):
            if not g.is_const(x) and g.type_of(x) == g.type_of(n.inputs[0]):
                scores, mask = x, keep.of_bias(b)
                if mask is not None:
                    break
        else:
            return None
    elif p.op == "where" and _flag(g, p.inputs[0]):
        c, yes, no = p.inputs
        if _is_big(g, no) and not g.is_const(yes):
            scores, mask = yes, c
        elif _is_big(g, yes) and not g.is_const(no):
            scores, mask = no, keep.negate(c)
        else:
            return None
        if g.type_of(scores) != g.type_of(n.inputs[0]):
            return None
    else:
        return None
    try:
        return splice(g, {n.name: keep.nodes + [Node.make("softmax", (scores, mask), n.name, **dict(n.attrs))]},
                      constants=keep.consts)
    except (IRError, PassError):      # the mask does not broadcast to the scores: leave the graph as it is
        return None


def drop_nan_guard(g: Graph, n: Node, ctx) -> Graph | None:
    """where(isnan(p), 0, p) -> p for a softmax output p."""
    if n.op != "where":
        return None
    c, zero, p = n.inputs
    guard = ctx.producer.get(c)
    src = ctx.producer.get(p)
    if guard is None or guard.op != "isnan" or guard.inputs[0] != p or not _is_zero(g, zero):
        return None
    if src is None or src.op != "softmax" or g.quant_of(n.name) is not None:
        return None
    return bypass(g, n, p)


__all__ = ["BIG", "drop_nan_guard", "masked_softmax"]
