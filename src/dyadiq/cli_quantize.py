# SPDX-License-Identifier: Apache-2.0
"""``dyadiq quantize`` and ``dyadiq compile``: argument declarations and runners (registered in cli.py)."""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def _bits(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 2..8 or auto, got {text!r}") from None


class _Given(argparse.Action):
    """Store the value and note that the user chose it (``args.given``: the transformer preset steps aside)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = sorted(set(getattr(namespace, "given", None) or ()) | {self.dest})


def quantize_args(p: argparse.ArgumentParser) -> None:
    from .data import PREPROCESS
    from .passes.calibrate import METHODS
    from .passes.pipeline import ROUNDINGS, QuantizeOptions
    from .passes.presets import PRESETS
    d = QuantizeOptions()                     # one set of defaults: the Python API's
    p.add_argument("model", help="a float model (.pt2, .onnx) or a .dyq graph")
    p.add_argument("-o", "--output", required=True, help="the quantized graph, OUT.dyq (written atomically)")
    p.add_argument("--calib", required=True, help="calibration data: .npy (samples on axis 0), .npz (one array "
                   "per input) or a folder of images (with --preprocess)")
    p.add_argument("--preprocess", choices=sorted(PREPROCESS), help="preprocessing for an image folder")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=d.per_channel,
                   help="per-channel weight scales (default) or one scale per tensor")
    p.add_argument("--weight-bits", type=_bits, default=d.weight_bits, help="weight width 2..8, or auto (needs a budget)")
    p.add_argument("--first-last-bits", type=int, default=d.first_last_bits, help="width of the first and last layer")
    p.add_argument("--act-bits", type=int, default=d.act_bits, help="activation width (default 8)")
    p.add_argument("--calib-method", choices=METHODS, default=d.calib_method, action=_Given,
                   help="activation ranges: mse (default; minimizes each activation's expected squared "
                        "quantization error, about 0.7 dB over minmax on EfficientNet-Lite0 per-channel), "
                        "minmax, percentile or entropy")
    p.add_argument("--equalize", action=argparse.BooleanOptionalAction, default=d.equalize,
                   help="cross-layer equalization (default: only with per-tensor weights)")
    p.add_argument("--bias-correct", action=argparse.BooleanOptionalAction, default=d.bias_correct,
                   help="empirical bias correction (default on)")
    p.add_argument("--rounding", choices=ROUNDINGS, default=d.rounding, action=_Given,
                   help="weight rounding: GPTQ error feedback (default; EfficientNet-Lite0 in about a minute), "
                        "AdaRound-style optimized rounding (slower), or round-to-nearest")
    p.add_argument("--preset", choices=PRESETS, default=d.preset,
                   help="auto (default): a model with attention gets --calib-method minmax --wide-acts 0.3 "
                        "--rounding nearest unless one of those is given (MiniLM/BERT cosine 0.98-0.995 vs "
                        "0.3-0.88 with the general defaults); none: the general defaults for every model")
    p.add_argument("--wide-acts", type=float, default=None, metavar="FRACTION", action=_Given,
                   help="give 16 bits to the activations an ILP picks, within this relative cost "
                        "(mean of the extra BOPs and activation-memory fractions, e.g. 0.03)")
    p.add_argument("--size-budget", type=int, help="with --weight-bits auto: weight bytes budget")
    p.add_argument("--bops-budget", type=float, help="with --weight-bits auto: bit-operations budget")
    p.add_argument("--dsp-budget", type=int, metavar="N",
                   help="with --weight-bits auto: FPGA DSPs of the MAC arrays (HLS resource model, docs/hls.md)")
    p.add_argument("--lut-budget", type=int, metavar="N",
                   help="with --weight-bits auto: FPGA LUTs of the MAC arrays (HLS resource model, docs/hls.md)")
    p.add_argument("--latency-budget", type=float, metavar="MS",
                   help="with --weight-bits auto: latency budget in ms, the sum of per-layer latencies "
                        "measured on the cpu target at each width")
    p.add_argument("--latency-table", metavar="PATH", default=None,
                   help="with --latency-budget: the cache of measured layer latencies "
                        "(default ~/.cache/dyadiq/latency.json)")
    p.add_argument("--latency-repeats", type=int, default=20, metavar="N",
                   help="with --latency-budget: timed runs per layer and width (median; default 20)")
    p.add_argument("--sensitivity", choices=("hessian", "measured"), default="measured",
                   help="with --weight-bits auto: per-layer sensitivity")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the random probes (Hessian traces of --wide-acts and --weight-bits auto); the "
                        "same command and seed write the same bytes")
    p.add_argument("--report", help="write the quantization report as JSON")
    from .cli_shapes import add_input_shape_arg
    add_input_shape_arg(p)


@contextmanager
def progress_bar():
    """A rich progress bar on a TTY (a ``progress(stage, done, total)`` callback), else a no-op."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
    with Progress(TextColumn("{task.description:>16}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)
        yield update


def _check_lowers(q) -> None:
    """Refuse (before writing anything) a quantized graph that ``integerize`` cannot lower: ``compile`` and
    ``run --mode integer`` would only refuse it later (the Python API still returns such graphs, for
    simulated-mode studies)."""
    from .errors import DyadiqError, PassError
    from .passes.integerize import integerize
    try:
        integerize(q)
    except DyadiqError as e:
        hint = ("; --wide-acts FRACTION gives 16 bits only where the integer code stays in int32"
                if "would overflow" in str(e) else "")
        raise PassError(f"the quantized graph has no integer form, so nothing was written: {e}{hint}") from None


def cmd_quantize(args: argparse.Namespace) -> int:
    from . import api
    from .data import load_calib
    from .ir.serialize import atomic_write, dump_bytes
    from .passes.pipeline import quantize

    out = Path(args.output)
    if out.suffix != ".dyq":
        raise InputError(f"{out}: the output must be a .dyq file")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such folder")
    from .cli_shapes import calib_sample_shapes, parse_input_shapes
    notes: list[str] = []
    g = api.load(args.model, input_shapes=parse_input_shapes(args.input_shape),
                 sample_shapes=calib_sample_shapes(args.calib), notes=notes)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    calib = load_calib(args.calib, g, preprocess=args.preprocess)
    opts = dict(per_channel=args.per_channel, act_bits=args.act_bits, calib_method=args.calib_method,
                equalize=args.equalize, bias_correct=args.bias_correct, first_last_bits=args.first_last_bits)
    opts["rounding"] = args.rounding
    opts["seed"] = args.seed
    opts["preset"] = "none" if getattr(args, "given", None) else args.preset
    if args.wide_acts is not None:
        opts["wide_acts"] = args.wide_acts
    budgets = {k: v for k, v in (("size_bytes", args.size_budget), ("bops", args.bops_budget),
                                 ("latency_ms", args.latency_budget), ("dsp", args.dsp_budget),
                                 ("lut", args.lut_budget)) if v is not None}
    with progress_bar() as progress:
        if args.weight_bits == "auto":
            from .mixed import quantize_auto
            if not budgets:
                raise InputError("--weight-bits auto needs --size-budget, --bops-budget, --latency-budget, "
                                 "--dsp-budget or --lut-budget")
            q, report = quantize_auto(g, calib, budgets, sensitivity=args.sensitivity, progress=progress,
                                      latency_cache=args.latency_table, latency_repeats=args.latency_repeats,
                                      **opts)
        else:
            if budgets:
                raise InputError("budgets apply only with --weight-bits auto")
            q, report = quantize(g, calib, weight_bits=args.weight_bits, progress=progress, **opts)
    if report.get("preset") == "transformer":
        print("note: the model has attention: quantized with --calib-method minmax --wide-acts 0.3 --rounding "
              "nearest (give any of these, or --preset none, to choose otherwise)", file=sys.stderr)
    _check_lowers(q)
    data = dump_bytes(q)
    if notes:
        report["import_notes"] = notes
    if args.report:
        atomic_write(args.report, json.dumps(report, indent=1, sort_keys=True, default=str).encode())
    atomic_write(out, data)
    print(f"wrote {out} ({len(q.nodes)} nodes, weight bytes {report.get('weight_bytes', 0):,})")
    return 0


def compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a quantized graph (.dyq)")
    from .targets.backend import BACKENDS, all_options, available
    p.add_argument("--target", required=True, choices=list(BACKENDS),
                   help="; ".join(f"{n}: {b.help}" for n, b in available().items()))
    p.add_argument("-o", "--output", required=True, help="the artifact folder")
    for name, owners in all_options().items():        # each target's own options, None = not given
        o = owners[0][1]
        targets = ", ".join(t for t, _ in owners)
        kw = {"choices": list(o.choices)} if o.choices else {}
        p.add_argument(o.flag, dest=name, default=None, type=o.type, metavar=o.metavar,
                       help=f"[{targets}] {o.help} (default: {o.default})", **kw)


def cmd_compile(args: argparse.Namespace) -> int:
    from . import api
    from .targets import compile as build
    from .targets.backend import all_options, backend, parse_options

    opts = parse_options(backend(args.target), {k: getattr(args, k) for k in all_options()})  # refuse early
    q = api.load(args.model)
    art = build(q, args.target, **opts)
    art.save(args.output)
    print(f"wrote {args.output} (target {args.target})")
    return 0
