# SPDX-License-Identifier: Apache-2.0
"""The ``dyadiq`` command line: parse arguments, call the Python API, print.

Each command is a pair ``(add_arguments, run)`` in the ``COMMANDS`` table; to add one, write both
functions and add a row. Exit codes: 0 success; 2 for any ``DyadiqError`` or usage error, reported as
exactly one ``error: <message>`` line on stderr; 1 with a traceback for anything else (a bug).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import DyadiqError, InputError


class UsageError(InputError):
    """Bad command-line arguments (reported like any other bad input)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("dyadiq")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "unknown"


def _console():
    from rich.console import Console
    # a pipe or a file gets wide, uncolored tables; a terminal gets its own width
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


# ---- inspect ---------------------------------------------------------------------------------------
FORMATS = ("text", "mlir", "json", "tosa")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .pt2, .onnx or .dyq model file")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="print the graph as compact text (default), MLIR generic syntax, JSON or (quantized models) the MLIR TOSA module of its integer graph")
    p.add_argument("--stats", action="store_true",
                   help="op counts, parameters, MACs and weight bytes per layer and in total "
                        "(alone: only the statistics; with --format json: inside the JSON)")
    p.add_argument("--check", action="store_true",
                   help="per op: does it import, quantize and lower to integers for --target (before any work); the "
                        "verdict is the report's last line (JSON: \"ok\"), the exit code is 0 whenever it ran")
    p.add_argument("--target", default="cpu", help="with --check: the target whose kernels are checked (default cpu)")
    from .cli_shapes import add_input_shape_arg
    add_input_shape_arg(p)


def cmd_inspect(args: argparse.Namespace) -> int:
    from . import api
    from .cli_shapes import parse_input_shapes
    from .ir.printer import print_mlir, print_text

    if args.check:
        from .check import cmd_check
        return cmd_check(args, _console())
    g = api.load(args.model, input_shapes=parse_input_shapes(args.input_shape))
    fmt = args.format or ("text" if not args.stats else None)
    if fmt == "json":
        sys.stdout.write(json.dumps(api.describe(g, with_stats=args.stats), indent=1) + "\n")
        return 0
    if fmt is not None:
        if fmt == "tosa":
            from .targets.tosa import module_text
            text = module_text(g)
        else:
            text = print_text(g) if fmt == "text" else print_mlir(g)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.stats:
        from .stats import graph_stats
        print_stats(graph_stats(g), _console())
    return 0


def _n(v: int) -> str:
    return f"{v:,}"


def print_stats(stats: dict, console) -> None:
    """Per-layer table, quantization table, op counts and totals as rich tables."""
    from rich.table import Table

    t = Table(title=f"layers of @{stats['graph']}", title_justify="left")
    for col, just in (("layer", "left"), ("op", "left"), ("output", "left"), ("params", "right"),
                      ("MACs", "right"), ("weight bytes", "right"), ("weight", "left")):
        t.add_column(col, justify=just)
    for L in stats["layers"]:
        t.add_row(L["name"], L["op"], "x".join(map(str, L["output_shape"])), _n(L["params"]), _n(L["macs"]),
                  _n(L["weight_bytes"]), L["weight"])
    console.print(t)
    if stats["quant"]:
        q = Table(title="quantized values", title_justify="left")
        for col in ("value", "type", "axis", "scale", "zero point"):
            q.add_column(col)
        for v in stats["quant"]:
            s, z = v["scale"], v["zero_point"]
            scale = f"{s[0]:.6g}" if len(s) == 1 else f"{min(s):.4g} .. {max(s):.4g} ({len(s)})"
            zp = str(z[0]) if len(set(z)) == 1 else f"{min(z)} .. {max(z)}"
            q.add_row(v["value"], f"{'i' if v['signed'] else 'u'}{v['bits']}",
                      "" if v["axis"] is None else str(v["axis"]), scale, zp)
        console.print(q)
    ops = ", ".join(f"{k} {v}" for k, v in stats["ops"].items())
    console.print(f"ops ({stats['nodes']} nodes): {ops}")
    tot = stats["totals"]
    s = Table(title="totals", title_justify="left", show_header=False)
    s.add_column(justify="left")
    s.add_column(justify="right")
    s.add_row("parameters", _n(tot["params"]))
    s.add_row("MACs", _n(tot["macs"]))
    s.add_row("weight bytes", _n(tot["weight_bytes"]))
    s.add_row("constants (all, bytes)", f"{tot['constants']} ({_n(tot['constant_bytes'])})")
    console.print(s)


# ---- run -------------------------------------------------------------------------------------------
MODES = ("float", "simulated", "integer")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model file (.pt2, .onnx, .dyq) or a compiled artifact folder")
    p.add_argument("--input", "-i", action="append", required=True, metavar="NAME=FILE",
                   help="an input array: NAME=FILE.npy, NAME=FILE.npz, FILE.npz (arrays by input name), "
                        "or FILE.npy for a one-input model; repeat for several inputs")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="interpreter mode for model files (default: integer for a quantized graph, else "
                        "float); the mode that ran is printed on stderr")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="OUT.npy (one output) or OUT.npz (outputs by name); written atomically")
    from .cli_shapes import add_input_shape_arg
    add_input_shape_arg(p)


def cmd_run(args: argparse.Namespace) -> int:
    from . import api
    from .io import check_output_path, load_inputs, save_outputs

    if Path(args.model).is_dir():
        return _run_artifact(args)
    from .cli_shapes import input_sample_shapes, parse_input_shapes
    g = api.load(args.model, input_shapes=parse_input_shapes(args.input_shape),
                 sample_shapes=input_sample_shapes(args.input))
    check_output_path(args.output, len(g.outputs))          # fail before the work, not after
    inputs = load_inputs(args.input, {n: g.type_of(n) for n in g.inputs})
    mode = args.mode or api.default_mode(g)
    outputs = api.run(g, inputs, mode=mode)
    print(f"mode: {mode}" + ("" if args.mode else " (the default for this graph; --mode to choose)"),
          file=sys.stderr)
    path = save_outputs(args.output, outputs)
    desc = ", ".join(f"{k} {a.dtype}{list(a.shape)}" for k, a in outputs.items())
    print(f"wrote {path} ({desc})")
    return 0


def _run_artifact(args: argparse.Namespace) -> int:
    """Hook for compiled artifacts; expects ``art.input_types`` (name -> TensorType), ``art.outputs``
    (names) and ``art.run(inputs_by_name)`` (an array, or a list in output order)."""
    from . import api
    from .io import check_output_path, load_inputs, save_outputs

    art = api.load_artifact(args.model)
    if args.mode not in (None, "integer"):
        raise UsageError(f"{args.model}: a compiled artifact runs integer code; --mode {args.mode} "
                         f"applies to model files")
    check_output_path(args.output, len(art.outputs))
    inputs = load_inputs(args.input, dict(art.input_types))
    res = art.run(inputs)
    arrays = [res] if len(art.outputs) == 1 else list(res)
    print(f"mode: integer (compiled {art.target} artifact)", file=sys.stderr)
    path = save_outputs(args.output, dict(zip(art.outputs, arrays)))
    print(f"wrote {path}")
    return 0


# ---- demo ------------------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=16, help="number of photo crops (default: 16)")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    demo(n=args.n, console=_console())
    return 0


# ---- the command table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its argument declarations and the function that runs it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _lazy(module: str, fn: str) -> Callable:
    def call(arg):
        import importlib
        return getattr(importlib.import_module(f".{module}", __package__), fn)(arg)
    return call


COMMANDS: dict[str, Command] = {
    "inspect": Command("print a model's graph (text, MLIR or JSON) and statistics", _inspect_args, cmd_inspect),
    "quantize": Command("post-training quantization on calibration data -> .dyq",
                        _lazy("cli_quantize", "quantize_args"), _lazy("cli_quantize", "cmd_quantize")),
    "compile": Command("build a deployable artifact (cpu, cuda, hls, tosa) from a quantized .dyq",
                       _lazy("cli_quantize", "compile_args"), _lazy("cli_quantize", "cmd_compile")),
    "run": Command("run a model on .npy/.npz inputs with the interpreter", _run_args, cmd_run),
    "demo": Command("EfficientNet-Lite0 end to end on photo crops", _demo_args, cmd_demo),
    "opt": Command("run graph passes by name and print or save the result (the passes' test format)",
                   _lazy("cli_opt", "opt_args"), _lazy("cli_opt", "cmd_opt")),
    "pareto": Command("size/BOPs vs error of ILP mixed-precision plans -> PNG + JSON",
                      _lazy("cli_pareto", "pareto_args"), _lazy("cli_pareto", "cmd_pareto")),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's arguments are declared (the others' modules, e.g.
    every compile target's options, are not imported)."""
    parser = _Parser(prog="dyadiq", description="dyadiq: a quantizing compiler to integer-only dyadic code")
    parser.add_argument("--version", action="version", version=f"dyadiq {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if only is None or name == only:
            cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _command_of(argv: Sequence[str] | None) -> str | None:
    args = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in COMMANDS else ""          # "" : no command's arguments (help / usage error)


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split()) or "unknown error"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dyadiq`` console script; returns the exit code."""
    try:
        try:
            args = build_parser(_command_of(argv)).parse_args(argv)
        except SystemExit as e:              # --help / --version
            return e.code if isinstance(e.code, int) else 0
        import numpy as np
        with np.errstate(all="ignore"), warnings.catch_warnings():
            # inf / nan in float code is checked where it matters; a warning is one 'warning:' line, and
            # third-party deprecation notices (torch, onnx internals) are not the user's business
            warnings.showwarning = _show_warning
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return int(args._run(args) or 0)
    except DyadiqError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                  # `dyadiq inspect m.dyq | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception:  # noqa: BLE001 - a bug: show it
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
