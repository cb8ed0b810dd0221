# SPDX-License-Identifier: Apache-2.0
"""Frontends: torch.export and ONNX -> float Graph. Wrappers import torch/onnx only when called."""


def from_torch(*a, **k):
    from .torch_export import from_torch as f
    return f(*a, **k)


def from_exported_program(*a, **k):
    from .torch_export import from_exported_program as f
    return f(*a, **k)


def load_pt2(*a, **k):
    from .torch_export import load_pt2 as f
    return f(*a, **k)


def from_onnx(*a, **k):
    from .onnx import from_onnx as f
    return f(*a, **k)


def report_notes(said: list[str], notes: list | None) -> None:
    """Import notes (opset conversion, dims fixed): into ``notes`` when the caller collects them, else one
    ``note:`` line each on stderr."""
    if notes is not None:
        notes.extend(said)
        return
    import sys
    for line in said:
        print(f"note: {line}", file=sys.stderr)
