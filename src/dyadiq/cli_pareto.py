# SPDX-License-Identifier: Apache-2.0
"""``dyadiq pareto``: size (or BOPs) vs error of ILP mixed-precision plans, as a PNG and a JSON.

Argument declarations and the runner (``pareto_args``, ``cmd_pareto``), registered in ``cli.COMMANDS``;
the work is ``dyadiq.pareto.pareto``. ``python -m dyadiq.cli_pareto ...`` runs the same command.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def pareto_args(p: argparse.ArgumentParser) -> None:
    from .data import PREPROCESS
    from .pareto import AVG_BITS, KINDS
    p.add_argument("model", help="a float model (.pt2, .onnx) or a .dyq graph")
    p.add_argument("--calib", required=True, help="calibration data (as for quantize); also used for the "
                   "sensitivities")
    p.add_argument("--eval", dest="evaluation", default=None,
                   help="held-out evaluation data (default: the last quarter of --calib)")
    p.add_argument("--preprocess", choices=sorted(PREPROCESS), help="preprocessing for an image folder")
    p.add_argument("-o", "--output", required=True, help="the plot, PARETO.png (written atomically)")
    p.add_argument("--json", default=None, help="the numbers (default: the PNG's name with .json)")
    p.add_argument("--budget", choices=KINDS, default="size", help="budget kind swept (default: size)")
    p.add_argument("--avg-bits", type=_floats, default=AVG_BITS, metavar="A,B,...",
                   help=f"budgets as mean weight widths (default: {','.join(f'{a:g}' for a in AVG_BITS)})")
    p.add_argument("--uniform", type=_ints, default=(8, 6, 4), metavar="B,...",
                   help="uniform widths plotted for reference (default: 8,6,4)")
    p.add_argument("--sensitivity", choices=("hessian", "measured"), default="hessian",
                   help="per-layer sensitivity (default: hessian)")
    p.add_argument("--sensitivity-samples", type=int, default=32, metavar="N",
                   help="calibration samples used for the sensitivities (default: 32)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales (default) or one scale per tensor")
    p.add_argument("--act-bits", type=int, default=8, help="activation width (default 8)")
    p.add_argument("--name", default=None, help="the model's name in the plot and JSON (default: the file name)")
    p.add_argument("--eval-mode", choices=("torch", "interp"), default="torch",
                   help="simulate with torch (fast, default) or the numpy interpreter")
    from .cli_shapes import add_input_shape_arg
    add_input_shape_arg(p)


def cmd_pareto(args: argparse.Namespace) -> int:
    from . import api
    from .cli_quantize import progress_bar
    from .data import load_calib
    from .pareto import pareto
    from .passes.pipeline import FAST_OPTIONS, make_options
    from .passes.sensitivity import make_sensitivity_options

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: the plot must be a .png file")
    js = Path(args.json) if args.json else out.with_suffix(".json")
    for p in {out.parent, js.parent}:
        if not p.exists():
            raise InputError(f"{p}: no such folder")
    if not args.avg_bits:
        raise InputError("--avg-bits needs at least one width")
    from .cli_shapes import calib_sample_shapes, parse_input_shapes
    g = api.load(args.model, input_shapes=parse_input_shapes(args.input_shape),
                 sample_shapes=calib_sample_shapes(args.calib))
    calib = load_calib(args.calib, g, preprocess=args.preprocess)
    evalx = load_calib(args.evaluation, g, preprocess=args.preprocess) if args.evaluation else None
    # a sweep quantizes once per plan: min/max ranges and round-to-nearest (FAST_OPTIONS) keep it quick
    options = make_options(None, per_channel=args.per_channel, act_bits=args.act_bits, **FAST_OPTIONS)
    sopts = make_sensitivity_options(None, samples=args.sensitivity_samples)
    with progress_bar() as progress:
        result = pareto(g, calib, evalx, out, js, avg_bits=args.avg_bits, kind=args.budget,
                        method=args.sensitivity, sens_options=sopts, options=options, uniform=args.uniform,
                        eval_mode=args.eval_mode, progress=progress, name=args.name or Path(args.model).stem)
    ok = [p for p in result["points"] if "error" not in p]
    print(f"wrote {out} and {js} ({len(ok)} plans, {len(result['points']) - len(ok)} infeasible budgets)")
    return 0


HELP = "size/BOPs vs error of ILP mixed-precision plans -> PNG + JSON"


def main(argv=None) -> int:
    """``python -m dyadiq.cli_pareto ARGS``: ``dyadiq pareto ARGS`` (same parsing, errors and exit codes)."""
    from . import cli
    if "pareto" not in cli.COMMANDS:          # until cli.py lists the command itself
        cli.COMMANDS["pareto"] = cli.Command(HELP, pareto_args, cmd_pareto)
    return cli.main(["pareto", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
