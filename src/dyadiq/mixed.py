# SPDX-License-Identifier: Apache-2.0
"""``--weight-bits auto``: per-layer sensitivities, the ILP plan under a budget, then quantization with it.

Budgets (``choose_bits.Budget``): ``size_bytes`` (packed weight bytes: the compiled manifest's
``weight_bytes_detail["weights"]``), ``bops``, ``latency_ms``, and ``dsp`` / ``lut`` (the FPGA MAC arrays
by the HLS resource model, ``codegen.hls.resources``, at reuse factor ``hls_reuse_factor``). A latency
budget bounds the sum of
per-layer latencies from a table measured on the target (``latency_table.measure``: each layer alone at
each candidate width, cached in a JSON file).
"""
from __future__ import annotations

import os

from .errors import InputError
from .ir.graph import Graph


def quantize_auto(g: Graph, calib, budgets: dict, *, sensitivity: str = "measured", progress=None,
                  target: str = "cpu", latency_cache: str | os.PathLike | None = None, latency_repeats: int = 20,
                  hls_reuse_factor: int = 1, **opts):
    """Choose per-layer weight bits by ILP (``passes.choose_bits.plan_bits``) and quantize with that plan.

    ``budgets``: keys of ``Budget`` (``size_bytes``, ``bops``, ``latency_ms``). With ``latency_ms`` the
    per-layer table is measured on ``target`` (or read from ``latency_cache``, default
    ``latency_table.default_path()``) with ``latency_repeats`` timed runs per entry. Returns
    ``(graph, report)``; ``report["mixed_precision"]`` holds the plan, its predicted costs and the tables.
    """
    from .passes.choose_bits import Budget, plan_bits
    from .passes.pipeline import make_options, quantize

    unknown = sorted(set(budgets) - {"size_bytes", "bops", "latency_ms", "dsp", "lut"})
    if unknown:
        raise InputError(f"unknown budget(s) {unknown} (size_bytes, bops, latency_ms, dsp, lut)")
    if isinstance(latency_repeats, bool) or not isinstance(latency_repeats, int) or latency_repeats < 1:
        raise InputError(f"latency repeats must be a positive int, got {latency_repeats!r}")
    options = make_options(None, **{k: v for k, v in opts.items() if v is not None or k == "equalize"})
    budget = Budget(**budgets)
    from .latency_table import default_path, measure

    def table(prep, widths):                 # called by plan_bits on the graph it plans on
        return measure(prep, widths, act_bits=options.act_bits, per_channel=options.per_channel,
                       target=target, cache=latency_cache, repeats=latency_repeats, progress=progress)
    latency = table if "latency_ms" in budgets else None
    resources = None
    if "dsp" in budgets or "lut" in budgets:
        from .codegen.hls.resources import layer_tables

        def resources(prep, widths):
            return layer_tables(prep, widths, act_bits=options.act_bits, reuse=hls_reuse_factor)
    plan, info = plan_bits(g, calib, budget, options=options, method=sensitivity, progress=progress,
                           latency=latency, resources=resources)
    if latency is not None:
        info["latency_table"] = {"target": target, "repeats": latency_repeats,
                                 "cache": str(latency_cache if latency_cache is not None else default_path())}
    q, report = quantize(g, calib, options, weight_bits=plan, progress=progress)
    report["mixed_precision"] = info
    return q, report
