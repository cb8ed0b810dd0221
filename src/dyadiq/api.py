# SPDX-License-Identifier: Apache-2.0
"""The Python API behind the CLI: load a model by file type, describe it, run it.

``load(path)`` dispatches on the extension (``LOADERS``): ``.onnx`` -> ONNX frontend, ``.pt2`` ->
torch.export frontend, ``.dyq`` -> dyadiq's own format. Frontends are imported only when used, so
``import dyadiq.api`` stays light (no torch, no onnx).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .errors import InputError
from .ir.graph import Graph


def _load_onnx(path: Path, **shapes) -> Graph:
    from .frontend import from_onnx
    return from_onnx(str(path), **shapes)


def _load_pt2(path: Path, **shapes) -> Graph:
    from .frontend import load_pt2
    return load_pt2(str(path), **shapes)


def _load_dyq(path: Path, *, input_shapes=None, sample_shapes=None, notes=None) -> Graph:
    from .ir.serialize import load as load_dyq
    g = load_dyq(path)
    for name, shape in (input_shapes or {}).items():          # a saved graph has static shapes: check only
        if name not in g.inputs:
            raise InputError(f"--input-shape names unknown input {name!r} (graph inputs: {', '.join(g.inputs)})")
        if tuple(int(d) for d in shape) != g.type_of(name).shape:
            raise InputError(f"--input-shape {name}={','.join(map(str, shape))} contradicts {path.name}: "
                             f"input {name!r} has shape {list(g.type_of(name).shape)}")
    return g


LOADERS: dict[str, Callable[..., Graph]] = {".onnx": _load_onnx, ".pt2": _load_pt2, ".dyq": _load_dyq}


def load(path: str | os.PathLike, *, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
         sample_shapes: Mapping[str | None, tuple[int, ...]] | None = None, notes: list | None = None) -> Graph:
    """Load a model file as a Graph; the loader is chosen by extension (see ``LOADERS``).

    ``input_shapes`` ({name: shape}) fixes dynamic dims of a model file's inputs; ``sample_shapes``
    ({name or None: shape without the batch dim}, e.g. from calibration data) fills the dims after the first;
    a dynamic batch dim is 1. What the import decided (an opset conversion, a batch of 1) goes to ``notes``
    when given, else one ``note:`` line each on stderr.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a model file ({', '.join(LOADERS)})")
    loader = LOADERS.get(p.suffix.lower())
    if loader is None:
        raise InputError(f"{p}: unknown model file type {p.suffix or '(none)'!r} "
                         f"(expected one of {', '.join(LOADERS)})")
    return fold_imported_quantization(loader(p, input_shapes=input_shapes, sample_shapes=sample_shapes, notes=notes))


FAKE_QUANT_OPS = frozenset({"quantize_linear", "dequantize_linear", "fake_quant"})


def fold_imported_quantization(g: Graph) -> Graph:
    """A pre-quantized model (ONNX QDQ / QOperator, torch fake-quant, PT2E) with its quantization ops
    folded into QuantTypes on values (``passes.fold_fake_quant``); other graphs unchanged."""
    if not any(n.op in FAKE_QUANT_OPS for n in g.nodes):
        return g
    from .passes.fold_fake_quant import fold_fake_quant
    return fold_fake_quant(g)


def load_artifact(path: str | os.PathLike):
    """A compiled artifact directory (``dyadiq compile``), its manifest verified by its target."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: no such artifact folder")
    try:
        from .targets import load_artifact as _load_artifact
    except ImportError:
        raise InputError(f"{p}: cannot run artifact folders: no compile target is installed "
                         f"in this dyadiq yet") from None
    return _load_artifact(p)


# ---- description ----------------------------------------------------------------------------------
def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)                     # 'inf', '-inf', 'nan': JSON has no literal for them
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _value_dict(g: Graph, name: str) -> dict:
    from .stats import quant_dict
    v = g.values[name]
    return {"name": name, "shape": list(v.type.shape), "dtype": v.type.dtype,
            "quant": quant_dict(v.quant) if v.quant is not None else None}


def describe(g: Graph, *, with_stats: bool = False) -> dict:
    """JSON-ready description: inputs/outputs with types and quant, nodes, constants (hash, not data)."""
    out = {
        "name": g.name,
        "inputs": [_value_dict(g, n) for n in g.inputs],
        "outputs": [_value_dict(g, n) for n in g.outputs],
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                   "attrs": {k: _jsonable(v) for k, v in n.attrs},
                   "output_types": [_value_dict(g, o) for o in n.outputs]} for n in g.nodes],
        "constants": [{**_value_dict(g, k), "sha256": hashlib.sha256(
            np.ascontiguousarray(a).tobytes()).hexdigest()} for k, a in g.constants.items()],
    }
    if with_stats:
        from .stats import graph_stats
        out["stats"] = graph_stats(g)
    return out


# ---- running ---------------------------------------------------------------------------------------
def default_mode(g: Graph) -> str:
    """What ``run`` does without a mode: integer code for a quantized graph (its inputs carry quantization, as
    ``quantize`` leaves them) or an integer one, else float."""
    from .interp.run import is_integer_graph
    quantized = bool(g.inputs) and all(g.quant_of(i) is not None for i in g.inputs)
    return "integer" if quantized or is_integer_graph(g) else "float"


def _check_indices(g: Graph, inputs: Mapping[str, np.ndarray]) -> None:
    """InputError when a graph input used as row indices (``gather``, ``qembed``: token ids) leaves its
    table: float mode would fail inside numpy, and a negative id would wrap there but clip in the integer
    code, so no mode takes them."""
    from .errors import InputError
    for n in g.nodes:
        if n.op == "gather" and n.inputs[1] in g.inputs:
            name, t = n.inputs[1], g.type_of(n.inputs[0])
            size = t.shape[int(n.attr("axis", 0)) % t.rank]
        elif n.op == "qembed" and n.inputs[0] in g.inputs:
            name, size = n.inputs[0], g.type_of(n.inputs[1]).shape[0]
        else:
            continue
        a = np.asarray(inputs.get(name, ()))
        if a.size and a.dtype.kind in "iu" and (int(a.min()) < 0 or int(a.max()) >= size):
            raise InputError(f"input {name!r}: indices must be in [0, {size}) (the rows of the table they "
                             f"select), got values in [{int(a.min())}, {int(a.max())}]")


def run(g: Graph, inputs: Mapping[str, np.ndarray], mode: str | None = None) -> dict[str, np.ndarray]:
    """Run the interpreter; outputs by name. ``mode`` None: ``default_mode(g)``; ``integer`` lowers a quantized
    graph first (``integerize``). Inputs holding k batches of the graph's batch size run batch by batch."""
    from .interp import run as interp_run
    from .interp.run import is_integer_graph
    from .io import check_no_nan, join_batches, split_batches
    mode = mode or default_mode(g)
    if mode == "integer" and not is_integer_graph(g):
        from .passes.integerize import integerize
        g = integerize(g)
    if mode in ("integer", "simulated"):
        for name, a in dict(inputs).items():
            check_no_nan(name, a)
    _check_indices(g, dict(inputs))
    parts = []
    for batch in split_batches(dict(inputs), {n: g.type_of(n) for n in g.inputs}):
        res = interp_run(g, batch, mode=mode)
        parts.append([res] if len(g.outputs) == 1 else list(res))
    return {name: join_batches([p[k] for p in parts]) for k, name in enumerate(g.outputs)}
