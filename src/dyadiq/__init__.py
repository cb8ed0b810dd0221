# SPDX-License-Identifier: Apache-2.0
"""dyadiq: a quantizing compiler to integer-only dyadic code.

    import dyadiq
    g = dyadiq.from_torch(model, example_inputs)      # or dyadiq.load("m.onnx")
    q, report = dyadiq.quantize(g, calib, per_channel=True)
    art = dyadiq.compile(q, target="cpu")
    y = art.run(x)                       # bit-exact with dyadiq.interp.run(dyadiq.integerize(q), x, mode="integer")

Heavy dependencies (torch, onnx, tvm) are imported only by the functions that need them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import interp  # noqa: F401 - the numpy interpreter (light: numpy and the IR only)
from .errors import DyadiqError, DyadiqWarning  # noqa: F401


def from_torch(model, example_inputs, **kw):
    """Capture a torch.nn.Module with torch.export as a float Graph (inference semantics: BatchNorm uses its
    running statistics, dropout is off; a model left in train mode gets a warning)."""
    import warnings

    from .frontend.torch_export import from_torch as f
    modules = getattr(model, "modules", None)
    training = [type(m).__name__ for m in modules() if m.training] if callable(modules) else []
    if training:
        warnings.warn(f"the model is in train mode ({', '.join(sorted(set(training))[:4])}); dyadiq captures "
                      f"inference semantics (BatchNorm running statistics, no dropout): call model.eval() first",
                      DyadiqWarning, stacklevel=2)
    return f(model, example_inputs, **kw)


def from_onnx(model, **kw):
    """Import an ONNX model (path or ModelProto) as a Graph."""
    from .frontend.onnx import from_onnx as f
    return f(model, **kw)


def load(path, **kw):
    """Load a model file by extension: .onnx, .pt2 or .dyq (``input_shapes={name: shape}`` for dynamic dims)."""
    from .api import load as f
    return f(path, **kw)


def save(g, path):
    """Save a Graph as a .dyq file."""
    from .ir.serialize import save as f
    return f(g, path)


def quantize(g, calib, options=None, **kw):
    """Post-training quantization: returns (quantized graph, report dict)."""
    from .passes.pipeline import quantize as f
    return f(g, calib, options, **kw)


def integerize(q, **kw):
    """Lower a quantized graph to integer-only dyadic code."""
    from .passes.integerize import integerize as f
    return f(q, **kw)


def compile(q, target: str = "cpu", **kw):  # noqa: A001 - the public verb of a compiler
    """Build a deployable artifact for ``target`` from a quantized or integer graph."""
    from .targets import compile as f
    return f(q, target, **kw)


def load_artifact(path):
    """Load a compiled artifact directory (verifies its manifest first)."""
    from .targets import load_artifact as f
    return f(path)
