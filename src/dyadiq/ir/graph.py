# SPDX-License-Identifier: Apache-2.0
"""The graph: immutable ``Value``s, ``Node``s and a ``Graph`` holding them in topological order.

A node's name is its first output's name, so errors and printed IR name the same thing. Constants
(weights) are read-only numpy arrays held by name in ``Graph.constants`` and are values too.
Edits build new objects; ``Graph.replace`` returns ``self`` when nothing differs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace as dc_replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import VerifyError
from .types import QuantType, TensorType, dtype_of

# attribute values: scalars, strings and flat tuples of ints / floats
Attr = bool | int | float | str | tuple
NAME_RE = re.compile(r"^[A-Za-z_$.\-][A-Za-z0-9_$.\-]*$")


def _freeze_attrs(attrs: Mapping[str, Attr] | Iterable[tuple[str, Attr]]) -> tuple[tuple[str, Attr], ...]:
    items = attrs.items() if isinstance(attrs, Mapping) else attrs
    out = []
    for k, v in items:
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, tuple):
            v = tuple(x.item() if isinstance(x, np.generic) else x for x in v)
        out.append((k, v))
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class Value:
    """A named tensor: its type and, when quantized, how it is stored as integers."""

    name: str
    type: TensorType
    quant: QuantType | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One operation; ``name`` is ``outputs[0]``. Attributes are kept sorted by key."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, Attr], ...] = ()

    @classmethod
    def make(cls, op: str, inputs: Iterable[str], outputs: Iterable[str] | str, **attrs: Attr) -> "Node":
        outs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        return cls(str(op), tuple(inputs), outs, _freeze_attrs(attrs))

    @property
    def name(self) -> str:
        return self.outputs[0]

    @property
    def attr_dict(self) -> dict[str, Attr]:
        return dict(self.attrs)

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    def with_attrs(self, **changes: Attr) -> "Node":
        d = self.attr_dict
        d.update(changes)
        return dc_replace(self, attrs=_freeze_attrs({k: v for k, v in d.items() if v is not None}))


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, order="C")
    if arr.flags.writeable:
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """A function: ``inputs -> outputs`` through ``nodes`` (topologically sorted)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    values: Mapping[str, Value]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    name: str = "main"

    def __post_init__(self):
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "constants",
                           MappingProxyType({k: _readonly(v) for k, v in self.constants.items()}))

    # ---- queries -------------------------------------------------------------------------------
    def type_of(self, name: str) -> TensorType:
        return self.values[name].type

    def quant_of(self, name: str) -> QuantType | None:
        return self.values[name].quant

    def is_const(self, name: str) -> bool:
        return name in self.constants

    def const(self, name: str) -> np.ndarray:
        return self.constants[name]

    def producers(self) -> dict[str, Node]:
        """Map each node output to the node that produces it."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Map each value to the nodes that read it (graph outputs are not nodes)."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def count_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    # ---- edits ---------------------------------------------------------------------------------
    def replace(self, **kw) -> "Graph":
        """A copy with fields changed; ``self`` when every given field is already identical."""
        if all(getattr(self, k) is v for k, v in kw.items()):
            return self
        fields = {k: getattr(self, k) for k in ("inputs", "outputs", "nodes", "values", "constants", "name")}
        fields.update(kw)
        return Graph(**fields)

    def with_quant(self, name: str, quant: QuantType | None) -> "Graph":
        v = self.values[name]
        if v.quant == quant:
            return self
        return self.replace(values={**self.values, name: Value(name, v.type, quant)})

    # ---- equality (structural, constants compared by content) ----------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.name == other.name and self.inputs == other.inputs and self.outputs == other.outputs
                and self.nodes == other.nodes and dict(self.values) == dict(other.values)
                and self.constants.keys() == other.constants.keys()
                and all(self.constants[k].dtype == other.constants[k].dtype
                        and np.array_equal(self.constants[k], other.constants[k]) for k in self.constants))

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        from .printer import print_text
        return print_text(self)


def verify(g: Graph) -> Graph:
    """Check names, topological order, value table, constant types and per-op types; return ``g``."""
    from .ops import infer_types

    defined: set[str] = set()
    for name in g.inputs:
        if name in g.constants:
            raise VerifyError(f"graph input %{name} is also a constant")
        defined.add(name)
    for name, arr in g.constants.items():
        v = g.values.get(name)
        if v is None:
            raise VerifyError(f"constant %{name} has no value entry")
        if v.type != TensorType(tuple(arr.shape), dtype_of(arr)) and not (
                v.type.dtype in ("i4", "u4") and v.type.shape == arr.shape):
            raise VerifyError(f"constant %{name}: array {arr.dtype}{list(arr.shape)} does not match {v.type}")
        defined.add(name)
    for name in defined | {o for n in g.nodes for o in n.outputs}:
        if not NAME_RE.match(name):
            raise VerifyError(f"value name {name!r} is not a valid identifier")
        if name not in g.values:
            raise VerifyError(f"value %{name} has no type")
    for n in g.nodes:
        for i in n.inputs:
            if i not in defined:
                raise VerifyError(f"input %{i} is used before it is defined", node=n)
        for o in n.outputs:
            if o in defined:
                raise VerifyError(f"%{o} is defined twice", node=n)
            defined.add(o)
        inferred = infer_types(g, n)
        for o, t in zip(n.outputs, inferred):
            if g.values[o].type != t:
                raise VerifyError(f"output %{o} is typed {g.values[o].type} but the op gives {t}", node=n)
    for o in g.outputs:
        if o not in defined:
            raise VerifyError(f"graph output %{o} is never defined")
    return g
