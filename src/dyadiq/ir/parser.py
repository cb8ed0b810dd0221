# SPDX-License-Identifier: Apache-2.0
"""Parse the MLIR generic text written by ``printer.print_mlir`` back into a Graph.

Constant data is not in the text: pass ``constants`` (name -> array), as ``.dyq`` loading does; a
constant without data is an error. Errors carry line and column.
"""
from __future__ import annotations

import re
import struct
from typing import Mapping

import numpy as np

from ..errors import DyadiqError, ParseError
from .graph import Graph, Node, Value, _freeze_attrs, verify
from .printer import IR_VERSION, MLIR_ELT
from .types import QuantType, TensorType

_ELT = {v: k for k, v in MLIR_ELT.items()}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<tensor>tensor<(?:\d+x)*[a-z]+\d*>)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<val>%[A-Za-z0-9_$.\-]+)
  | (?P<block>\^[A-Za-z0-9_]+)
  | (?P<arrow>->)
  | (?P<hex>0x[0-9A-Fa-f]+)
  | (?P<num>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.$]*)
  | (?P<punct>[(){}\[\]<>,=:])
""", re.VERBOSE)


class _Lexer:
    def __init__(self, text: str):
        self.toks: list[tuple[str, str, int, int]] = []
        pos, line, lstart = 0, 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ParseError(f"unexpected character {text[pos]!r}", line, pos - lstart + 1)
            kind, s = m.lastgroup, m.group()
            if kind != "ws":
                self.toks.append((kind, s, line, pos - lstart + 1))
            nl = s.count("\n")
            if nl:
                line += nl
                lstart = pos + s.rfind("\n") + 1
            pos = m.end()
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str, int, int]:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("eof", "", 0, 0)

    def next(self) -> tuple[str, str, int, int]:
        t = self.peek()
        if t[0] == "eof":
            raise ParseError("unexpected end of input")
        self.i += 1
        return t

    def error(self, msg: str) -> ParseError:
        _, s, line, col = self.peek()
        return ParseError(f"{msg}, found {s!r}" if s else msg, line, col)

    def expect(self, text: str) -> None:
        if self.peek()[1] != text:
            raise self.error(f"expected {text!r}")
        self.i += 1

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.i += 1
            return True
        return False

    def kind(self, kind: str) -> str:
        if self.peek()[0] != kind:
            raise self.error(f"expected {kind}")
        return self.next()[1]


def _tensor_type(tok: str) -> TensorType:
    m = re.fullmatch(r"tensor<((?:\d+x)*)([a-z]+\d*)>", tok)
    dims = tuple(int(d) for d in m.group(1).split("x") if d)
    if m.group(2) not in _ELT:
        raise ParseError(f"unsupported element type {m.group(2)}")
    return TensorType(dims, _ELT[m.group(2)])


def _float(kind: str, s: str) -> float:
    return struct.unpack("<d", struct.pack("<Q", int(s, 16)))[0] if kind == "hex" else float(s)


def _attr(lx: _Lexer):
    kind, s, _, _ = lx.peek()
    if s in ("true", "false"):
        lx.next()
        return s == "true"
    if kind == "str":
        lx.next()
        return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), s[1:-1])
    if kind in ("num", "hex"):
        lx.next()
        lx.expect(":")
        ty = lx.kind("ident")
        if ty == "i64":
            return int(s, 16) if kind == "hex" else int(s)
        if ty == "f64":
            return _float(kind, s)
        raise lx.error(f"unsupported scalar type {ty}")
    if s == "array":
        lx.next()
        lx.expect("<")
        ety = lx.kind("ident")
        vals: list = []
        if lx.accept(":"):
            while True:
                k, v, _, _ = lx.next()
                vals.append(int(v) if ety == "i64" else _float(k, v))
                if not lx.accept(","):
                    break
        lx.expect(">")
        return tuple(vals)
    if s == "{":
        return _dict(lx)
    if s == "[":
        lx.next()
        out = []
        if not lx.accept("]"):
            while True:
                out.append(_attr(lx))
                if lx.accept("]"):
                    break
                lx.expect(",")
        return out
    raise lx.error("expected an attribute value")


def _dict(lx: _Lexer, special: dict | None = None) -> dict:
    lx.expect("{")
    d: dict = {}
    if lx.accept("}"):
        return d
    while True:
        key = lx.next()[1]
        lx.expect("=")
        d[key] = special[key](lx) if special and key in special else _attr(lx)
        if lx.accept("}"):
            return d
        lx.expect(",")


def _types(lx: _Lexer) -> list[TensorType]:
    lx.expect("(")
    out = []
    if not lx.accept(")"):
        while True:
            out.append(_tensor_type(lx.kind("tensor")))
            if lx.accept(")"):
                break
            lx.expect(",")
    return out


def _fn_type(lx: _Lexer):
    ins = _types(lx)
    lx.kind("arrow")
    outs = _types(lx) if lx.peek()[1] == "(" else [_tensor_type(lx.kind("tensor"))]
    return ins, outs


def _names(lx: _Lexer) -> list[str]:
    lx.expect("(")
    out = []
    if not lx.accept(")"):
        while True:
            out.append(lx.kind("val")[1:])
            if lx.accept(")"):
                break
            lx.expect(",")
    return out


def _quant(d: dict) -> QuantType | None:
    if not d:
        return None
    try:
        return QuantType(int(d["bits"]), bool(d["signed"]), tuple(float(x) for x in d["scale"]),
                         tuple(int(x) for x in d["zero_point"]), d.get("axis"))
    except KeyError as e:
        raise ParseError(f"quantization attribute lacks {e}") from None


def parse_mlir(text: str, constants: Mapping[str, np.ndarray] | None = None, *, check: bool = True) -> Graph:
    """Parse printed MLIR back into a Graph, attaching constant data by name."""
    constants = dict(constants or {})
    lx = _Lexer(text)
    lx.expect('"builtin.module"'), lx.expect("("), lx.expect(")"), lx.expect("("), lx.expect("{")
    lx.expect('"func.func"'), lx.expect("("), lx.expect(")"), lx.expect("<")
    props = _dict(lx, {"function_type": _fn_type})
    lx.expect(">"), lx.expect("("), lx.expect("{")
    lx.kind("block")
    lx.expect("(")
    inputs, values = [], {}
    arg_attrs = props.get("arg_attrs", [])
    if not lx.accept(")"):
        while True:
            name = lx.kind("val")[1:]
            lx.expect(":")
            q = _quant(arg_attrs[len(inputs)].get("dq.quant", {})) if len(arg_attrs) > len(inputs) else None
            values[name] = Value(name, _tensor_type(lx.kind("tensor")), q)
            inputs.append(name)
            if lx.accept(")"):
                break
            lx.expect(",")
    lx.expect(":")
    nodes, consts, outputs = [], {}, None
    while True:
        if lx.peek()[1] == '"func.return"':
            lx.next()
            outputs = _names(lx)
            lx.expect(":"), _types(lx), lx.kind("arrow"), _types(lx)
            break
        _, _, line, col = lx.peek()
        outs = [lx.kind("val")[1:]]
        while lx.accept(","):
            outs.append(lx.kind("val")[1:])
        lx.expect("=")
        opname = lx.kind("str")[1:-1]
        if not opname.startswith("dq."):
            raise ParseError(f"op {opname!r} is not in the dq dialect", line, col)
        ins = _names(lx)
        attrs = _dict(lx) if lx.peek()[1] == "{" else {}
        lx.expect(":")
        _, out_types = _fn_type(lx)
        quants = attrs.pop("dq.quant", [{}] * len(outs))
        if len(out_types) != len(outs) or len(quants) != len(outs):
            raise ParseError("result count does not match the type list", line, col)
        for o, t, q in zip(outs, out_types, quants):
            values[o] = Value(o, t, _quant(q))
        if opname == "dq.constant":
            name = attrs.get("name", outs[0])
            if name not in constants:
                raise ParseError(f"constant {name!r} has no data", line, col)
            consts[outs[0]] = np.asarray(constants[name])
        else:
            nodes.append(Node(opname[3:], tuple(ins), tuple(outs), _freeze_attrs(attrs)))
    lx.expect("}"), lx.expect(")"), lx.expect(":"), _types(lx), lx.kind("arrow"), _types(lx)
    lx.expect("}"), lx.expect(")")
    mod_attrs = _dict(lx) if lx.peek()[1] == "{" else {}
    version = mod_attrs.get("dq.version")
    if version != IR_VERSION:
        raise ParseError(f"unsupported dq IR version {version!r} (this dyadiq reads version {IR_VERSION})")
    try:
        g = Graph(tuple(inputs), tuple(outputs), tuple(nodes), values, consts, props.get("sym_name", "main"))
        return verify(g) if check else g
    except DyadiqError:
        raise
    except (ValueError, TypeError) as e:
        raise ParseError(str(e)) from None
