# SPDX-License-Identifier: Apache-2.0
"""Test helpers: a minimal, self-contained min/max quantizer that follows docs/numerics.md.

Tests of integerize and the backends use it so they do not depend on the calibration passes.
"""
from __future__ import annotations

import numpy as np

from dyadiq.interp import run_all
from dyadiq.ir.graph import Graph
from dyadiq.ir.numerics import fake_quant
from dyadiq.ir.types import QuantType

FUSE_FROM = {"conv2d", "linear", "matmul", "add"}
CLAMPS = {"relu", "clip"}
INHERIT = {"reshape", "transpose", "maxpool", "slice", "identity", "pad"}


def act_quant(lo: float, hi: float, bits: int = 8) -> QuantType:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    scale = (hi - lo) / (qmax - qmin)
    zp = int(np.clip(qmin - np.rint(lo / scale), qmin, qmax))
    return QuantType.make(bits, True, scale, zp)


def simple_quantize(g: Graph, calib: np.ndarray, *, w_bits=8, per_channel=True, a_bits=8) -> Graph:
    """Min/max activations, symmetric weights, per the quantized-graph contract."""
    lo, hi = {}, {}
    for i in range(calib.shape[0]):
        env = run_all(g, calib[i:i + 1])
        for k, v in env.items():
            if v.dtype.kind == "f":
                lo[k] = min(lo.get(k, np.inf), float(v.min()))
                hi[k] = max(hi.get(k, -np.inf), float(v.max()))
    cons = g.consumers()
    prod = g.producers()
    wb = w_bits if isinstance(w_bits, dict) else {}
    for n in g.nodes:
        if n.op in ("conv2d", "linear"):
            w = g.const(n.inputs[1])
            b = wb.get(n.name, w_bits if isinstance(w_bits, int) else 8)
            m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) if per_channel else np.abs(w).max(keepdims=True)
            q = QuantType.make(b, True, np.maximum(m, 1e-8) / ((1 << (b - 1)) - 1), 0, 0 if per_channel else None)
            g = g.replace(constants={**g.constants, n.inputs[1]: fake_quant(w, q)}).with_quant(n.inputs[1], q)
    for name in g.inputs:
        g = g.with_quant(name, act_quant(lo[name], hi[name], a_bits))
    for n in g.nodes:
        c = cons.get(n.name, [])
        if n.op in FUSE_FROM and len(c) == 1 and c[0].op in CLAMPS and n.name not in g.outputs:
            continue
        if n.op in INHERIT and g.quant_of(n.inputs[0]) is not None:
            g = g.with_quant(n.name, g.quant_of(n.inputs[0]))
            continue
        if n.name in lo:                                     # float outputs only (argmax gives indices)
            g = g.with_quant(n.name, act_quant(lo[n.name], hi[n.name], a_bits))
    _ = prod
    return g
