# SPDX-License-Identifier: Apache-2.0
"""Constants for ``fold_fake_quant``: quantized constants, the constant rewrites, and the graph rebuild.

- ``DQ(c)`` -> ``scale (c - zp)`` (float32), ``FQ(c)`` -> ``dequantize(quantize(c))``, ``Q(c)`` -> the codes;
  the float constant carries the QuantType and keeps its integer codes for the bias check;
- ``transpose`` / ``reshape`` of a constant -> a constant (the QuantType's axis follows the dim);
- ``matmul(x, W)``, ``W`` a 2-D constant -> ``linear(x, Wᵀ)`` (``Wᵀ`` of ``transpose(W)`` is ``W`` itself);
- ``add(layer(x, W), c)`` (conv2d / linear without bias, read once, not quantized) -> ``layer(x, W, c)``
  when ``c`` is one value per output channel.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.builder import sanitize
from ..ir.graph import Graph, Node, Value
from ..ir.ops import op_def
from ..ir.ops.fake_quant import dequantize_codes, quantize_codes
from ..ir.ops.registry import ops_with
from ..ir.types import QuantType, TensorType, dtype_of

LAYERS = ops_with(weight=True, integer=False)      # conv2d, linear


def _with_axis(q: QuantType | None, axis: int | None) -> QuantType | None:
    if q is None or q.axis is None or axis == q.axis:
        return q
    return QuantType(q.bits, q.signed, q.scale, q.zero_point, axis)


def moved_axis(n: Node, in_shape: tuple[int, ...], axis: int) -> int | None:
    """Where dim ``axis`` of the input of a transpose / reshape ends up (None: split or merged)."""
    if n.op == "transpose":
        return tuple(n.attr("perm")).index(axis)
    out = tuple(n.attr("shape"))
    before = math.prod(in_shape[:axis])
    for k in range(len(out)):
        if math.prod(out[:k]) == before and out[k] == in_shape[axis]:
            return k
    return None


def note(report: list, node: Node | None, kind: str, value: str, max_lsb, message: str) -> None:
    """Append one report entry ``{node, op, kind, value, max_lsb, message}``."""
    report.append({"node": node.name if node is not None else value, "op": node.op if node is not None else "",
                   "kind": kind, "value": value, "max_lsb": None if max_lsb is None else float(max_lsb),
                   "message": message})


class ConstFolder:
    """State shared by the folding steps: values, constants, QuantTypes, integer codes, nodes, report."""

    def __init__(self, g: Graph):
        self.g = g
        self.values: dict[str, Value] = dict(g.values)
        self.consts: dict[str, np.ndarray] = dict(g.constants)
        self.quant: dict[str, QuantType] = {k: v.quant for k, v in g.values.items() if v.quant is not None}
        self.codes: dict[str, np.ndarray] = {}           # quantized constant -> its integer codes
        self.transposed_of: dict[str, str] = {}          # 2-D constant -> the constant it transposes
        self.nodes: list[Node] = []
        self.report: list[dict] = []
        self.orig_uses: dict[str, int] = {}
        for n in g.nodes:
            for i in n.inputs:
                self.orig_uses[i] = self.orig_uses.get(i, 0) + 1
        for o in g.outputs:
            self.orig_uses[o] = self.orig_uses.get(o, 0) + 2

    def fresh(self, hint: str) -> str:
        base = sanitize(hint)
        name, k = base, 1
        while name in self.values or name in self.consts:
            name, k = f"{base}_{k}", k + 1
        return name

    def put_const(self, name: str, arr: np.ndarray, q: QuantType | None, codes: np.ndarray | None = None):
        self.consts[name] = arr
        self.values[name] = Value(name, TensorType(tuple(arr.shape), dtype_of(arr)))
        if q is None:
            self.quant.pop(name, None)
        else:
            self.quant[name] = q
        if codes is not None:
            self.codes[name] = codes

    def quantized_const(self, n: Node, x: str, a: dict, qt: QuantType) -> str:
        """Evaluate a quantization op on constant ``x``; returns the constant that replaces its output."""
        arr = self.consts[x]
        codes = arr.astype(np.int64) if n.op == "dequantize_linear" else quantize_codes(arr, a)
        if n.op == "quantize_linear":
            self.put_const(n.name, codes.astype(self.values[n.name].type.np_dtype), None)
            return n.name
        w = dequantize_codes(codes, a)
        if n.op == "fake_quant":
            w = w.astype(arr.dtype)
        name = n.name
        if self.orig_uses.get(x) == 1:       # the constant's own name (ORT's ``W_quantized`` -> ``W``)
            stem = x[: -len("_quantized")] if x.endswith("_quantized") else x
            name = x if n.op == "fake_quant" else (stem if stem != x and stem not in self.values else n.name)
        self.put_const(name, w, qt, codes)
        return name

    # ---- constant rewrites --------------------------------------------------------------------
    def fold_constants(self) -> None:
        kept = []
        for n in self.nodes:
            if n.op in ("transpose", "reshape") and n.inputs[0] in self.consts and self.move_const(n):
                continue
            if (n.op == "matmul" and n.inputs[1] in self.consts and n.inputs[0] not in self.consts
                    and self.consts[n.inputs[1]].ndim == 2):
                n = Node(("linear"), (n.inputs[0], self.transposed(n.inputs[1])), n.outputs)
            kept.append(n)
        self.nodes = self.add_biases(kept)

    def move_const(self, n: Node) -> bool:
        x = n.inputs[0]
        arr, q = self.consts[x], self.quant.get(x)
        axis = None
        if q is not None and q.axis is not None:
            axis = moved_axis(n, arr.shape, q.axis)
            if axis is None:
                return False
        run = lambda v: op_def(n.op).kernel([v], n.attr_dict)[0]  # noqa: E731
        codes = self.codes.get(x)
        self.put_const(n.name, run(arr), _with_axis(q, axis), None if codes is None else run(codes))
        if n.op == "transpose" and arr.ndim == 2 and tuple(n.attr("perm")) == (1, 0):
            self.transposed_of[n.name] = x
        return True

    def transposed(self, w: str) -> str:
        """A constant holding ``wᵀ`` (the original when ``w`` is itself a transpose)."""
        if w in self.transposed_of:
            return self.transposed_of[w]
        q, codes = self.quant.get(w), self.codes.get(w)
        name = self.fresh(f"{w}.T")
        self.put_const(name, np.ascontiguousarray(self.consts[w].T), _with_axis(q, None if q is None or q.axis is None
                                                                         else 1 - q.axis),
                       None if codes is None else codes.T)
        return name

    def add_biases(self, nodes: list[Node]) -> list[Node]:
        uses: dict[str, int] = {}
        for n in nodes:
            for i in n.inputs:
                uses[i] = uses.get(i, 0) + 1
        where = {n.name: k for k, n in enumerate(nodes)}
        drop: set[int] = set()
        for k, n in enumerate(nodes):
            if n.op != "add":
                continue
            for y, c in (n.inputs, n.inputs[::-1]):
                k_layer = where.get(y)
                layer = nodes[k_layer] if k_layer is not None else None
                if (layer is None or layer.op not in LAYERS or len(layer.inputs) != 2 or uses.get(y) != 1
                        or y in self.g.outputs or y in self.quant or c not in self.consts):
                    continue
                b = self.bias(c, self.values[y].type)
                if b is None:
                    continue
                nodes[k_layer] = Node(layer.op, layer.inputs + (b,), n.outputs, layer.attrs)
                drop.add(k)
                break
        return [n for k, n in enumerate(nodes) if k not in drop]

    def bias(self, c: str, out: TensorType) -> str | None:
        """``c`` as a per-output-channel bias vector of a layer output of type ``out``, if it is one."""
        arr = self.consts[c]
        ch = 1 if out.rank < 2 else (out.shape[1] if out.rank == 4 else out.shape[-1])
        want = [1] * out.rank
        want[1 if out.rank == 4 else out.rank - 1] = ch
        if arr.dtype.kind != "f" or arr.size != ch or arr.ndim > out.rank or \
                tuple(want[out.rank - arr.ndim:]) != arr.shape:
            return None
        if arr.shape == (ch,):
            return c
        q, codes = self.quant.get(c), self.codes.get(c)
        name = self.fresh(c)
        self.put_const(name, arr.reshape(ch), _with_axis(q, None if q is None or q.axis is None else 0),
                       None if codes is None else codes.reshape(ch))
        return name

    # ---- the result ------------------------------------------------------------------------------
    def rename(self, old: str, new: str) -> None:
        sub = lambda names: tuple(new if v == old else v for v in names)  # noqa: E731
        self.nodes = [Node(n.op, sub(n.inputs), sub(n.outputs), n.attrs) for n in self.nodes]
        self.values[new] = Value(new, self.values[old].type)
        if old in self.quant:
            self.quant[new] = self.quant.pop(old)

    def build(self, outputs: list[str]) -> Graph:
        final = []
        for o, r in zip(self.g.outputs, outputs):
            if r != o and (r in self.g.inputs or r in self.consts or r in final or r in self.g.outputs):
                self.nodes.append(Node.make("identity", [r], o))
                self.values[o] = Value(o, self.values[r].type)
                if r in self.quant:
                    self.quant[o] = self.quant[r]
            elif r != o:
                self.rename(r, o)
            final.append(o)
        types = {k: self.values[k].type for k in self.g.inputs}
        used = {i for n in self.nodes for i in n.inputs} | set(final)
        consts = {k: v for k, v in self.consts.items() if k in used}
        types.update({k: TensorType(tuple(v.shape), self.values[k].type.dtype if self.values[k].type.dtype
                                    in ("i4", "u4") else dtype_of(v)) for k, v in consts.items()})
        for n in self.nodes:
            for o, t in zip(n.outputs, op_def(n.op).infer([types[i] for i in n.inputs], n.attr_dict)):
                types[o] = t
        values = {k: Value(k, t, self.quant.get(k)) for k, t in types.items()}
        return Graph(self.g.inputs, tuple(final), tuple(self.nodes), values, consts, self.g.name)
