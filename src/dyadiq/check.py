# SPDX-License-Identifier: Apache-2.0
"""``dyadiq inspect MODEL --check``: per op, does it import, quantize and lower to integers for a target?

Answered before any real work is spent: the import (per ONNX op type, then the whole graph), for each op of
the imported graph whether its output is a quantizable float tensor and whether ``passes.integerize`` has
a lowering for it (``integerize.lowering_status(op)`` when that exists, else "unknown"), and the target's own
refusals (``targets.backend.backend(name).unsupported``) on the integer graph of a quick round-to-nearest,
min/max quantization on two random samples (skipped, and said so, when any op cannot be lowered).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import DyadiqError, FrontendError

OK = "ok"


@dataclass
class OpStatus:
    """One row: an op of the model (IR op after import, ONNX op type when the import failed)."""

    op: str
    count: int
    imports: str = OK
    quantizes: str = OK
    lowers: str = OK
    nodes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.imports == OK and self.quantizes == OK and self.lowers == OK


@dataclass
class CheckReport:
    model: str
    target: str
    rows: list[OpStatus]
    import_error: str | None = None
    target_status: str = "unknown"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.import_error is None and all(r.ok for r in self.rows) and self.target_status == OK

    def to_json(self) -> dict:
        return {"model": self.model, "target": self.target, "ok": self.ok, "import_error": self.import_error,
                "target_status": self.target_status, "notes": self.notes, "ops": [asdict(r) for r in self.rows]}


def lowering(op: str) -> str:
    """Why ``op`` has no integer lowering, ``ok``, or ``unknown`` when integerize cannot say."""
    from .passes import integerize

    status = getattr(integerize, "lowering_status", None)
    if status is None:
        return "unknown (integerize.lowering_status is not available)"
    reason = status(op)
    return OK if reason is None else str(reason)


def _onnx_rows(path: str) -> list[OpStatus]:
    """Per ONNX op type: is there a converter (before importing)?"""
    import onnx

    from .frontend.onnx import DEFAULT_DOMAINS
    from .frontend.onnx_ops import CONVERTERS

    proto = onnx.load(path, load_external_data=False)
    rows: dict[str, OpStatus] = {}
    for n in proto.graph.node:
        key = n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}.{n.op_type}"
        r = rows.setdefault(key, OpStatus(key, 0))
        r.count += 1
        r.nodes.append(n.name or (n.output[0] if n.output else key))
        if (CONVERTERS.get(n.op_type) if n.domain in DEFAULT_DOMAINS else CONVERTERS.get(key)) is None:
            r.imports = "no ONNX converter"
        r.quantizes = r.lowers = "not reached"
    return list(rows.values())


def check_model(path: str, *, target: str = "cpu", input_shapes=None) -> CheckReport:
    """The ``--check`` report for a model file (see the module docstring)."""
    from . import api
    from .ir.ops import op_def

    notes: list[str] = []
    try:
        g = api.load(path, input_shapes=input_shapes, notes=notes)
    except FrontendError as e:                       # InputError (no file, bad --input-shape) is raised
        rows = _onnx_rows(path) if str(path).lower().endswith(".onnx") and Path(path).is_file() else []
        return CheckReport(str(path), target, rows, import_error=" ".join(str(e).split()), notes=notes)
    from .passes.canonicalize import canonicalize
    g = canonicalize(g)             # what quantize sees (BatchNorm folded, transposed convs as convs, ...)
    rows: dict[str, OpStatus] = {}
    for n in g.nodes:
        r = rows.get(n.op)
        if r is None:
            r = rows[n.op] = OpStatus(n.op, 0)
            d = op_def(n.op)
            if d.integer:
                r.quantizes = "already integer"
            r.lowers = OK if d.integer else lowering(n.op)
        r.count += 1
        r.nodes.append(n.name)
        outs = [g.type_of(o) for o in n.outputs]
        # an integer output of an op integerize lowers (argmax indices) passes through as it is
        if r.quantizes == OK and not all(t.is_float for t in outs) and r.lowers != OK:
            r.quantizes = f"output is {outs[0].dtype}: not a quantizable float tensor"
    report = CheckReport(str(path), target, list(rows.values()), notes=notes)
    report.target_status = _target_status(g, target, report)
    return report


def _target_status(g, target: str, report: CheckReport) -> str:
    from .targets.backend import backend

    b = backend(target)                                    # an unknown target is the user's error
    if any(r.lowers != OK for r in report.rows):
        return "not checked: some ops have no integer lowering"
    try:
        from .passes.integerize import integerize
        from .passes.pipeline import quantize

        rng = np.random.default_rng(0)
        calib = {n: (rng.standard_normal((2,) + g.type_of(n).shape[1:]) if g.type_of(n).is_float
                     else rng.integers(0, 2, (2,) + g.type_of(n).shape[1:])).astype(g.type_of(n).np_dtype)
                 for n in g.inputs}
        q, _ = quantize(g, calib if len(g.inputs) > 1 else calib[g.inputs[0]], calib_method="minmax",
                        rounding="nearest", bias_correct=False, equalize=False)
        ig = integerize(q)
    except DyadiqError as e:
        return f"quick integerize failed: {' '.join(str(e).split())}"
    bad = b.unsupported(ig)
    if bad:
        return "unsupported: " + "; ".join(f"{op} ({why})" for op, why in sorted(bad.items()))
    return OK


def print_report(report: CheckReport, console) -> None:
    from rich.table import Table

    t = Table(title=f"{report.model}: support for target {report.target}", title_justify="left")
    for col in ("op", "count", "import", "quantize", "lower to integers"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for r in report.rows:
        t.add_row(r.op, str(r.count), r.imports, r.quantizes, r.lowers)
    console.print(t)
    if report.import_error:
        console.print(f"import failed: {report.import_error}")
    console.print(f"target {report.target}: {report.target_status}")
    console.print("all ops supported" if report.ok else "NOT fully supported")


def cmd_check(args, console) -> int:
    """``inspect --check``: the report as a table (or JSON with ``--format json``); exit 0 either way."""
    from .cli_shapes import parse_input_shapes

    report = check_model(args.model, target=args.target, input_shapes=parse_input_shapes(args.input_shape))
    for line in report.notes:
        print(f"note: {line}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(json.dumps(report.to_json(), indent=1) + "\n")
    else:
        print_report(report, console)
    return 0
