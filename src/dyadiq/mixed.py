# SPDX-License-Identifier: Apache-2.0
"""``--weight-bits auto``: per-layer sensitivities, the ILP plan under a budget, then quantization with it."""
from __future__ import annotations

from .errors import InputError
from .ir.graph import Graph


def quantize_auto(g: Graph, calib, budgets: dict, *, sensitivity: str = "measured", progress=None, **opts):
    """Choose per-layer weight bits by ILP (``passes.choose_bits.plan_bits``) and quantize with that plan."""
    from .passes.choose_bits import Budget, plan_bits
    from .passes.pipeline import make_options, quantize

    if "latency_ms" in budgets:
        raise InputError("--latency-budget needs a per-layer latency table of the target, "
                         "which this build does not measure yet; use --size-budget or --bops-budget")
    options = make_options(None, **{k: v for k, v in opts.items() if v is not None or k == "equalize"})
    plan, info = plan_bits(g, calib, Budget(**budgets), options=options, method=sensitivity, progress=progress)
    q, report = quantize(g, calib, options, weight_bits=plan, progress=progress)
    report["mixed_precision"] = info
    return q, report
