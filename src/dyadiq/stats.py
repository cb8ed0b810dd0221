# SPDX-License-Identifier: Apache-2.0
"""Graph statistics: op counts, parameters, MACs and weight bytes, per layer and in total.

- **Parameters** are what torch calls ``parameters()``: the constant weights and biases of
  ``conv2d`` / ``linear`` (inputs 1, 2), every constant operand of ``matmul``, the affine ``gamma``,
  ``beta`` of ``batchnorm`` / ``layernorm`` (BatchNorm's running mean and variance are buffers, not
  parameters), the table of a ``gather`` on a float constant (embeddings), and a float constant
  ``add``-ed to a ``matmul`` output (the bias of an ONNX ``MatMul + Add`` linear layer). A constant
  used by several layers (tied weights) counts once in the total.
- **MACs** (multiply-accumulates, batch included, ``O`` = output elements):
  ``conv2d``: ``N*OH*OW*O_ch * (C/groups)*KH*KW = O * w.shape[1]*KH*KW``;
  ``linear``: ``O * in``; ``matmul``: ``batch*M*N*K = O * K``.
- **Weight bytes** of a parameter: ``ceil(elements * bits / 8)`` with ``bits`` its QuantType's bitwidth
  when it is quantized, else the size of its dtype (``i4`` = 4 bits).

``graph_stats(g)`` returns plain JSON-ready data; integer ops are added to ``MAC_RULES`` and
``PARAM_RULES`` next to their float counterparts.
"""
from __future__ import annotations

import math
from typing import Callable

from .ir.graph import Graph, Node

DTYPE_BITS = {"f32": 32, "f64": 64, "i1": 1, "i4": 4, "u4": 4, "i8": 8, "u8": 8, "i16": 16, "u16": 16,
              "i32": 32, "i64": 64}


# ---- MACs per op ----------------------------------------------------------------------------------
def _conv_macs(g: Graph, n: Node) -> int:
    w = g.type_of(n.inputs[1]).shape                               # [O, C/groups, KH, KW]
    return g.type_of(n.outputs[0]).size * w[1] * w[2] * w[3]


def _linear_macs(g: Graph, n: Node) -> int:
    return g.type_of(n.outputs[0]).size * g.type_of(n.inputs[1]).shape[1]    # w is [out, in]


def _matmul_macs(g: Graph, n: Node) -> int:
    return g.type_of(n.outputs[0]).size * g.type_of(n.inputs[0]).shape[-1]   # batch*M*N * K


MAC_RULES: dict[str, Callable[[Graph, Node], int]] = {
    "conv2d": _conv_macs, "linear": _linear_macs, "matmul": _matmul_macs,
    # integer counterparts (operands ordered like the float op: x, w[, b, ...])
    "qconv2d": _conv_macs, "qlinear": _linear_macs, "qmatmul": _matmul_macs,
}


# ---- parameters per op ----------------------------------------------------------------------------
def _const_inputs(positions: tuple[int, ...]) -> Callable[[Graph, Node], list[str]]:
    def rule(g: Graph, n: Node) -> list[str]:
        return [n.inputs[i] for i in positions if i < len(n.inputs) and g.is_const(n.inputs[i])]
    return rule


def _matmul_params(g: Graph, n: Node) -> list[str]:
    return [i for i in n.inputs if g.is_const(i)]


def _gather_params(g: Graph, n: Node) -> list[str]:
    t = n.inputs[0]
    return [t] if g.is_const(t) and g.type_of(t).is_float else []


_BIAS_OF = frozenset({"matmul", "qmatmul"})


def _add_bias_params(g: Graph, n: Node, producers: dict[str, Node]) -> list[str]:
    """``matmul(x, W) + b`` with a float constant ``b``: ``b`` is the layer's bias."""
    if len(n.inputs) != 2:
        return []
    a, b = n.inputs
    for c, other in ((a, b), (b, a)):
        p = producers.get(other)
        if g.is_const(c) and not g.is_const(other) and g.type_of(c).is_float and p is not None \
                and p.op in _BIAS_OF and g.type_of(c).size == g.type_of(other).shape[-1]:
            return [c]
    return []


PARAM_RULES: dict[str, Callable[[Graph, Node], list[str]]] = {
    "conv2d": _const_inputs((1, 2)), "linear": _const_inputs((1, 2)), "matmul": _matmul_params,
    "qconv2d": _const_inputs((1, 2)), "qlinear": _const_inputs((1, 2)), "qmatmul": _matmul_params,
    "batchnorm": _const_inputs((1, 2)), "layernorm": _const_inputs((1, 2)),
    "gather": _gather_params,
}


def param_names(g: Graph, n: Node, producers: dict[str, Node] | None = None) -> list[str]:
    """The constants of node ``n`` that are parameters (see module docstring)."""
    if n.op == "add":
        return _add_bias_params(g, n, producers if producers is not None else g.producers())
    rule = PARAM_RULES.get(n.op)
    return rule(g, n) if rule else []


def macs(g: Graph, n: Node) -> int:
    """Multiply-accumulates of node ``n`` (0 for ops without a MAC rule)."""
    rule = MAC_RULES.get(n.op)
    return int(rule(g, n)) if rule else 0


def value_bits(g: Graph, name: str) -> int:
    """Storage bits per element: the QuantType bitwidth when quantized, else the dtype's size."""
    q = g.quant_of(name)
    return q.bits if q is not None else DTYPE_BITS[g.type_of(name).dtype]


def value_bytes(g: Graph, name: str) -> int:
    return math.ceil(g.type_of(name).size * value_bits(g, name) / 8)


def quant_dict(q) -> dict:
    """JSON form of a QuantType."""
    return {"bits": q.bits, "signed": q.signed, "axis": q.axis,
            "scale": list(q.scale), "zero_point": list(q.zero_point)}


def _weight_quant(g: Graph, n: Node, params: list[str]) -> str:
    """'i8(axis=0, 32 scales)' / 'f32' for the layer's main weight (its first parameter)."""
    if not params:
        return ""
    q = g.quant_of(params[0])
    return str(q) if q is not None else g.type_of(params[0]).dtype


def graph_stats(g: Graph) -> dict:
    """Op counts, per-layer table, per-value quantization and totals (JSON-ready)."""
    producers = g.producers()
    layers, seen = [], set()
    total_params = total_bytes = total_macs = 0
    for n in g.nodes:
        params = param_names(g, n, producers)
        m = macs(g, n)
        if not params and not m:
            continue
        n_params = sum(g.type_of(p).size for p in params)
        n_bytes = sum(value_bytes(g, p) for p in params)
        fresh = [p for p in params if p not in seen]
        seen.update(fresh)
        total_params += sum(g.type_of(p).size for p in fresh)
        total_bytes += sum(value_bytes(g, p) for p in fresh)
        total_macs += m
        wq = g.quant_of(params[0]) if params else None
        layers.append({
            "name": n.name, "op": n.op, "output_shape": list(g.type_of(n.outputs[0]).shape),
            "params": n_params, "macs": m, "weight_bytes": n_bytes,
            "weight_bits": value_bits(g, params[0]) if params else None,
            "weight_quant": quant_dict(wq) if wq is not None else None,
            "weight": _weight_quant(g, n, params),
        })
    quant = [{"value": name, **quant_dict(v.quant)} for name, v in g.values.items() if v.quant is not None]
    return {
        "graph": g.name,
        "ops": dict(sorted(g.count_ops().items())),
        "nodes": len(g.nodes),
        "layers": layers,
        "quant": quant,
        "totals": {"params": total_params, "macs": total_macs, "weight_bytes": total_bytes,
                   "constants": len(g.constants),
                   "constant_bytes": sum(value_bytes(g, c) for c in g.constants)},
    }
