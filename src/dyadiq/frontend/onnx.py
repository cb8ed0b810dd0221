# SPDX-License-Identifier: Apache-2.0
"""ONNX -> Graph for float models: ``from_onnx(model, *, name="main", input_shapes=None)``.

- Reads the default domain at opsets 13..28 (versions 22..28 of the supported ops only add element
  types); older models (opset 7..12) are converted to 13 with ``onnx.version_converter`` on import, and a
  note says so (``notes``: a list the caller reads, else one stderr line).
- Graph inputs get static dims: ``input_shapes={"x": (1, 3, 224, 224)}`` sets symbolic (or any) dims and
  must agree with the static ones; ``sample_shapes={"x": (3, 224, 224)}`` (e.g. a calibration array's
  shape[1:], key ``None`` for a one-input model) fills the dims after the first; a dynamic leading
  (batch) dim is 1. A dim still unknown is an ``InputError`` that names it.
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

from . import report_notes
from ..errors import DyadiqError, FrontendError, InputError, IRError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node
from ..ir.ops import op_def
from ..ir.types import TensorType, dtype_of

MIN_OPSET, MAX_OPSET = 13, 28
OLDEST_OPSET = 1                # older opsets are converted to MIN_OPSET (the contract promises 7..12)
DEFAULT_DOMAINS = ("", "ai.onnx")


def from_onnx(model, *, name: str = "main", input_shapes: Mapping[str, Sequence[int]] | None = None,
              sample_shapes: Mapping[str | None, Sequence[int]] | None = None, notes: list | None = None) -> Graph:
    """Import a float ONNX model (a path or a ``ModelProto``) as a verified Graph."""
    import onnx

    proto = _load(model) if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(proto, onnx.ModelProto):
        raise FrontendError(f"from_onnx needs a path or an onnx.ModelProto, got {type(proto).__name__}")
    opset = {o.domain: o.version for o in proto.opset_import}
    version = next((opset[d] for d in DEFAULT_DOMAINS if d in opset), None)
    if version is None:
        raise FrontendError("the model imports no default-domain (ai.onnx) opset")
    said: list[str] = []
    if version < MIN_OPSET:
        proto = upgrade(proto, version)
        said.append(f"converted ONNX opset {version} to {MIN_OPSET} with onnx.version_converter")
        version = MIN_OPSET
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise FrontendError(f"ONNX opset {version} is not supported (dyadiq reads opsets "
                            f"{OLDEST_OPSET}..{MAX_OPSET})")
    imp = Importer(proto.graph, version, name)
    imp.sample_shapes, imp.notes = dict(sample_shapes or {}), said
    g = imp.run(dict(input_shapes or {}))
    report_notes(said, notes)
    return g


def upgrade(proto, version: int):
    """``proto`` converted from opset ``version`` to ``MIN_OPSET`` by ``onnx.version_converter``."""
    from onnx import version_converter

    if version < OLDEST_OPSET:
        raise FrontendError(f"ONNX opset {version} is not supported (dyadiq reads opsets {OLDEST_OPSET}..{MAX_OPSET})")
    names = {i.name for i in proto.graph.input}
    if proto.ir_version < 4 and any(t.name not in names for t in proto.graph.initializer):
        old, proto = proto, type(proto)()            # IR 3 lists initializers as inputs; the converter checks
        proto.CopyFrom(old)
        proto.ir_version = 4
    upsampled = {n.output[0] for n in proto.graph.node if n.output     # opset 10's Resize maps like Upsample
                 and (n.op_type == "Upsample" or (n.op_type == "Resize" and version < 11))}
    try:
        return _coerced_hardmax(_asymmetric(version_converter.convert_version(proto, MIN_OPSET), upsampled))
    except Exception as e:  # the converter raises RuntimeError / ConvertError / ValidationError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrontendError(f"ONNX opset {version}: onnx.version_converter cannot convert the model to opset "
                            f"{MIN_OPSET} ({msg})") from None


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
        try:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, onnx.TensorProto):
                v = numpy_helper.to_array(v)
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode() for s in v]
        except (ValueError, TypeError) as e:      # not UTF-8 text, a tensor shorter than its dims, ...
            raise FrontendError(f"ONNX {node.op_type} node {node.name or '?'}: attribute {a.name!r} is "
                                f"unreadable ({type(e).__name__})") from None
        out[a.name] = v
    return out


def input_dims(vi) -> list | None:
    """The dims of an ONNX graph input: ints, dim_param names, or None (unknown); None for unknown rank."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def resolve_input_shape(name: str, dims: list | None, override, sample) -> tuple[tuple[int, ...], str, bool]:
    """(static shape, message naming the dims still unknown or "", whether a dynamic batch dim became 1).

    ``override`` (``--input-shape``) must have the input's rank and agree with its static dims; ``sample``
    (a calibration sample's shape) fills the dims after the first.
    """
    if override is not None:
        override = tuple(int(d) for d in override)
        if dims is not None:
            if len(override) != len(dims):
                raise InputError(f"--input-shape {name}={','.join(map(str, override))} has rank {len(override)}, "
                                 f"the model's input {name!r} has rank {len(dims)} ({_shown(dims)})")
            bad = [k for k, (d, o) in enumerate(zip(dims, override)) if isinstance(d, int) and d != o]
            if bad:
                raise InputError(f"--input-shape {name}={','.join(map(str, override))} contradicts the model: "
                                 + ", ".join(f"dim {k} is {dims[k]}" for k in bad) + f" ({_shown(dims)})")
        if any(d < 0 for d in override):
            raise InputError(f"--input-shape {name}: dims must be >= 0, got {list(override)}")
        return override, "", False
    if dims is None:
        if sample is not None:
            return (1,) + tuple(int(d) for d in sample), "", True
        return (), (f"input {name!r} has an unknown rank: give --input-shape {name}=D0,D1,..."), False
    dims = list(dims)
    if sample is not None and len(sample) == len(dims) - 1:
        dims[1:] = [int(s) if not isinstance(d, int) else d for d, s in zip(dims[1:], sample)]
    batched = bool(dims) and not isinstance(dims[0], int)
    if batched:
        dims[0] = 1
    unknown = [k for k, d in enumerate(dims) if not isinstance(d, int)]
    if unknown:
        what = ", ".join(f"dim {k}" + (f" ({dims[k]!r})" if dims[k] else "") for k in unknown)
        hint = ",".join(str(d) if isinstance(d, int) else (str(d)[:1].upper() if d and str(d)[:1].isalpha()
                                                             else f"D{k}") for k, d in enumerate(dims))
        verb = "is" if len(unknown) == 1 else "are"
        return (), f"input {name!r} {what} {verb} dynamic: give --input-shape {name}={hint}", batched
    return tuple(dims), "", batched


def _shown(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _asymmetric(proto, outputs: set[str]):
    """Upsample and opset-10 Resize map ``x = y / scale``; the converter's Resize defaults to half_pixel: fix it."""
    from onnx import helper

    for n in proto.graph.node:
        if n.op_type == "Resize" and n.output and n.output[0] in outputs:
            keep = [a for a in n.attribute if a.name not in ("coordinate_transformation_mode", "nearest_mode")]
            del n.attribute[:]
            n.attribute.extend(keep + [helper.make_attribute("coordinate_transformation_mode", "asymmetric"),
                                       helper.make_attribute("nearest_mode", "floor")])
    return proto


def _coerced_hardmax(proto):
    """Hardmax before opset 13 works on the input flattened to 2-D at ``axis`` (the converter keeps the node
    as is): ``Flatten(axis) -> Hardmax(axis=1) -> Reshape(Shape(x))``."""
    from onnx import helper

    nodes = []
    for n in proto.graph.node:
        if n.op_type != "Hardmax" or n.domain not in DEFAULT_DOMAINS:
            nodes.append(n)
            continue
        axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 1)
        x, y, tag = n.input[0], n.output[0], f"{n.output[0]}.coerced"
        nodes += [helper.make_node("Shape", [x], [f"{tag}.shape"]),
                  helper.make_node("Flatten", [x], [f"{tag}.2d"], axis=axis),
                  helper.make_node("Hardmax", [f"{tag}.2d"], [f"{tag}.hardmax"], axis=1),
                  helper.make_node("Reshape", [f"{tag}.hardmax", f"{tag}.shape"], [y], name=n.name)]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


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
        self.sample_shapes: dict = {}               # input name (None: the only input) -> shape[1:]
        self.notes: list[str] = []                  # what the import decided for the user (one line each)

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
            raise InputError(f"--input-shape names unknown input(s) {', '.join(map(repr, sorted(unknown)))} "
                             f"(graph inputs: {', '.join(i.name for i in inputs)})")
        shapes = [resolve_input_shape(vi.name, input_dims(vi), input_shapes.get(vi.name),
                                      self.sample_shapes.get(vi.name, self.sample_shapes.get(None)
                                                             if len(inputs) == 1 else None)) for vi in inputs]
        missing = [m for _, m, _ in shapes if m]
        if missing:
            raise InputError("; ".join(missing))
        batched = [vi.name for vi, (_, _, b) in zip(inputs, shapes) if b]
        if batched:
            self.notes.append(f"dynamic batch dim of input {', '.join(map(repr, batched))} set to 1 "
                              f"(--input-shape to choose another)")
        for vi, (shape, _, _) in zip(inputs, shapes):
            self.env[vi.name] = self.b.input(vi.name, shape,
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
