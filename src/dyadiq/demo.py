# SPDX-License-Identifier: Apache-2.0
"""``dyadiq demo``: EfficientNet-Lite0 (ImageNet weights) end to end on photo crops.

The demo is a list of steps (``STEPS``) over one ``DemoState``; each step reads what earlier steps
left and adds its own results, so a new stage (quantize, compile) is one function and one row:

1. ``model``   build EfficientNet-Lite0, make ``n`` photo crops, torch's logits as the reference
2. ``capture`` torch.export -> dyadiq Graph
3. ``run``     the numpy interpreter on every crop, for each graph in ``state.graphs``
4. ``report``  per graph: top-1 agreement with torch, max |logit difference|, SQNR of the logits

SQNR = 10 log10(sum(ref^2) / sum((out - ref)^2)) dB over all logits.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class DemoState:
    """What the steps share. ``graphs`` maps a label ("float", later "int8", ...) to (Graph, mode)."""

    n: int
    console: Any
    model: Any = None
    images: np.ndarray | None = None
    reference: np.ndarray | None = None              # torch logits [n, 1000]
    graphs: dict[str, tuple[Any, str]] = field(default_factory=dict)
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, dict] = field(default_factory=dict)
    quantized: Any = None                            # the quantized Graph
    artifact: Any = None                             # the compiled CPU artifact


def step_model(s: DemoState) -> None:
    """EfficientNet-Lite0 with its weights, ``n`` eval crops, torch reference logits."""
    import torch

    from .zoo import efficientnet_lite0, photo_crops

    s.model = efficientnet_lite0()
    s.images = photo_crops(s.n, split="eval")
    with torch.no_grad():
        s.reference = s.model(torch.from_numpy(s.images)).numpy()


def step_capture(s: DemoState) -> None:
    """torch.export the model at batch 1 and import it as a float Graph."""
    import torch

    from .frontend import from_torch

    g = from_torch(s.model, (torch.from_numpy(s.images[:1]),))
    s.graphs["float"] = (g, "float")
    s.console.print(f"  graph: {len(g.nodes)} nodes, {len(g.constants)} constants")


def step_quantize(s: DemoState) -> None:
    """W8A8 per-channel post-training quantization with the default pipeline (MSE-fitted ranges, GPTQ rounding,
    bias correction) on 32 calibration crops (other crops than the test ones)."""
    from . import quantize
    from .zoo import photo_crops

    g = s.graphs["float"][0]
    q, report = quantize(g, photo_crops(32, split="calib"), per_channel=True)
    s.graphs["W8A8 simulated"] = (q, "simulated")
    s.quantized = q
    s.console.print(f"  weight bytes {report['weight_bytes']:,} (float: {4 * sum(L['params'] for L in report['layers']):,})")


def step_compile(s: DemoState) -> None:
    """Lower to integer-only dyadic code and compile it for this CPU with TVM."""
    from . import compile as build

    s.artifact = build(s.quantized, target="cpu")
    s.console.print(f"  target {s.artifact.manifest.get('mcpu', '?')}, "
                    f"{sum(1 for n in s.artifact.graph.nodes)} integer ops")


def step_run_artifact(s: DemoState) -> None:
    """Run the compiled integer artifact on every crop."""
    s.logits["W8A8 cpu artifact"] = np.concatenate([s.artifact.run(s.images[i:i + 1]) for i in range(s.n)])
    s.graphs["W8A8 cpu artifact"] = (None, "integer (TVM)")


def step_run(s: DemoState) -> None:
    """Interpret every graph on every crop (one sample at a time: the graphs have batch 1)."""
    from .interp.run import run_batched

    for label, (g, mode) in s.graphs.items():
        if g is not None:
            s.logits[label] = run_batched(g, s.images, mode=mode)


def _sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((out.astype(np.float64) - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def step_report(s: DemoState) -> None:
    """Top-1 agreement with torch, max |diff| and SQNR for each graph."""
    from rich.table import Table

    ref_top1 = s.reference.argmax(axis=1)
    t = Table(title=f"EfficientNet-Lite0 on {s.n} photo crops, compared with torch", title_justify="left")
    for col in ("graph", "mode", "top-1 agreement", "max |diff|", "SQNR dB"):
        t.add_column(col, justify="left" if col in ("graph", "mode") else "right")
    for label, out in s.logits.items():
        agree = int(np.sum(out.argmax(axis=1) == ref_top1))
        row = {"agreement": agree / s.n, "agree": agree, "max_abs_diff": float(np.max(np.abs(out - s.reference))),
               "sqnr_db": _sqnr_db(s.reference, out)}
        s.summary[label] = row
        t.add_row(label, s.graphs[label][1], f"{agree}/{s.n} ({row['agreement']:.1%})",
                  f"{row['max_abs_diff']:.3g}", f"{row['sqnr_db']:.1f}")
    s.console.print(t)


STEPS: list[tuple[str, Callable[[DemoState], None]]] = [
    ("model", step_model),
    ("capture", step_capture),
    ("quantize", step_quantize),
    ("compile", step_compile),
    ("run", step_run),
    ("run artifact", step_run_artifact),
    ("report", step_report),
]


def demo(n: int = 16, console=None) -> dict[str, dict]:
    """Run every step in order; returns the report per graph label (agreement, max diff, SQNR)."""
    if console is None:
        from rich.console import Console
        console = Console(highlight=False)
    s = DemoState(n=n, console=console)
    for name, step in STEPS:
        t0 = time.perf_counter()
        console.print(f"[bold]{name}[/bold]: {(step.__doc__ or '').strip().replace('``', '')}")
        step(s)
        console.print(f"  done in {time.perf_counter() - t0:.1f} s")
    return s.summary
