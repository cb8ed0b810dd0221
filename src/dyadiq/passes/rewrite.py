# SPDX-License-Identifier: Apache-2.0
"""Graph-editing helpers for passes. Every function takes a Graph and returns a new one; none mutates.

- ``splice(g, replace=, constants=, redirect=, quants=)`` is the one general edit: each node named in
  ``replace`` is swapped for a list of new nodes at its position (``[]`` deletes it), constants are set
  or added, and every use of a value ``old`` in ``redirect`` (node inputs and graph outputs) reads
  ``redirect[old]`` instead. New outputs get inferred types; an output that reuses an existing name keeps
  that value's QuantType. The result is re-sorted topologically if needed and dead code is dropped.
- ``bypass(g, node, keep)`` drops a node whose output equals ``keep`` and rewires its uses; when the
  output is a graph output the producer of ``keep`` takes the output's name instead, so graph outputs
  keep their names (``None`` when neither is possible).
- ``rename``, ``dce``, ``toposort``, ``fresh_name``, ``use_counts``: the pieces the above are made of;
  ``bias_hint`` names a bias a pass adds to a layer.

A rule that rewrites one pattern is then a few lines: build the new nodes with ``Node.make``, pick
names with ``fresh_name`` and hand both to ``splice``.
"""
from __future__ import annotations

import heapq
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import PassError
from ..ir.builder import sanitize
from ..ir.graph import Graph, Node, Value
from ..ir.ops import op_def
from ..ir.types import QuantType, TensorType, dtype_of


def fresh_name(g: Graph, hint: str, taken: Iterable[str] = ()) -> str:
    """A valid name derived from ``hint`` that is neither a value of ``g`` nor in ``taken``."""
    taken = set(taken)
    base = sanitize(hint)
    name, k = base, 1
    while name in g.values or name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def bias_hint(layer: Node) -> str:
    """Name hint for a bias created for ``layer``: ``conv.weight`` -> ``conv.bias``, else ``<name>.bias``."""
    w = layer.inputs[1] if len(layer.inputs) > 1 else ""
    return w[: -len(".weight")] + ".bias" if w.endswith(".weight") else f"{layer.name}.bias"


def use_counts(g: Graph) -> dict[str, int]:
    """How often each value is read: once per node input slot and once per graph output."""
    uses: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    for o in g.outputs:
        uses[o] = uses.get(o, 0) + 1
    return uses


def toposort(g: Graph) -> Graph:
    """Stable topological order (Kahn, earliest node first); ``g`` itself when already sorted."""
    if _is_sorted(g):
        return g
    producer = {o: k for k, n in enumerate(g.nodes) for o in n.outputs}
    waiting = [len({i for i in n.inputs if i in producer}) for n in g.nodes]
    readers: dict[int, list[int]] = {}
    for k, n in enumerate(g.nodes):
        for i in {i for i in n.inputs if i in producer}:
            readers.setdefault(producer[i], []).append(k)
    heap = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        k = heapq.heappop(heap)
        order.append(k)
        for r in readers.get(k, ()):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(heap, r)
    if len(order) != len(g.nodes):
        done = set(order)
        stuck = next(n for k, n in enumerate(g.nodes) if k not in done)
        raise PassError("graph has a cycle or reads an undefined value", node=stuck)
    return g.replace(nodes=tuple(g.nodes[k] for k in order))


def _is_sorted(g: Graph) -> bool:
    defined = set(g.inputs) | set(g.constants)
    for n in g.nodes:
        if any(i not in defined for i in n.inputs):
            return False
        defined.update(n.outputs)
    return True


def dce(g: Graph) -> Graph:
    """Drop nodes whose outputs are never read, then unread constants and values nothing defines."""
    live = set(g.outputs)
    keep: list[Node] = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outputs):
            keep.append(n)
            live.update(n.inputs)
    consts = {k: v for k, v in g.constants.items() if k in live}
    defined = set(g.inputs) | set(consts) | {o for n in keep for o in n.outputs}
    if len(keep) == len(g.nodes) and len(consts) == len(g.constants) and len(defined) == len(g.values):
        return g
    return g.replace(nodes=tuple(reversed(keep)), constants=consts,
                     values={k: v for k, v in g.values.items() if k in defined})


def rename(g: Graph, mapping: Mapping[str, str]) -> Graph:
    """Rename values everywhere they appear (definitions, uses, graph inputs and outputs, constants)."""
    if not mapping:
        return g
    r = lambda names: tuple(mapping.get(x, x) for x in names)  # noqa: E731
    clash = set(mapping.values()) & (set(g.values) - set(mapping))
    if clash:
        raise PassError(f"cannot rename onto existing value(s) {sorted(clash)}")
    nodes = tuple(Node(n.op, r(n.inputs), r(n.outputs), n.attrs) for n in g.nodes)
    values = {mapping.get(k, k): Value(mapping.get(k, k), v.type, v.quant) for k, v in g.values.items()}
    consts = {mapping.get(k, k): v for k, v in g.constants.items()}
    return g.replace(inputs=r(g.inputs), outputs=r(g.outputs), nodes=nodes, values=values, constants=consts)


def splice(g: Graph, replace: Mapping[str, Sequence[Node]] | None = None, *,
           constants: Mapping[str, np.ndarray] | None = None, redirect: Mapping[str, str] | None = None,
           quants: Mapping[str, QuantType | None] | None = None) -> Graph:
    """Replace nodes (by name) with new ones in place, set constants, redirect uses; see module docstring.

    ``constants`` may overwrite an existing constant (same name, new array); its value then gets the
    array's type and the QuantType from ``quants`` (default: none). ``quants`` also sets the QuantType
    of new node outputs.
    """
    replace, constants, quants = dict(replace or {}), dict(constants or {}), dict(quants or {})
    redirect = _resolve(dict(redirect or {}))
    missing = set(replace) - {n.name for n in g.nodes}
    if missing:
        raise PassError(f"splice: no node named {sorted(missing)}")
    dropped = {o for n in g.nodes if n.name in replace for o in n.outputs}
    values = {k: v for k, v in g.values.items() if k not in dropped}
    for name, arr in constants.items():
        if name in values and name not in g.constants:
            raise PassError(f"splice: constant %{name} would shadow a computed value")
        arr = np.asarray(arr)
        values[name] = Value(name, TensorType(tuple(arr.shape), dtype_of(arr)), quants.get(name))
    nodes: list[Node] = []
    new: set[int] = set()
    for n in g.nodes:
        for m in replace.get(n.name, (n,)):
            m = _redirected(m, redirect)
            nodes.append(m)
            if n.name in replace:
                new.add(id(m))
    outputs = tuple(redirect.get(o, o) for o in g.outputs)
    out = toposort(g.replace(nodes=tuple(nodes), constants={**g.constants, **constants}, outputs=outputs))
    for m in out.nodes:
        if id(m) in new:
            _define(g, m, values, quants)
    return dce(out.replace(values=values))


def _resolve(redirect: dict[str, str]) -> dict[str, str]:
    """Follow chains ``a -> b -> c`` so every key maps to its final target."""
    redirect = {k: v for k, v in redirect.items() if k != v}
    out = {}
    for k in redirect:
        seen, v = {k}, redirect[k]
        while v in redirect:
            if v in seen:
                raise PassError(f"splice: redirect cycle through %{v}")
            seen.add(v)
            v = redirect[v]
        out[k] = v
    return out


def _redirected(n: Node, redirect: Mapping[str, str]) -> Node:
    if not any(i in redirect for i in n.inputs):
        return n
    return Node(n.op, tuple(redirect.get(i, i) for i in n.inputs), n.outputs, n.attrs)


def _define(g: Graph, n: Node, values: dict[str, Value], quants: Mapping[str, QuantType | None]) -> None:
    """Type the outputs of a new node ``n`` into ``values`` (a reused name keeps its QuantType)."""
    for i in n.inputs:
        if i not in values:
            raise PassError(f"splice: input %{i} is not defined", node=n)
    types = op_def(n.op).infer([values[i].type for i in n.inputs], n.attr_dict)
    for o, t in zip(n.outputs, types):
        if o in values:
            raise PassError(f"splice: %{o} is defined twice", node=n)
        old = g.values.get(o)
        if old is not None and old.type != t:
            raise PassError(f"splice: %{o} would change type from {old.type} to {t}", node=n)
        values[o] = Value(o, t, quants[o] if o in quants else (old.quant if old is not None else None))


def bypass(g: Graph, node: Node, keep: str) -> Graph | None:
    """Drop single-output ``node`` (whose output equals ``keep``) and make its uses read ``keep``."""
    out = node.outputs[0]
    if out not in g.outputs:
        return splice(g, {node.name: []}, redirect={out: keep})
    if keep in g.inputs or keep in g.constants or keep in g.outputs:
        return None
    q = g.quant_of(out) or g.quant_of(keep)
    nodes = tuple(n for n in g.nodes if n is not node)
    values = {k: v for k, v in g.values.items() if k != out}
    g2 = rename(g.replace(nodes=nodes, values=values), {keep: out})
    return dce(g2.with_quant(out, q))
