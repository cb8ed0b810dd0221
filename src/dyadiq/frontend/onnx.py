# SPDX-License-Identifier: Apache-2.0
"""ONNX -> Graph for float models: ``from_onnx(model, *, name="main", input_shapes=None)``.

- Reads the default domain at opsets 13..28 (versions 22..28 of the supported ops only add element
  types); older models must be converted with ``onnx.version_converter`` first.
- Graph inputs need static dims; ``input_shapes={"x": (1, 3, 224, 224)}`` sets symbolic (or any) dims.
- Initializers and ``Constant`` nodes are constants. A node whose inputs are all constants is evaluated
  at import time (registry kernels or plain numpy), and ``Shape`` of a runtime value is known from its
  static type, so shape arithmetic (``Shape -> Gather -> Concat -> Reshape``) folds away completely.
- Each ONNX op type is one row of ``onnx_ops.CONVERTERS``: a function ``(cx: NodeContext) -> refs`` that
  emits dyadiq ops through ``cx.op``. A ref is a builder value name, or a not-yet-materialized
  constant (``#k``) that becomes a graph constant only when a runtime op reads it.
- Value names come from ONNX (sanitized by the builder); graph input names are kept when valid.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from ..errors import DyadiqError, FrontendError, IRError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node
from ..ir.ops import op_def
from ..ir.types import TensorType, dtype_of

MIN_OPSET, MAX_OPSET = 13, 28
DEFAULT_DOMAINS = ("", "ai.onnx")


def from_onnx(model, *, name: str = "main", input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import a float ONNX model (a path or a ``ModelProto``) as a verified Graph."""
    import onnx

    proto = _load(model) if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(proto, onnx.ModelProto):
        raise FrontendError(f"from_onnx needs a path or an onnx.ModelProto, got {type(proto).__name__}")
    opset = {o.domain: o.version for o in proto.opset_import}
    version = next((opset[d] for d in DEFAULT_DOMAINS if d in opset), None)
    if version is None:
        raise FrontendError("the model imports no default-domain (ai.onnx) opset")
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise FrontendError(f"ONNX opset {version} is not supported (dyadiq reads opsets "
                            f"{MIN_OPSET}..{MAX_OPSET}; "
                            f"convert with onnx.version_converter.convert_version(model, {MIN_OPSET}))")
    return Importer(proto.graph, version, name).run(dict(input_shapes or {}))


def _load(path):
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FrontendError(f"{path}: no such file")
    try:
        proto = onnx.load(path)
        onnx.checker.check_model(path)          # by path: works for models over 2 GB too
    except Exception as e:  # protobuf DecodeError, ValidationError, external-data errors ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrontendError(f"{path}: not a valid ONNX model ({msg})") from None
    return proto


def onnx_dtype(elem_type: int, what: str) -> str:
    """The dyadiq dtype of an ONNX element type, or a FrontendError naming ``what``."""
    import onnx

    try:
        return dtype_of(np.empty(0, onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except (IRError, KeyError, TypeError, ValueError):
        tname = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "undefined"
        raise FrontendError(f"{what}: element type {tname} is not supported") from None


def attributes(node) -> dict:
    """A node's attributes as Python values (strings decoded, tensors as numpy arrays)."""
    import onnx
    from onnx import numpy_helper

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


class Importer:
    """Walks one ONNX graph in order, keeping ONNX name -> ref and the constant arrays."""

    def __init__(self, graph, opset: int, name: str):
        self.graph, self.opset = graph, opset
        self.b = GraphBuilder(name)
        self.env: dict[str, str] = {}
        self.consts: dict[str, np.ndarray] = {}     # constant ref -> array
        self.hints: dict[str, str] = {}             # constant ref -> name hint
        self.placed: dict[str, str] = {}            # constant ref -> builder name once materialized
        self.used: set[str] = set()                 # ONNX names read by a node or a graph output

    # ---- refs ------------------------------------------------------------------------------------
    def constant(self, array, hint: str) -> str:
        ref = f"#{len(self.consts)}"
        self.consts[ref] = np.asarray(array)
        self.hints[ref] = hint
        return ref

    def is_const(self, ref: str) -> bool:
        return ref in self.consts

    def value(self, ref: str) -> str:
        """The builder name of ``ref``, adding a constant to the graph the first time it is read."""
        if ref not in self.consts:
            return ref
        if ref not in self.placed:
            arr = self.consts[ref]
            try:
                dtype_of(arr)
            except IRError:
                raise FrontendError(f"constant {self.hints[ref]!r}: dtype {arr.dtype} is not supported") from None
            self.placed[ref] = self.b.const(self.hints[ref], arr)
        return self.placed[ref]

    def shape(self, ref: str) -> tuple[int, ...]:
        return tuple(self.consts[ref].shape) if ref in self.consts else self.b.type_of(ref).shape

    def np_dtype(self, ref: str) -> np.dtype:
        return self.consts[ref].dtype if ref in self.consts else self.b.type_of(ref).np_dtype

    # ---- import ----------------------------------------------------------------------------------
    def run(self, input_shapes: dict) -> Graph:
        from onnx import numpy_helper

        from .onnx_ops import CONVERTERS

        g = self.graph
        for init in g.initializer:
            try:
                arr = numpy_helper.to_array(init)
            except (ValueError, TypeError, KeyError) as e:     # raw data shorter than its dims, bad type
                raise FrontendError(f"initializer {init.name!r}: unreadable ({e})") from None
            self.env[init.name] = self.constant(arr, init.name)
        inputs = [i for i in g.input if i.name not in self.env]
        unknown = set(input_shapes) - {i.name for i in inputs}
        if unknown:
            raise FrontendError(f"input_shapes names unknown input(s) {sorted(unknown)} "
                                f"(graph inputs: {', '.join(i.name for i in inputs)})")
        for vi in inputs:
            self.env[vi.name] = self.b.input(vi.name, self._input_shape(vi, input_shapes.get(vi.name)),
                                             onnx_dtype(vi.type.tensor_type.elem_type, f"input {vi.name!r}"))
        used = self.used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for node in g.node:
            out0 = next((o for o in node.output if o), node.op_type)
            label = node.name or out0
            conv = (CONVERTERS.get(node.op_type) if node.domain in DEFAULT_DOMAINS     # other domains: rows
                    else CONVERTERS.get(f"{node.domain}.{node.op_type}"))              # "domain.OpType"
            if conv is None:
                op = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
                raise FrontendError(f"unsupported ONNX op {op} (node {label})")
            cx = NodeContext(self, node, label)
            try:
                refs = conv(cx)
            except FrontendError as e:
                if str(e).startswith(cx.prefix):
                    raise
                raise FrontendError(f"{cx.prefix}{e}") from None
            except (DyadiqError, KeyError, TypeError, ValueError, IndexError, ArithmeticError) as e:  # malformed node
                raise FrontendError(f"{cx.prefix}{type(e).__name__}: {e}") from None
            refs = [refs] if isinstance(refs, str) else list(refs)
            for k, o in enumerate(node.output):
                if not o:
                    continue
                if k >= len(refs) or refs[k] is None:
                    if o in used:
                        raise FrontendError(f"{cx.prefix}output {k} ({o}) is not supported")
                    continue
                self.env[o] = refs[k]
        return self.b.build(self._outputs())

    def _input_shape(self, vi, override) -> tuple[int, ...]:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        if override is not None:
            override = tuple(int(d) for d in override)
            if t.HasField("shape") and len(override) != len(dims):
                raise FrontendError(f"input_shapes[{vi.name!r}] = {list(override)} has rank {len(override)}, "
                                    f"the model's input has rank {len(dims)}")
            return override
        if not t.HasField("shape") or any(isinstance(d, str) for d in dims):
            shown = "unknown rank" if not t.HasField("shape") else "[" + ", ".join(map(str, dims)) + "]"
            raise FrontendError(f"input {vi.name!r} has a dynamic shape ({shown}); dyadiq needs static shapes: "
                                f"pass input_shapes={{{vi.name!r}: (...)}} or fix the dims in the model "
                                f"(e.g. onnx.tools.update_model_dims)")
        return tuple(dims)

    def _outputs(self) -> list[str]:
        outs: list[str] = []
        for o in self.graph.output:
            ref = self.env.get(o.name)
            if ref is None:
                raise FrontendError(f"graph output {o.name!r} is never produced")
            if ref in self.consts and ref not in self.placed:
                self.hints[ref] = o.name
            name = self.value(ref)
            if name in self.b.inputs or name in outs:   # give the output a value of its own
                name = self.b.op("identity", [name], o.name)
            outs.append(name)
        return outs


class NodeContext:
    """What a converter sees: the ONNX node, its attributes and inputs, and ``op`` to emit dyadiq ops."""

    def __init__(self, imp: Importer, node, label: str):
        self.imp, self.node, self.opset = imp, node, imp.opset
        self.attrs = attributes(node)
        self.prefix = f"ONNX {node.op_type} node {label}: "

    # ---- inputs ----------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self.node.input)

    def inp(self, i: int) -> str | None:
        """Ref of input ``i``, or None when it is absent or empty (an omitted optional input)."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        name = self.node.input[i]
        if name not in self.imp.env:
            raise self.fail(f"input {name!r} is not defined before use")
        return self.imp.env[name]

    def inputs(self) -> list[str]:
        return [r for r in (self.inp(i) for i in range(self.n_inputs)) if r is not None]

    def const_input(self, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` as a numpy array (None when absent); a runtime value is an error."""
        ref = self.inp(i)
        if ref is None:
            return None
        if not self.imp.is_const(ref):
            raise self.fail(f"{what} must be a constant (it is computed at run time)")
        return self.imp.consts[ref]

    def is_const(self, ref: str) -> bool:
        return self.imp.is_const(ref)

    def hint(self, ref: str) -> str:
        """The name a ref goes by (a constant's ONNX name, or the value's name)."""
        return self.imp.hints.get(ref, ref)

    def array(self, ref: str) -> np.ndarray:
        return self.imp.consts[ref]

    def shape(self, ref: str) -> tuple[int, ...]:
        return self.imp.shape(ref)

    def rank(self, ref: str) -> int:
        return len(self.imp.shape(ref))

    def np_dtype(self, ref: str) -> np.dtype:
        return self.imp.np_dtype(ref)

    def used(self, k: int) -> bool:
        """Whether output ``k`` is read by a later node or is a graph output."""
        return k < len(self.node.output) and self.node.output[k] in self.imp.used

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    # ---- outputs ---------------------------------------------------------------------------------
    def out(self, k: int = 0) -> str:
        """Name hint of output ``k`` (the ONNX output name)."""
        o = self.node.output[k] if k < len(self.node.output) else ""
        return o or f"{self.node.op_type}_{k}"

    def sub(self, suffix: str) -> str:
        """Name hint for an intermediate value of this node."""
        return f"{self.out()}.{suffix}"

    def const(self, array, name: str | None = None) -> str:
        return self.imp.constant(array, name or self.out())

    def op(self, op: str, refs: Sequence[str], name: str | None = None, **attrs) -> str:
        """Emit ``op`` on ``refs``; evaluate it right away when every input is a constant."""
        attrs = {k: v for k, v in attrs.items() if v is not None}
        name = name or self.out()
        d = op_def(op)
        if all(self.imp.is_const(r) for r in refs):
            arrays = [self.imp.consts[r] for r in refs]
            try:
                norm = Node.make(op, (), "x", **attrs).attr_dict
                t = d.infer([TensorType(a.shape, dtype_of(a)) for a in arrays], norm)[0]
                y = np.asarray(d.kernel(arrays, norm)[0])
            except (IRError, ValueError, TypeError, IndexError, KeyError) as e:
                raise self.fail(f"{op}: {e}") from None
            if y.shape != t.shape or y.dtype != t.np_dtype:
                raise self.fail(f"{op} folded to {y.dtype}{list(y.shape)}, expected {t}")
            return self.imp.constant(y, name)
        try:
            return self.imp.b.op(op, [self.imp.value(r) for r in refs], name, **attrs)
        except IRError as e:
            raise self.fail(f"{op}: {e}") from None

    def fail(self, msg: str) -> FrontendError:
        return FrontendError(f"{self.prefix}{msg}")
