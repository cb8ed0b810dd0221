# SPDX-License-Identifier: Apache-2.0
"""``GraphBuilder``: build a Graph op by op with type inference and valid, unique value names.

    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w = b.const("w", np.ones((4, 3, 3, 3), np.float32))
    y = b.op("conv2d", [x, w], pad=(1, 1, 1, 1))
    g = b.build([y])
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from ..errors import IRError
from .graph import Graph, Node, Value, verify
from .ops import op_def
from .types import QuantType, TensorType, dtype_of

_BAD = re.compile(r"[^A-Za-z0-9_$.\-]")


def sanitize(name: str) -> str:
    """A valid identifier close to ``name`` (``/conv/Conv_output_0`` -> ``conv.Conv_output_0``)."""
    s = _BAD.sub("_", name.strip("/").replace("/", ".")) or "v"
    return s if re.match(r"[A-Za-z_$.\-]", s[0]) else "v" + s


class GraphBuilder:
    """Mutable helper that produces an immutable, verified Graph."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[str] = []
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = {}
        self.constants: dict[str, np.ndarray] = {}

    def fresh(self, hint: str) -> str:
        """A new unique valid name derived from ``hint``."""
        base = sanitize(hint)
        name, k = base, 1
        while name in self.values:
            name, k = f"{base}_{k}", k + 1
        return name

    def type_of(self, name: str) -> TensorType:
        return self.values[name].type

    def input(self, name: str, shape: Sequence[int], dtype: str = "f32", quant: QuantType | None = None) -> str:
        n = self.fresh(name)
        self.values[n] = Value(n, TensorType(tuple(int(d) for d in shape), dtype), quant)
        self.inputs.append(n)
        return n

    def const(self, name: str, array: np.ndarray, quant: QuantType | None = None, dtype: str | None = None) -> str:
        arr = np.asarray(array, order="C")
        n = self.fresh(name)
        self.constants[n] = arr
        self.values[n] = Value(n, TensorType(tuple(arr.shape), dtype or dtype_of(arr)), quant)
        return n

    def op(self, op: str, inputs: Iterable[str], name: str | None = None, *, n_outputs: int = 1,
           quant: QuantType | None = None, **attrs) -> str:
        """Append a node; returns its (first) output name."""
        outs = self.op_multi(op, inputs, name, n_outputs=n_outputs, **attrs)
        if quant is not None:
            self.set_quant(outs[0], quant)
        return outs[0]

    def op_multi(self, op: str, inputs: Iterable[str], name: str | None = None, *, n_outputs: int = 1,
                 **attrs) -> list[str]:
        ins = tuple(inputs)
        for i in ins:
            if i not in self.values:
                raise IRError(f"{op}: unknown input %{i}")
        d = op_def(op)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        outs = [self.fresh(name or op)]
        outs += [self.fresh(f"{outs[0]}.{k}") for k in range(1, n_outputs)]
        node = Node.make(op, ins, outs, **attrs)
        types = d.infer([self.type_of(i) for i in ins], node.attr_dict)
        for o, t in zip(outs, types):
            self.values[o] = Value(o, t)
        self.nodes.append(node)
        return outs

    def set_quant(self, name: str, quant: QuantType | None) -> None:
        v = self.values[name]
        self.values[name] = Value(v.name, v.type, quant)

    def rename_output(self, old: str, hint: str) -> str:
        """Give the value ``old`` (just produced) a better name, if free; returns the final name."""
        new = self.fresh(hint)
        if new == old:
            return old
        self.values[new] = Value(new, self.values.pop(old).type, None)
        for k, n in enumerate(self.nodes):
            if old in n.outputs:
                self.nodes[k] = Node(n.op, n.inputs, tuple(new if o == old else o for o in n.outputs), n.attrs)
        return new

    def build(self, outputs: Sequence[str], *, check: bool = True) -> Graph:
        """Freeze into a Graph, dropping unused constants; verified unless ``check=False``."""
        used = {i for n in self.nodes for i in n.inputs} | set(outputs)
        consts = {k: v for k, v in self.constants.items() if k in used}
        live = set(self.inputs) | set(consts) | {o for n in self.nodes for o in n.outputs}
        g = Graph(tuple(self.inputs), tuple(outputs), tuple(self.nodes),
                  {k: v for k, v in self.values.items() if k in live}, consts, self.name)
        return verify(g) if check else g
