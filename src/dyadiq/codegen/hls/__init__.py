# SPDX-License-Identifier: Apache-2.0
"""Integer graph -> Vitis-HLS style C++ project (``ap_int`` per value, const weight ROMs, pragmas).

``generate(ig, reuse_factor=1, io="parallel", part=...)`` returns an ``HlsProject``: the file texts
(``project``), each value's integer range and C type (``ranges``), each accumulator's exact width
(``ranges``) and the resource / latency model (``resources``). Output is deterministic: the same graph
and options give byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import CodegenError
from ...ir.graph import Graph
from .kernels import EMITTERS, Ctx
from .project import KERNEL_FILES, TOP, emit
from .ranges import analyze, ctype
from .resources import model_resources

DEFAULT_PART = "xcvu13p-flga2577-2-e"
IO_STYLES = ("parallel", "stream")

__all__ = ["DEFAULT_PART", "EMITTERS", "HlsProject", "IO_STYLES", "KERNEL_FILES", "TOP", "generate", "unsupported"]


@dataclass(frozen=True)
class HlsProject:
    """Generated files and what the generator proved about the graph."""

    files: dict[str, str]
    value_types: dict[str, str]          # value -> ap_int<W> / ap_uint<W> / float
    acc_bits: dict[str, int]             # accumulating op -> accumulator width
    resources: dict


def unsupported(ig: Graph) -> dict[str, str]:
    """``{op: reason}`` for each op of ``ig`` without an HLS form."""
    out = {n.op: "no HLS form" for n in ig.nodes if n.op not in EMITTERS}
    for n in ig.nodes:
        if n.op == "gather" and not ig.is_const(n.inputs[1]):
            out["gather"] = "HLS gather needs constant indices"
        if n.op == "pad" and n.attr("mode", "constant") not in ("constant", "edge", "reflect"):
            out["pad"] = f"pad mode {n.attr('mode')!r} has no HLS form"
        if n.op in ("qconv2d", "qlinear") and not ig.is_const(n.inputs[1]):
            out[n.op] = "HLS needs constant weights"
    return out


def generate(ig: Graph, *, reuse_factor: int = 1, io: str = "parallel", part: str = DEFAULT_PART,
             acc_override: dict[str, int] | None = None) -> HlsProject:
    """The HLS project of the integer graph ``ig``; ``acc_override`` (node -> bits) is for tests only."""
    if isinstance(reuse_factor, bool) or not isinstance(reuse_factor, int) or reuse_factor < 1:
        raise CodegenError(f"reuse factor must be a positive int, got {reuse_factor!r}")
    if io not in IO_STYLES:
        raise CodegenError(f"io must be one of {', '.join(IO_STYLES)}, got {io!r}")
    bad = unsupported(ig)
    if bad:
        raise CodegenError("HLS cannot lower: " + "; ".join(f"{k}: {v}" for k, v in sorted(bad.items())))
    ranges, acc = analyze(ig)
    files = emit(ig, ranges, acc, reuse=reuse_factor, io=io, part=part, acc_override=acc_override)
    ctx = Ctx(ig, ranges, acc, {}, reuse_factor, dict(acc_override or {}))
    acc_bits = {n.name: ctx.acc_bits(n) for n in ig.nodes
                if n.op in ("qconv2d", "qlinear", "qmatmul", "qsum", "qavgpool")}
    types = {v: ("float" if r is None else ctype(r)) for v, r in ranges.items() if v not in ig.constants}
    res = model_resources(ig, ranges, reuse_factor, ctx.acc_bits)
    res["io"] = io
    res["part"] = part
    return HlsProject(files, types, acc_bits, res)

