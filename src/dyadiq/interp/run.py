# SPDX-License-Identifier: Apache-2.0
"""Run a Graph with numpy.

- ``float``: every op in float as imported.
- ``simulated``: float ops, but every value that carries a QuantType (inputs, weights, activations) is
  fake-quantized right where it is produced: exactly the rounding the integer code does. It computes in
  float64 (outputs are returned as float32), so the only differences from the integer code are exact
  rounding ties and the 2^-31 approximation of each requantize multiplier, not float32 accumulation error.
- ``integer``: an integerized graph (``dyadiq.integerize(q)``) with exact integer kernels (golden reference).
  The interpreter depends on the IR alone: the caller lowers (``api.run`` and the CLI do it for you).

Inputs: an array (one-input graphs), a sequence, or a name -> array mapping; anything with ``__array__``
(a torch tensor, detached first) is converted, anything else is an InterpError naming its type.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import InterpError
from ..ir.graph import Graph
from ..ir.numerics import fake_quant
from ..ir.ops import op_def
from ..ir.ops.registry import is_weighted

MODES = ("float", "simulated", "integer")


def _as_array(name: str, a) -> np.ndarray:
    """``a`` as a numpy array: arrays, numbers, nested lists, torch tensors (detached, on the CPU)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):           # a torch tensor, without importing torch
        a = a.detach().cpu()
    try:
        return np.asarray(a)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a bad input
        raise InterpError(f"input {name!r}: cannot use a {type(a).__module__}.{type(a).__name__} as an array "
                          f"({e})") from None


def _is_array_like(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__") or hasattr(x, "__dlpack__")


def _bind(g: Graph, inputs) -> dict[str, np.ndarray]:
    if _is_array_like(inputs):
        inputs = [inputs]
    elif not isinstance(inputs, (Mapping, list, tuple)):
        raise InterpError(f"inputs must be an array, a sequence or a dict name -> array, got "
                          f"{type(inputs).__module__}.{type(inputs).__name__}")
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        if len(inputs) != len(g.inputs):
            raise InterpError(f"graph takes {len(g.inputs)} inputs ({', '.join(g.inputs)}), got {len(inputs)}")
        inputs = dict(zip(g.inputs, inputs))
    env: dict[str, np.ndarray] = {}
    for name in g.inputs:
        if name not in inputs:
            raise InterpError(f"missing input {name!r} (graph inputs: {', '.join(g.inputs)})")
        t = g.type_of(name)
        a = _as_array(name, inputs[name])
        if tuple(a.shape) != t.shape:
            raise InterpError(f"input {name!r}: expected shape {list(t.shape)}, got {list(a.shape)}")
        if a.dtype != t.np_dtype:
            if not (t.is_float and a.dtype.kind == "f"):
                raise InterpError(f"input {name!r}: expected dtype {t.dtype}, got {a.dtype}")
            a = a.astype(t.np_dtype)
        env[name] = a
    extra = set(inputs) - set(g.inputs)
    if extra:
        raise InterpError(f"unknown input(s) {sorted(extra)} (graph inputs: {', '.join(g.inputs)})")
    return env


def is_integer_graph(g: Graph) -> bool:
    """Whether every node computes integers (``dequantize`` back to float on exit aside): integerize's output."""
    return all(not g.type_of(o).is_float or n.op == "dequantize" for n in g.nodes for o in n.outputs)


def executed_graph(g: Graph, mode: str) -> Graph:
    """The graph a mode executes: ``g`` itself (``integer`` needs an integerized graph)."""
    if mode not in MODES:
        raise InterpError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if mode == "integer" and not is_integer_graph(g):
        raise InterpError("mode 'integer' runs an integer graph: lower the quantized graph first, "
                          "dyadiq.interp.run(dyadiq.integerize(q), x, mode='integer')")
    return g


def run_all(g: Graph, inputs, mode: str = "float") -> dict[str, np.ndarray]:
    """Every value of the executed graph (inputs, constants, node outputs); in ``integer`` mode these are
    the values of ``executed_graph(g, "integer")``."""
    g = executed_graph(g, mode)
    sim = mode == "simulated"
    env = _bind(g, inputs)
    if sim:
        env = {k: fake_quant(_f64(v), g.quant_of(k)) if g.quant_of(k) and v.dtype.kind == "f" else _f64(v)
               for k, v in env.items()}
    for k, arr in g.constants.items():
        q = g.quant_of(k)
        env[k] = (fake_quant(_f64(arr), q) if q is not None and arr.dtype.kind == "f" else _f64(arr)) if sim else arr
    for n in g.nodes:
        args = [env[i] for i in n.inputs]
        if sim and is_weighted(n.op) and len(args) == 3:
            args[2] = _bias_on_grid(g, n, args[2])
        outs = op_def(n.op).kernel(args, n.attr_dict)
        for o, v in zip(n.outputs, outs):
            q = g.quant_of(o)
            env[o] = fake_quant(v, q) if sim and q is not None and v.dtype.kind == "f" else v
    return env


def _bias_on_grid(g: Graph, n, b: np.ndarray) -> np.ndarray:
    """The bias the integer code adds: ``round(b / (s_x s_w)) * s_x s_w`` (float64), when both are quantized."""
    qx, qw = g.quant_of(n.inputs[0]), g.quant_of(n.inputs[1])
    if qx is None or qw is None or qx.per_channel:
        return b
    step = qx.scale[0] * np.asarray(qw.scale, np.float64)
    return np.rint(b / step) * step


def _f64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) if a.dtype == np.float32 else a


def run(g: Graph, inputs, mode: str = "float") -> list[np.ndarray] | np.ndarray:
    """Graph outputs (a single array when the graph has one output)."""
    g = executed_graph(g, mode)
    env = run_all(g, inputs, "float" if mode == "integer" else mode)
    outs = [env[o].astype(np.float32) if env[o].dtype == np.float64 and g.type_of(o).dtype == "f32" else env[o]
            for o in g.outputs]
    return outs[0] if len(outs) == 1 else outs


def run_batched(g: Graph, data: Sequence[np.ndarray] | np.ndarray, mode: str = "float") -> np.ndarray:
    """Run a batch-1 (or batch-B) graph over the first axis of ``data``, concatenating the outputs."""
    b = g.type_of(g.inputs[0]).shape[0]
    data = np.asarray(data)
    if data.shape[0] % b:
        raise InterpError(f"{data.shape[0]} samples do not split into batches of {b}")
    g = executed_graph(g, mode)
    mode = "float" if mode == "integer" else mode
    outs = [run(g, data[i:i + b], mode) for i in range(0, data.shape[0], b)]
    return np.concatenate(outs, axis=0)
