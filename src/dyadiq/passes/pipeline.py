# SPDX-License-Identifier: Apache-2.0
"""Post-training quantization: the pass order and its options (``quantize``).

    canonicalize -> [equalize] -> calibrate + annotate_activations -> [choose_act_bits]
        -> quantize_weights -> [round_weights (GPTQ) | bias_correct]

``choose_act_bits`` (option ``wide_acts``, a fraction of the BOPs) gives 16 bits to the activations where
an ILP finds them worth it (``choose_act_bits.py``). GPTQ walks the fully quantized model (quantized
activations too), so each layer also compensates the activation rounding before it: EfficientNet-Lite0
W8A8 per-channel, 64 crops: 22.6 dB walking float activations, 23.6 dB walking quantized ones.

Activations are calibrated after equalization (it changes their ranges). Equalization runs by default
only with per-tensor weights: with per-channel weights it can only hurt (it widens layer 2's channel
ranges and shrinks some activation channels under one per-tensor scale; EfficientNet-Lite0 W8A8
per-channel + bias correction: logits SQNR 19.9 dB without it, 14.1 dB with it). With bias correction
the weights get their QuantTypes first and are rounded by ``bias_correct`` (it needs ``W_q - W``). The
result follows the quantized-graph contract of docs/numerics.md (checked before returning) and goes to
``integerize``.
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, verify
from .annotate_quant import annotate_activations, check_contract, check_value_bits
from .calibrate import METHODS, Progress, collect_ranges, prepare_calib
from .quantize_weights import check_weight_bits, quantize_weights, snap_weights, weighted_layers
from .presets import PRESETS, apply_preset


ROUNDINGS = ("nearest", "gptq", "adaround")


@dataclass(frozen=True)
class QuantizeOptions:
    """What ``quantize`` does; validated when built (``PassError`` on a bad value). These defaults are the
    defaults of ``dyadiq.quantize`` and of ``dyadiq quantize`` alike (MSE-fitted ranges, GPTQ rounding);
    ``FAST_OPTIONS`` (min/max ranges, round-to-nearest) is the quick setting for tests and sweeps."""

    per_channel: bool = True
    weight_bits: int | Mapping[str, int] = 8          # one width, or layer name -> width (others 8)
    act_bits: int = 8
    act_bits_by_value: Mapping[str, int] = dataclasses.field(default_factory=dict)  # value -> width (a few at 16)
    wide_acts: float | None = None                    # 16-bit activations by ILP within this relative cost
    calib_method: str = "mse"                         # mse | minmax | percentile | entropy (the CLI's default too)
    equalize: bool | None = None                      # None: only with per-tensor weights
    bias_correct: bool = True
    first_last_bits: int | None = None                # first and last conv/linear at this width
    percentile: float = 99.99                         # for calib_method="percentile"
    rounding: str = "gptq"                            # gptq | nearest | adaround (layer-wise reconstruction)
    seed: int = 0                                     # the Hutchinson probes of wide_acts and auto weight bits
    preset: str = "auto"                              # auto: transformer defaults for attention (passes/presets.py)

    def __post_init__(self):
        wb = self.weight_bits
        if isinstance(wb, str):
            raise PassError(f"weight bits {wb!r}: automatic bit allocation is not available here; "
                            "give a width 2..8 or a dict layer name -> width")
        if isinstance(wb, Mapping):
            for k, v in wb.items():
                check_weight_bits(v, f" for layer %{k}")
            object.__setattr__(self, "weight_bits", MappingProxyType(dict(sorted(wb.items()))))
        else:
            check_weight_bits(wb)
        if isinstance(self.act_bits, bool) or not isinstance(self.act_bits, int) or not 2 <= self.act_bits <= 16:
            raise PassError(f"activation bits must be 2..16, got {self.act_bits!r}")
        object.__setattr__(self, "act_bits_by_value", MappingProxyType(dict(sorted(
            (str(k), v) for k, v in dict(self.act_bits_by_value).items()))))
        if self.calib_method not in METHODS:
            raise PassError(f"unknown calibration method {self.calib_method!r} (choose from {', '.join(METHODS)})")
        if self.first_last_bits is not None:
            check_weight_bits(self.first_last_bits, " (first_last_bits)")
        if self.preset not in PRESETS:
            raise PassError(f"unknown preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        if self.rounding not in ROUNDINGS:
            raise PassError(f"unknown rounding {self.rounding!r} (choose from {', '.join(ROUNDINGS)})")
        if self.wide_acts is not None and (isinstance(self.wide_acts, bool) or not isinstance(
                self.wide_acts, (int, float)) or not 0 <= self.wide_acts <= 1):
            raise PassError(f"wide_acts (extra BOPs fraction for 16-bit activations) must be in [0, 1], "
                            f"got {self.wide_acts!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise PassError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 50 < float(self.percentile) <= 100:
            raise PassError(f"percentile must be in (50, 100], got {self.percentile}")
        for name in ("per_channel", "equalize", "bias_correct"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)) and not (name == "equalize" and v is None):
                raise PassError(f"option {name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (for reports)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.weight_bits, Mapping):
            d["weight_bits"] = dict(self.weight_bits)
        d["act_bits_by_value"] = dict(self.act_bits_by_value)
        return d


FAST_OPTIONS = {"calib_method": "minmax", "rounding": "nearest"}    # quick, and worse: tests, sweeps, latency tables


def make_options(options: QuantizeOptions | None = None, **kw) -> QuantizeOptions:
    """``options`` (default ``QuantizeOptions()``) with the fields in ``kw`` replaced."""
    known = {f.name for f in dataclasses.fields(QuantizeOptions)}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise PassError(f"unknown quantize option(s) {unknown} (known: {', '.join(sorted(known))})")
    base = options if options is not None else QuantizeOptions()
    if not isinstance(base, QuantizeOptions):
        raise PassError(f"options must be a QuantizeOptions, got {type(base).__name__}")
    return dataclasses.replace(base, **kw) if kw else base


def _load(module: str, fn: str) -> Callable:
    """A pass function, imported only when the pipeline needs it."""
    try:
        mod = importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.{module}":
            raise
        raise PassError(f"the {module} pass is not available in this build") from None
    return getattr(mod, fn)


def _widen(g_float: Graph, g: Graph, data, cs, ranges: dict, bits: dict[str, int], opts: QuantizeOptions,
           info: dict, progress: Progress | None) -> Graph:
    """Re-annotate with the 16-bit activations the ILP of ``choose_act_bits`` picks; ``info`` gets the plan."""
    from .choose_act_bits import WIDE, activation_traces, choices, plan_act_bits, relative_cost, total_act_bits, \
        total_bops
    from .quantize_weights import weight_quant
    from ..ir.numerics import quantize as quantize_codes
    codes, scales = {}, {}
    for n in weighted_layers(g):
        w = g.const(n.inputs[1])
        wq = weight_quant(w, bits[n.name], per_channel=opts.per_channel)
        codes[n.inputs[1]], scales[n.inputs[1]] = quantize_codes(w, wq), np.asarray(wq.scale, np.float64)
    acts = [k for k, v in g.values.items() if v.quant is not None and not g.is_const(k)]
    traces = activation_traces(g_float, data, acts, progress=progress, seed=int(opts.seed))
    cands = [c for c in choices(g, traces, weight_bits=bits, codes=codes, scales=scales)
             if c.name not in opts.act_bits_by_value]
    total, tbits = total_bops(g, bits, opts.act_bits), total_act_bits(g)
    chosen = plan_act_bits(cands, total, tbits, float(opts.wide_acts))
    by = {c.name: c for c in cands}
    info["wide"] = {"budget": float(opts.wide_acts), "candidates": len(cands), "chosen": chosen,
                    "cost": sum(relative_cost(by[c], total, tbits) for c in chosen),
                    "extra_bops_fraction": sum(by[c].extra_bops for c in chosen) / total if total else 0.0,
                    "extra_act_bits_fraction": sum(by[c].extra_bits for c in chosen) / tbits,
                    "predicted_kl_gain": sum(by[c].s8 - by[c].s16 for c in chosen),
                    "predicted_kl_all_8bit": sum(c.s8 for c in cands)}
    if not chosen:
        return g
    value_bits = {**opts.act_bits_by_value, **{c: WIDE for c in chosen}}
    if opts.calib_method != "minmax":          # the fitted ranges depend on the width
        ranges.update(collect_ranges(g_float, cs, opts.calib_method, bits=opts.act_bits,
                                     percentile=opts.percentile, values=chosen, value_bits=value_bits))
    return annotate_activations(g_float, ranges, bits=opts.act_bits, value_bits=value_bits)


def layer_bits(g: Graph, opts: QuantizeOptions) -> dict[str, int]:
    """Weight width per conv/linear layer name (``first_last_bits`` overrides the first and last)."""
    layers = [n.name for n in weighted_layers(g)]
    wb = opts.weight_bits
    if isinstance(wb, Mapping):
        unknown = sorted(set(wb) - set(layers))
        if unknown:
            raise PassError(f"weight bits given for unknown layer(s) {unknown} "
                            f"(conv2d/linear layers: {', '.join(layers)})")
        bits = {n: int(wb.get(n, 8)) for n in layers}
    else:
        bits = {n: int(wb) for n in layers}
    if opts.first_last_bits is not None and layers:
        bits[layers[0]] = bits[layers[-1]] = int(opts.first_last_bits)
    return bits


def _layer_report(g: Graph) -> list[dict]:
    out = []
    for n in weighted_layers(g):
        w = n.inputs[1]
        q = g.quant_of(w)
        s = np.asarray(q.scale)
        out.append({"name": n.name, "op": n.op, "weight": w, "bits": q.bits, "per_channel": q.per_channel,
                    "params": int(g.const(w).size), "scale_min": float(s.min()), "scale_max": float(s.max())})
    return out


def quantize(g: Graph, calib, options: QuantizeOptions | None = None, *, progress: Progress | None = None,
             **kw) -> tuple[Graph, dict]:
    """Post-training quantization of a float graph on calibration data; returns (graph, report)."""
    opts = make_options(options, **kw)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, fn: Callable[[], Graph]) -> Graph:
        if progress is not None and name != "calibrate":
            progress(name, 0, 1)
        t = time.perf_counter()
        out = fn()
        times[name] = round(time.perf_counter() - t, 4)
        if progress is not None and name != "calibrate":
            progress(name, 1, 1)
        return out

    cs = prepare_calib(g, calib)
    data = next(iter(cs.arrays.values())) if len(cs.arrays) == 1 else dict(cs.arrays)
    g = stage("canonicalize", lambda: _load("canonicalize", "canonicalize")(g))
    opts, preset = apply_preset(opts, g)
    if opts.equalize or (opts.equalize is None and not opts.per_channel):
        # activations are per-tensor: never let equalization inflate a channel
        g = stage("equalize", lambda: _load("equalize", "equalize")(g, clamp_scales=True))

    ranges: dict = {}

    def calibrate() -> Graph:
        check_value_bits(g, opts.act_bits, opts.act_bits_by_value)
        ranges.update(collect_ranges(g, cs, opts.calib_method, bits=opts.act_bits, percentile=opts.percentile,
                                     progress=progress, value_bits=opts.act_bits_by_value))
        return annotate_activations(g, ranges, bits=opts.act_bits, value_bits=opts.act_bits_by_value)
    g_float, g = g, stage("calibrate", calibrate)
    bits = layer_bits(g, opts)
    wide: dict[str, Any] = {}
    if opts.wide_acts is not None:
        g = stage("choose_act_bits", lambda: _widen(g_float, g, data, cs, ranges, bits, opts, wide, progress))
    # bias correction needs the float weights next to their QuantTypes; it rounds them itself
    reconstruct = opts.rounding != "nearest"      # gptq or adaround: layer-wise reconstruction
    rounding: dict[str, Any] = {}
    g = stage("quantize_weights", lambda: quantize_weights(g, bits=bits, per_channel=opts.per_channel,
                                                           snap=not (opts.bias_correct or reconstruct)))
    if reconstruct:
        # layer-wise reconstruction; its own bias correction replaces bias_correct (which needs float weights)
        g = stage("round_weights", lambda: snap_weights(_load("round_weights", "round_weights")(
            g, data, method=opts.rounding, compensate=True, correct_bias=opts.bias_correct, quantized_acts=True,
            progress=progress, report=rounding)))
    elif opts.bias_correct:
        # layer by layer on the quantized model: each bias also absorbs the mean shift of the activation
        # rounding before it (model_coverage, rounding nearest: mobilenet_v3_large 40.8 -> 43.8 dB)
        g = stage("bias_correct", lambda: snap_weights(
            _load("bias_correct", "bias_correct")(g, data, mode="empirical", quantized_acts=True)))
    verify(g)
    bad = check_contract(g)
    if bad:
        raise PassError("the quantized graph breaks the numerics contract: " + "; ".join(bad[:5])
                        + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
    times["total"] = round(time.perf_counter() - t_all, 4)
    layers = _layer_report(g)
    report = {
        "options": opts.to_dict(),
        "preset": preset,
        "calibration": {"samples": cs.n, "dropped": cs.dropped, "batch": cs.batch, "batches": cs.n_batches,
                        "method": opts.calib_method},
        "layers": layers,
        "weight_bytes": sum(-(-d["params"] * d["bits"] // 8)            # a shared weight counts once
                            for d in {d["weight"]: d for d in layers}.values()),
        "activations": {"bits": opts.act_bits, "bits_by_value": dict(opts.act_bits_by_value), **wide,
                        "quantized": sum(1 for v in g.values.values()
                                         if v.quant is not None and not g.is_const(v.name))},
        "rounding": {"method": opts.rounding,
                     **({"nearest_after_validation": rounding["nearest"]} if reconstruct else {})},
        "timings_s": times,
    }
    return g, report
