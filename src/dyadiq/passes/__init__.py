# SPDX-License-Identifier: Apache-2.0
"""Graph -> Graph passes. ``PASSES`` is the one table of them, by CLI name (imported lazily)."""
from __future__ import annotations

import importlib
from typing import Callable

# CLI name -> "module:function" (lazy, so `import dyadiq.passes` stays light)
PASSES: dict[str, str] = {
    "canonicalize": "canonicalize:canonicalize",
    "equalize": "equalize:equalize",
    "calibrate": "calibrate:calibrate",
    "quantize-weights": "quantize_weights:quantize_weights",
    "bias-correct": "bias_correct:bias_correct",
    "round-weights": "round_weights:round_weights",
    "fold-fake-quant": "fold_fake_quant:fold_fake_quant",
    "integerize": "integerize:integerize",
}


def get_pass(name: str) -> Callable:
    """The pass function registered under ``name``."""
    from ..errors import PassError
    try:
        mod, fn = PASSES[name].split(":")
    except KeyError:
        raise PassError(f"unknown pass {name!r} (known: {', '.join(sorted(PASSES))})") from None
    return getattr(importlib.import_module(f".{mod}", __name__), fn)
