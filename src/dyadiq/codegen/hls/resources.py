# SPDX-License-Identifier: Apache-2.0
"""Resource and latency model of the generated HLS code (an estimate, stated as rules; see docs/hls.md).

MAC array of a weighted layer (qconv2d, qlinear; qmatmul with both operands activations):
    n_w    = products per step (conv: O * C/groups * KH * KW; linear: O * K; matmul: N * K)
    steps  = output pixels (conv: N * OH * OW), rows (linear), batch * M (matmul)
    mults  = ceil(n_w / R)                 hardware multipliers for reuse factor R (each used R times/step)
    a, b   = operand widths: a = bits of (x - x_zp), b = weight bits (QuantType) or bits of (w - w_zp)
Multiplier mapping rule (Vivado's default for small products):
    min(a, b) <= 4             -> LUTs:  a * b LUT6 for the product + acc_bits for its adder, 0 DSP
    otherwise                   -> DSP48E2 (27 x 18 signed): ceil(max(a,b) / 27) * ceil(min(a,b) / 18) DSPs,
                                   the accumulation in the DSP's post-adder (0 LUT)
Weight memory: n_weights * b bits. R = 1: the weights are constants folded into the multipliers (no
memory). R > 1: ``mults`` banks of R words of b bits; a bank of >= 64 words is BRAM18 (ceil(R * b / 18432)
each), a smaller one LUTRAM (ceil(R / 64) * b LUTs).
Cycles: the layer accepts a new input every ``ii = steps * R`` cycles; its latency is
    ii + ceil(log2(max(1, ceil(K / R)))) + 3        (K = reduction length: adder tree, multiply, requantize)
Element-wise and data-movement ops are pipelined over N (rank <= 2) or N, C (NCHW) with the rest unrolled:
``ii = elements / lanes`` (lanes: a row, or an H x W plane, per cycle), ``latency = ii + 2``; window ops
(maxpool, qavgpool, qsum, gather) produce one output per cycle (times R for the sums). A requantize or qadd
needs one ``(acc - zp) * m`` multiplier per operand and lane, by the same mapping rule with ``m`` 32 bits.
Model: latency = sum of the op latencies; II = max of the op IIs (io stream: DATAFLOW overlaps the ops;
io parallel: the top is pipelined the same way by Vitis' default dataflow of sequential functions).

``--dsp-budget`` / ``--lut-budget`` bound the MAC arrays (``mac_dsp``, ``mac_lut``): the part that the
weight widths choose. The requantize multipliers and the data movement are reported in the totals.
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.graph import Graph
from .kernels import lanes
from .ranges import signed_width

DSP_A, DSP_B = 27, 18
LUT_THRESHOLD = 4


def mult_cost(a: int, b: int) -> tuple[int, int]:
    """(DSPs, LUTs) of one a x b multiplier, without its adder (module docstring)."""
    lo, hi = min(a, b), max(a, b)
    if lo <= LUT_THRESHOLD:
        return 0, a * b
    return math.ceil(hi / DSP_A) * math.ceil(lo / DSP_B), 0


def mac_array(n_w: int, steps: int, k: int, a: int, b: int, acc_bits: int, reuse: int,
              n_weights: int | None = None) -> dict:
    """Resources and cycles of one weighted layer's MAC array."""
    mults = -(-n_w // reuse)
    dsp, lut = mult_cost(a, b)
    lut_total = mults * (lut + acc_bits) if dsp == 0 else 0
    nw = n_w if n_weights is None else n_weights
    bram = lutram = 0
    if reuse > 1 and n_weights is not None:
        if reuse >= 64:
            bram = mults * math.ceil(reuse * b / 18432)
        else:
            lutram = mults * math.ceil(reuse / 64) * b
    ii = steps * reuse
    return {"multipliers": mults, "operand_bits": [a, b], "maps_to": "lut" if dsp == 0 else "dsp",
            "dsp": mults * dsp, "lut": lut_total + lutram, "weight_bits_total": nw * b,
            "weight_memory": "logic" if reuse == 1 else ("bram" if bram else "lutram"), "bram18": bram,
            "acc_bits": acc_bits, "ii": ii,
            "latency": ii + math.ceil(math.log2(max(1, -(-k // reuse)))) + 3}


def _weight_bits(ig: Graph, w: str) -> int:
    q = ig.quant_of(w)
    if q is not None:
        return q.bits
    return signed_width(int(ig.const(w).min()), int(ig.const(w).max()))


def model_resources(ig: Graph, ranges: dict, reuse: int, acc_bits) -> dict:
    """Per op and total resources / cycles of the integer graph ``ig`` (``acc_bits(node) -> int``)."""
    layers = []
    for n in ig.nodes:
        a = n.attr_dict
        y = ig.type_of(n.name)
        row = {"name": n.name, "op": n.op}
        if n.op in ("qconv2d", "qlinear", "qmatmul"):
            zp = int(a.get("x_zp", a.get("a_zp", 0)))
            xr = ranges[n.inputs[0]]
            abits = signed_width(xr[0] - zp, xr[1] - zp)
            if n.op == "qmatmul":
                bz = int(a.get("b_zp", 0))
                br = ranges[n.inputs[1]]
                bbits = signed_width(br[0] - bz, br[1] - bz)
                xs, ws = ig.type_of(n.inputs[0]).shape, ig.type_of(n.inputs[1]).shape
                k, nn_ = xs[-1], ws[-1]
                steps = int(np.prod(y.shape[:-1], dtype=np.int64))
                row.update(mac_array(nn_ * k, steps, k, abits, bbits, acc_bits(n), reuse))
            else:
                w = ig.type_of(n.inputs[1])
                bbits = _weight_bits(ig, n.inputs[1])
                if n.op == "qconv2d":
                    k = int(np.prod(w.shape[1:]))
                    steps = y.shape[0] * y.shape[2] * y.shape[3]
                else:
                    k = w.shape[1]
                    steps = int(np.prod(y.shape[:-1], dtype=np.int64))
                row.update(mac_array(w.size, steps, k, abits, bbits, acc_bits(n), reuse, n_weights=w.size))
                row["weight"] = n.inputs[1]
            row["mac"] = True
        else:
            units = {"requantize": 1, "qadd": 2}.get(n.op, 0)
            dsp = lut = 0
            if units:
                r = ranges[n.inputs[0]]
                d, l_ = mult_cost(signed_width(*r) + 1, 32)
                dsp, lut = units * lanes(y.shape) * d, units * lanes(y.shape) * l_
            if n.op in ("maxpool", "qavgpool", "qsum", "gather"):      # one output per II (window loops)
                ii = max(1, y.size) * (reuse if n.op != "maxpool" and n.op != "gather" else 1)
            else:
                ii = max(1, y.size // lanes(y.shape))
            row.update({"dsp": dsp, "lut": lut, "ii": ii, "latency": ii + 2, "mac": False})
        layers.append(row)
    mac = [r for r in layers if r["mac"]]
    return {"reuse_factor": reuse, "layers": layers,
            "mac_dsp": int(sum(r["dsp"] for r in mac)), "mac_lut": int(sum(r["lut"] for r in mac)),
            "dsp": int(sum(r["dsp"] for r in layers)), "lut": int(sum(r["lut"] for r in layers)),
            "bram18": int(sum(r.get("bram18", 0) for r in layers)),
            "weight_bits": int(sum(r.get("weight_bits_total", 0) for r in mac if "weight" in r)),
            "latency_cycles": int(sum(r["latency"] for r in layers)),
            "mac_latency_cycles": int(sum(r["latency"] for r in mac)),
            "ii_cycles": int(max((r["ii"] for r in layers), default=1))}


def layer_tables(g: Graph, widths, *, act_bits: int = 8, reuse: int = 1) -> dict[str, dict[str, dict[int, float]]]:
    """``{"dsp": {layer: {bits: DSPs}}, "lut": {...}}`` of each conv2d/linear MAC array of the float
    graph ``g`` at each weight width, as ``model_resources`` will count it after integerize: the input
    operand is ``act_bits + 1`` wide (asymmetric zero point) and the accumulator 32 bits (integerize proves
    every accumulator fits int32), both >= what the integer graph gets, so a plan's cost here is never
    below its cost in the manifest."""
    out: dict[str, dict[str, dict[int, float]]] = {"dsp": {}, "lut": {}}
    for n in g.nodes:                      # the conv2d / linear layers, as passes.choose_bits names them
        if n.op not in ("conv2d", "linear"):
            continue
        w, y = g.type_of(n.inputs[1]), g.type_of(n.name)
        k = int(np.prod(w.shape[1:])) if n.op == "conv2d" else w.shape[1]
        steps = max(1, y.size // w.shape[0])      # conv: N * OH * OW; linear: rows
        a = act_bits + 1
        for b in widths:
            r = mac_array(w.size, steps, k, a, b, 32, reuse, n_weights=w.size)
            out["dsp"].setdefault(n.name, {})[b] = float(r["dsp"])
            out["lut"].setdefault(n.name, {})[b] = float(r["lut"])
    return out
