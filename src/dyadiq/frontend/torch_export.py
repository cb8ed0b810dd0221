# SPDX-License-Identifier: Apache-2.0
"""torch.export frontend: ``nn.Module`` / ``ExportedProgram`` / ``.pt2`` file -> float ``Graph``.

The exported graph is walked once, in order:

- user inputs become graph inputs (named as in ``forward``); parameters, buffers and lifted constants
  become constants named after their state-dict key (``_blocks.0._depthwise_conv.weight``);
- an op whose inputs are all known at import time is evaluated with torch (constant folding), except
  the identity-like ops, which pass the constant through so it keeps its name;
- every other op goes through ``torch_ops.TABLE``; an op missing there is a ``FrontendError`` naming
  the op and the node. The pre-dispatch graph is converted as is; in-place ops are first functionalized
  (``run_decompositions({})``), and core-ATen decomposition is tried only when an op is missing;
- each converted value is checked against the shape and dtype torch recorded (``node.meta['val']``);
- unused nodes are dropped and the outputs are named ``output`` (or ``output_0``, ``output_1``, ...).
BatchNorm is kept as ``batchnorm`` (folding it is ``canonicalize``'s job).
"""
from __future__ import annotations

import logging
import os

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.node import map_aggregate

from . import report_notes
from ..errors import DyadiqError, FrontendError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node, Value
from .torch_ops import KEEPS_CONST, TABLE, Const, Ctx, Unavailable, dtype_name

__all__ = ["from_torch", "from_exported_program", "load_pt2"]


def _reason(e: BaseException) -> str:
    """First line of an exception message, shortened."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if lines else type(e).__name__
    return msg if len(msg) <= 240 else msg[:237] + "..."


def from_torch(model: torch.nn.Module, example_inputs, *, name: str = "main") -> Graph:
    """Capture ``model`` in eval mode with ``torch.export`` on ``example_inputs`` and convert it."""
    if not isinstance(model, torch.nn.Module):
        raise FrontendError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    args = tuple(torch.from_numpy(x) if hasattr(x, "__array__") and not isinstance(x, torch.Tensor) else x
                 for x in example_inputs)
    was_training = model.training
    try:
        ep = torch.export.export(model.eval(), args)
    except Exception as e:  # torch raises many exception types for capture failures
        raise FrontendError(f"torch.export failed: {type(e).__name__}: {_reason(e)}") from e
    finally:
        model.train(was_training)
    return from_exported_program(ep, name=name)


def load_pt2(path: str | os.PathLike, *, name: str = "main", **shapes) -> Graph:
    """Load a ``torch.export.save``-d ``.pt2`` file and convert it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FrontendError(f"cannot load {path}: no such file")
    loggers = [logging.getLogger(n) for n in ("torch", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:                      # torch logs a full traceback for a bad file: keep stderr to one line
        lg.setLevel(logging.CRITICAL + 1)
    try:
        ep = torch.export.load(path)
    except Exception as e:
        raise FrontendError(f"cannot load {path}: not a valid torch.export .pt2 file ({_reason(e)})") from e
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
    return from_exported_program(ep, name=name, **shapes)


def from_exported_program(ep: ExportedProgram, *, name: str = "main", input_shapes=None, sample_shapes=None,
                          notes: list | None = None) -> Graph:
    """Convert an ``ExportedProgram`` (pre-dispatch or core ATen) into a verified float Graph.

    Dynamic input dims (``torch.export.Dim``) are fixed as for ONNX (``from_onnx``): ``input_shapes``, then
    ``sample_shapes`` for the dims after the first, then a batch of 1; the program is re-exported with them.
    """
    if not isinstance(ep, ExportedProgram):
        raise FrontendError(f"expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    said: list[str] = []
    ep = _specialize(ep, dict(input_shapes or {}), dict(sample_shapes or {}), said)
    g = _Walker(_prepare(ep), name).run()
    report_notes(said, notes)
    return g


def _specialize(ep: ExportedProgram, input_shapes: dict, sample_shapes: dict, notes: list) -> ExportedProgram:
    """``ep`` re-exported with static input shapes when it has dynamic dims or ``input_shapes`` asks for others."""
    from ..errors import InputError
    from .onnx import resolve_input_shape

    users = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    tensors = [u for u in users if isinstance(vals.get(u), torch.Tensor)]
    unknown = set(input_shapes) - set(tensors)
    if unknown:
        raise InputError(f"--input-shape names unknown input(s) {', '.join(map(repr, sorted(unknown)))} "
                         f"(graph inputs: {', '.join(tensors)})")
    shapes, missing, batched, dynamic = {}, [], [], False
    for u in tensors:
        dims = [int(d) if isinstance(d, int) else str(d) for d in vals[u].shape]
        dynamic |= any(isinstance(d, str) for d in dims)
        sample = sample_shapes.get(u, sample_shapes.get(None) if len(tensors) == 1 else None)
        shape, miss, b = resolve_input_shape(u, dims, input_shapes.get(u), sample)
        shapes[u] = shape
        missing += [miss] if miss else []
        batched += [u] if b else []
    if missing:
        raise InputError("; ".join(missing))
    if not dynamic or len(tensors) != len(users):
        return ep
    if batched:
        notes.append(f"dynamic batch dim of input {', '.join(map(repr, batched))} set to 1 "
                     f"(--input-shape to choose another)")
    args = tuple(torch.zeros(shapes[u], dtype=vals[u].dtype) for u in users)
    try:
        return torch.export.export(ep.module(), args)
    except Exception as e:
        raise FrontendError(f"re-exporting with static shapes {[list(shapes[u]) for u in users]} failed: "
                            f"{type(e).__name__}: {_reason(e)}") from e


# ---- choosing the graph to convert ---------------------------------------------------------------
def _converter(target):
    if isinstance(target, torch._ops.OpOverload):
        return TABLE.get(str(target)) or TABLE.get(str(target.overloadpacket))
    return TABLE.get(target)


def _key(target) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target) if str(target) in KEEPS_CONST else str(target.overloadpacket)
    return target


def _unsupported(ep: ExportedProgram) -> list:
    """Call nodes that depend on a user input and have no converter."""
    users = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    dynamic, bad = set(users), []
    for n in ep.graph.nodes:
        if n.op != "call_function" or not any(i.name in dynamic for i in n.all_input_nodes):
            continue
        dynamic.add(n.name)
        if _converter(n.target) is None:
            bad.append(n)
    return bad


def _prepare(ep: ExportedProgram) -> ExportedProgram:
    """Functionalize in-place ops; decompose to core ATen only when an op has no converter."""
    try:
        if any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
               for n in ep.graph.nodes if n.op == "call_function"):
            ep = ep.run_decompositions({})
        bad = _unsupported(ep)
        if bad:
            try:
                core = ep.run_decompositions()
            except Exception:
                core = None
            if core is None or _unsupported(core):
                n = bad[0]
                raise FrontendError(f"unsupported torch op {n.target} at node {n.name}")
            ep = core
    except DyadiqError:
        raise
    except Exception as e:
        raise FrontendError(f"cannot prepare the exported program: {_reason(e)}") from e
    return ep


# ---- the walk ---------------------------------------------------------------------------------------
def _bind(target, args, kwargs) -> dict:
    """Arguments by schema name, defaults filled in."""
    if not isinstance(target, torch._ops.OpOverload):
        return {"self": args[0], "index": args[1]} if len(args) == 2 else {"args": args}
    out = {}
    for i, arg in enumerate(target._schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out[arg.name] = args[i]
        elif arg.name in kwargs:
            out[arg.name] = kwargs[arg.name]
        else:
            out[arg.name] = arg.default_value if arg.has_default_value() else None
    return out


class _Walker:
    def __init__(self, ep: ExportedProgram, name: str):
        self.ep, self.b, self.env = ep, GraphBuilder(name), {}
        self.specs = {s.arg.name: s for s in ep.graph_signature.input_specs}

    def run(self) -> Graph:
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                self.env[node.name] = self.placeholder(node)
            elif node.op == "call_function":
                self.env[node.name] = self.call(node)
            elif node.op == "output":
                return self.finish(node)
            else:
                self.env[node.name] = Unavailable(f"{node.op} {node.target}")
        raise FrontendError("exported graph has no output")

    def placeholder(self, node):
        spec, val = self.specs.get(node.name), node.meta.get("val")
        if spec is None or spec.kind == InputKind.USER_INPUT:
            if not isinstance(val, torch.Tensor):
                return val                                      # a specialized non-tensor input
            shape = tuple(val.shape)
            if not all(isinstance(d, int) for d in shape):
                raise FrontendError(f"input {node.name} has a dynamic shape {list(shape)}; "
                                    "only static shapes are supported")
            return self.b.input(node.name, shape, dtype_name(val.dtype, f"input {node.name}"))
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            store = self.ep.state_dict if spec.target in self.ep.state_dict else self.ep.constants
            t = store[spec.target]
            t = t.detach() if isinstance(t, torch.Tensor) else t
            if not isinstance(t, torch.Tensor):
                return Unavailable(f"non-tensor constant {spec.target}")
            c = Const(t, spec.target, fqn=True)
            if t.dtype in (torch.float16, torch.bfloat16):
                return c                                        # fails only if it is actually used
            Ctx(self.b, node).value(c)                          # exact FQN names, claimed first
            return c
        return Unavailable(f"{spec.kind.name.lower()} input {node.name}")

    def call(self, node):
        target = node.target
        fn = _converter(target)
        args = map_aggregate(node.args, self._lookup)
        kwargs = map_aggregate(node.kwargs, self._lookup)
        flat = []
        map_aggregate((args, kwargs), lambda v: flat.append(v) or v)
        if not any(isinstance(v, (str, Unavailable)) for v in flat) and _key(target) not in KEEPS_CONST:
            return self.fold(node, args, kwargs)
        if fn is None:
            raise FrontendError(f"unsupported torch op {target} at node {node.name}")
        cx = Ctx(self.b, node)
        try:
            out = fn(cx, _bind(target, args, kwargs))
        except DyadiqError as e:
            if isinstance(e, FrontendError):
                raise
            raise FrontendError(f"cannot convert {target} at node {node.name}: {e}") from e
        except Exception as e:
            raise FrontendError(f"cannot convert {target} at node {node.name}: {type(e).__name__}: {e}") from e
        first = out[0] if isinstance(out, tuple) and out else out
        if isinstance(first, str) and isinstance(cx.meta, torch.Tensor):
            want = (tuple(int(d) for d in cx.meta.shape), cx.out_dtype)
            t = self.b.type_of(first)
            if (t.shape, t.dtype) != want:
                raise FrontendError(f"internal error converting {target} at node {node.name}: got {t}, "
                                    f"torch gives {want[1]}{list(want[0])}")
        return out

    def _lookup(self, v):
        return self.env[v.name] if isinstance(v, torch.fx.Node) else v

    def fold(self, node, args, kwargs):
        """Evaluate an op whose inputs are all constants with torch."""
        unwrap = lambda v: v.tensor if isinstance(v, Const) else v  # noqa: E731
        try:
            with torch.no_grad():
                res = node.target(*map_aggregate(args, unwrap), **map_aggregate(kwargs, unwrap))
        except Exception as e:
            raise FrontendError(f"cannot evaluate constant {node.target} at node {node.name}: {_reason(e)}") from e
        src = args[0] if args else None
        if (isinstance(res, torch.Tensor) and isinstance(src, Const) and src.tensor.dim() == 2 and res.dim() == 2
                and str(getattr(node.target, "overloadpacket", "")) in ("aten.t", "aten.permute", "aten.transpose")
                and tuple(res.shape) == tuple(src.tensor.shape)[::-1]):
            return src.t_of or Const(res, node.name, t_of=src)      # remember Wᵀ so linear can use W itself
        return map_aggregate(res, lambda r: Const(r.detach(), node.name) if isinstance(r, torch.Tensor) else r)

    def finish(self, node) -> Graph:
        results = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
        outs = []
        for spec, res in zip(self.ep.graph_signature.output_specs, results):
            if spec.kind == OutputKind.BUFFER_MUTATION:
                raise FrontendError(f"the model updates buffer {spec.target} in forward (training mode?); "
                                    "export it after model.eval()")
            if spec.kind == OutputKind.USER_INPUT_MUTATION:
                raise FrontendError(f"the model modifies its input {spec.target} in place; that is not supported")
            if spec.kind not in (OutputKind.USER_OUTPUT, OutputKind.LOSS_OUTPUT):
                continue
            v = self._lookup(res)
            if not isinstance(v, (str, Const)):
                raise FrontendError(f"output {len(outs)} ({getattr(res, 'name', res)}) is not a tensor")
            cx = Ctx(self.b, res if isinstance(res, torch.fx.Node) else node)
            name = cx.value(v)
            if name in self.b.inputs or name in self.b.constants or name in outs:
                name = self.b.op("identity", [name], name="output")
            outs.append(name)
        if not outs:
            raise FrontendError("the exported program has no tensor outputs")
        self._prune(outs)
        final = ["output" if len(outs) == 1 else f"output_{i}" for i in range(len(outs))]
        tmp = [self.b.fresh(f"{o}.out") for o in outs]     # two steps, so no output takes another's name
        for old, new in [*zip(outs, tmp), *zip(tmp, final)]:
            self._rename(old, new)
        return self.b.build(final)

    def _prune(self, outs: list[str]) -> None:
        """Drop the nodes no output depends on (all ops are pure)."""
        live, kept = set(outs), []
        for n in reversed(self.b.nodes):
            if live.intersection(n.outputs):
                live.update(n.inputs)
                kept.append(n)
        self.b.nodes = kept[::-1]

    def _rename(self, old: str, new: str) -> None:
        if old == new:
            return
        if new in self.b.values:                       # free the name: move the other value aside
            self._rename(new, self.b.fresh(new))
        self.b.values[new] = Value(new, self.b.values.pop(old).type)
        sub = lambda names: tuple(new if x == old else x for x in names)  # noqa: E731
        self.b.nodes = [Node(n.op, sub(n.inputs), sub(n.outputs), n.attrs) for n in self.b.nodes]
        self.b.inputs = list(sub(self.b.inputs))
        if old in self.b.constants:
            self.b.constants[new] = self.b.constants.pop(old)
