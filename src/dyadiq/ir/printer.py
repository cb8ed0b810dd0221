# SPDX-License-Identifier: Apache-2.0
"""Print a Graph as MLIR generic syntax in the ``dq`` dialect (``print_mlir``) or as compact text.

MLIR form (parses with the MLIR Python bindings, unregistered dialects allowed, and with ``parser``)::

    "builtin.module"() ({
      "func.func"() <{function_type = (tensor<1x3xf32>) -> tensor<1x4xf32>, sym_name = "main"}> ({
      ^bb0(%x: tensor<1x3xf32>):
        %w = "dq.constant"() {name = "w"} : () -> tensor<4x3xf32>
        %y = "dq.linear"(%x, %w) : (tensor<1x3xf32>, tensor<4x3xf32>) -> tensor<1x4xf32>
        "func.return"(%y) : (tensor<1x4xf32>) -> ()
      }) : () -> ()
    }) {dq.version = 1 : i64} : () -> ()

Constants are referenced by name (their data lives in ``weights.safetensors``); a value's QuantType is
the ``dq.quant`` attribute of its producer (an array, one dictionary per output; ``{}`` = none).
"""
from __future__ import annotations

import hashlib
import math
import struct

from .graph import Graph, Node
from .types import QuantType, TensorType

IR_VERSION = 1
MLIR_ELT = {"f32": "f32", "f64": "f64", "i1": "i1", "i4": "i4", "u4": "ui4", "i8": "i8", "u8": "ui8",
            "i16": "i16", "u16": "ui16", "i32": "i32", "i64": "i64"}


def mlir_type(t: TensorType) -> str:
    return "tensor<" + "".join(f"{d}x" for d in t.shape) + MLIR_ELT[t.dtype] + ">"


def fmt_float(v: float) -> str:
    """An MLIR float literal that parses back to exactly ``v``."""
    if not math.isfinite(v):
        return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]
    s = repr(float(v))
    if "e" in s and "." not in s.split("e")[0]:
        m, e = s.split("e")
        s = f"{m}.0e{e}"
    elif "." not in s and "e" not in s:
        s += ".0"
    return s


def fmt_attr(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v} : i64"
    if isinstance(v, float):
        return f"{fmt_float(v)} : f64"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, tuple):
        if not v:
            return "array<i64>"
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return "array<i64: " + ", ".join(str(x) for x in v) + ">"
        return "array<f64: " + ", ".join(fmt_float(float(x)) for x in v) + ">"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {fmt_attr(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt_attr(x) for x in v) + "]"
    raise TypeError(f"cannot print attribute {v!r}")


def quant_attr(q: QuantType | None) -> dict:
    if q is None:
        return {}
    d = {"bits": q.bits, "signed": q.signed, "scale": tuple(float(s) for s in q.scale),
         "zero_point": tuple(int(z) for z in q.zero_point)}
    if q.axis is not None:
        d["axis"] = q.axis
    return d


def _attr_block(attrs: dict) -> str:
    return (" " + fmt_attr(attrs)) if attrs else ""


def _node_line(g: Graph, n: Node) -> str:
    attrs = dict(n.attrs)
    quants = [g.quant_of(o) for o in n.outputs]
    if any(quants):
        attrs["dq.quant"] = [quant_attr(q) for q in quants]
    outs = ", ".join(f"%{o}" for o in n.outputs)
    ins = ", ".join(f"%{i}" for i in n.inputs)
    in_t = ", ".join(mlir_type(g.type_of(i)) for i in n.inputs)
    out_t = ", ".join(mlir_type(g.type_of(o)) for o in n.outputs)
    out_t = out_t if len(n.outputs) == 1 else f"({out_t})"
    return f'{outs} = "dq.{n.op}"({ins}){_attr_block(attrs)} : ({in_t}) -> {out_t}'


def print_mlir(g: Graph) -> str:
    """The graph as MLIR generic-syntax text (deterministic)."""
    args = ", ".join(f"%{i}: {mlir_type(g.type_of(i))}" for i in g.inputs)
    in_t = ", ".join(mlir_type(g.type_of(i)) for i in g.inputs)
    out_ts = [mlir_type(g.type_of(o)) for o in g.outputs]
    ret_t = out_ts[0] if len(out_ts) == 1 else "(" + ", ".join(out_ts) + ")"
    props = {"function_type": None, "sym_name": g.name}
    if any(g.quant_of(i) for i in g.inputs):
        props["arg_attrs"] = [({"dq.quant": quant_attr(g.quant_of(i))} if g.quant_of(i) else {}) for i in g.inputs]
    prop_s = ", ".join(f"{k} = ({in_t}) -> {ret_t}" if k == "function_type" else f"{k} = {fmt_attr(v)}"
                       for k, v in sorted(props.items()))
    lines = ['"builtin.module"() ({', f'  "func.func"() <{{{prop_s}}}> ({{', f"  ^bb0({args}):"]
    for name in sorted(g.constants):
        attrs = {"name": name}
        if g.quant_of(name):
            attrs["dq.quant"] = [quant_attr(g.quant_of(name))]
        lines.append(f'    %{name} = "dq.constant"(){_attr_block(attrs)} : () -> {mlir_type(g.type_of(name))}')
    lines += [f"    {_node_line(g, n)}" for n in g.nodes]
    rets = ", ".join(f"%{o}" for o in g.outputs)
    lines.append(f'    "func.return"({rets}) : ({", ".join(out_ts)}) -> ()')
    lines += ["  }) : () -> ()", f"}}) {{dq.version = {IR_VERSION} : i64}} : () -> ()", ""]
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, tuple):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


def const_digest(arr) -> str:
    return hashlib.sha256(arr.tobytes()).hexdigest()[:8]


def print_text(g: Graph) -> str:
    """Compact human-readable form used in golden tests and ``dyadiq inspect``."""
    sig = ", ".join(f"%{i}: {g.type_of(i)}" for i in g.inputs)
    lines = [f"graph @{g.name}({sig}) -> ({', '.join('%' + o for o in g.outputs)}) {{"]
    for name in sorted(g.constants):
        q = g.quant_of(name)
        lines.append(f"  %{name} = const {g.type_of(name)} #{const_digest(g.constants[name])}" + (f" q={q}" if q else ""))
    for n in g.nodes:
        attrs = " {" + ", ".join(f"{k}={_short(v)}" for k, v in n.attrs) + "}" if n.attrs else ""
        types = ", ".join(str(g.type_of(o)) for o in n.outputs)
        q = g.quant_of(n.name)
        lines.append(f"  %{', %'.join(n.outputs)} = {n.op}({', '.join('%' + i for i in n.inputs)}){attrs} : {types}"
                     + (f" q={q}" if q else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"
