# SPDX-License-Identifier: Apache-2.0
"""``dyadiq opt MODEL -p PASS[,PASS...] [-o OUT.dyq] [--format text|mlir|relax]``: run graph-to-graph passes
by name and print (or save) the result; the textual test format of the passes (FileCheck-style tests read
its output).

Passes come from ``passes.PASSES``; only those that need nothing but the graph run here (calibration and
weight quantization need data: ``dyadiq quantize``). ``--format relax`` prints the Relax module the cpu
backend would build from the (integer) result, for ``--isa none|avx2|vnni|vnni512`` kernels.
"""
from __future__ import annotations

import argparse
import inspect
import sys

from .errors import InputError

FORMATS = ("text", "mlir", "relax")
ISAS = ("none", "avx2", "vnni", "vnni512")


def opt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .dyq, .onnx or .pt2 model")
    p.add_argument("-p", "--passes", required=True, metavar="PASS[,PASS...]",
                   help="passes in order, by name (see `dyadiq opt --list`-style error for the names)")
    p.add_argument("-o", "--output", default=None, help="write the result as .dyq (default: print it)")
    p.add_argument("--format", choices=FORMATS, default="text", help="what to print (default text)")
    p.add_argument("--isa", choices=ISAS, default="none", help="x86 kernels for --format relax (default none)")


def graph_passes() -> dict[str, object]:
    """The passes of ``PASSES`` that take only a graph (name -> function)."""
    from .passes import PASSES, get_pass
    out = {}
    for name in PASSES:
        fn = get_pass(name)
        params = list(inspect.signature(fn).parameters.values())[1:]
        if all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
               for p in params):
            out[name] = fn
    return out


def run_passes(g, names: list[str]):
    """``g`` through the named graph-only passes, in order."""
    usable = graph_passes()
    for name in names:
        if name not in usable:
            from .passes import PASSES
            why = "needs calibration data or options: use `dyadiq quantize`" if name in PASSES else "unknown pass"
            raise InputError(f"pass {name!r}: {why} (passes that run here: {', '.join(sorted(usable))})")
        g = usable[name](g)
    return g


def cmd_opt(args: argparse.Namespace) -> int:
    from . import api
    from .ir.printer import print_mlir, print_text

    names = [n.strip() for n in args.passes.split(",") if n.strip()]
    if not names:
        raise InputError("-p: give at least one pass")
    g = run_passes(api.load(args.model), names)
    if args.output:
        from .ir.serialize import atomic_write, dump_bytes
        atomic_write(args.output, dump_bytes(g))
        print(f"wrote {args.output} ({len(g.nodes)} nodes)", file=sys.stderr)
        return 0
    if args.format == "relax":
        from .codegen.tvm import to_relax
        text = to_relax(g, isa=None if args.isa == "none" else args.isa).script()
    else:
        text = print_text(g) if args.format == "text" else print_mlir(g)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
