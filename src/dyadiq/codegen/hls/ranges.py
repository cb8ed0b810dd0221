# SPDX-License-Identifier: Apache-2.0
"""Integer range of every value of an integer graph, and so the narrowest ``ap_int<W>`` / ``ap_uint<W>``.

Ranges are intervals ``[lo, hi]`` propagated forward from the graph inputs (``quantize``: ``[qmin, qmax]``)
and the constants (their values). The accumulators are exact, not just safe:

- ``qconv2d`` / ``qlinear`` with constant weights ``w`` and input codes ``x - x_zp`` in ``[a, b]``, output
  channel ``o`` at output position ``p``: ``acc in bias_o + sum_{taps t valid at p} [min(w_t a, w_t b),
  max(w_t a, w_t b)]`` (padding taps add 0). The bound over all ``(o, p)`` is attained by the input that
  puts ``b`` under every positive and ``a`` under every negative weight of the extreme (o, p)
  (``extreme_input``), so one bit less than ``acc_bits`` overflows for that input.
- ``qmatmul`` / ``qmul``: ``K`` times the extreme corner products of the operand ranges (attained with all
  operands at a corner).
- ``requantize`` / ``qadd``: the clamp ``[max(qmin, min lo), min(qmax, max hi)]``; the intermediate product
  ``(acc - zp) * m + 2^(s-1)`` gets its own width (``product_bits``).
Two's complement addition is exact modulo ``2^W``, so a ``W``-bit accumulator whose final value lies in
``[-2^(W-1), 2^(W-1))`` is exact whatever its partial sums do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CodegenError
from ...ir.graph import Graph, Node
from ...ir.ops.nn import avgpool_divisor, pool_out_type
from ...ir.ops.window import hw_attrs
from ...ir.types import TensorType, int_range

Range = tuple[int, int]


def width(lo: int, hi: int) -> tuple[int, bool]:
    """(bits, signed) of the narrowest two's complement (or unsigned when ``lo >= 0``) type for [lo, hi]."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return max(1, hi.bit_length()), False
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1, True


def signed_width(lo: int, hi: int) -> int:
    """Bits of the narrowest signed type holding [lo, hi]."""
    return max((-int(lo) - 1).bit_length() if lo < 0 else 0, int(hi).bit_length()) + 1


def ctype(r: Range) -> str:
    """``ap_int<W>`` / ``ap_uint<W>`` for a range."""
    w, s = width(*r)
    return f"ap_int<{w}>" if s else f"ap_uint<{w}>"


def _corners(a: Range, b: Range) -> Range:
    p = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(p), max(p)


def _union(*rs: Range) -> Range:
    return min(r[0] for r in rs), max(r[1] for r in rs)


@dataclass(frozen=True)
class AccBound:
    """Exact bounds of a weighted layer's accumulator: per output channel, the extreme over positions."""

    lo: np.ndarray          # [O] least accumulator value of each channel
    hi: np.ndarray          # [O] greatest
    bits: int               # signed width holding [lo.min(), hi.max()]


def _taps_valid(n: int, k: int, s: int, p_lo: int, d: int, out: int) -> np.ndarray:
    """[out, k] True where tap k of output position o reads inside the input (not padding)."""
    idx = np.arange(out)[:, None] * s - p_lo + np.arange(k)[None, :] * d
    return (idx >= 0) & (idx < n)


def conv_bound(ig: Graph, n: Node, xr: Range) -> AccBound:
    """Exact accumulator bounds of a ``qconv2d`` with constant weights (module docstring)."""
    a = n.attr_dict
    zp = int(a.get("x_zp", 0))
    lo_x, hi_x = xr[0] - zp, xr[1] - zp
    w = ig.const(n.inputs[1]).astype(np.int64)
    bias = ig.const(n.inputs[2]).astype(np.int64) if len(n.inputs) == 3 else np.zeros(w.shape[0], np.int64)
    k, s, p, d = hw_attrs({**a, "kernel": w.shape[2:]})
    x_t, y_t = ig.type_of(n.inputs[0]), ig.type_of(n.name)
    vh = _taps_valid(x_t.shape[2], k[0], s[0], p[0], d[0], y_t.shape[2]).astype(np.int64)
    vw = _taps_valid(x_t.shape[3], k[1], s[1], p[1], d[1], y_t.shape[3]).astype(np.int64)
    t_hi = np.maximum(w * lo_x, w * hi_x).sum(axis=1)          # [O, KH, KW]
    t_lo = np.minimum(w * lo_x, w * hi_x).sum(axis=1)
    hi = np.einsum("hk,wl,okl->ohw", vh, vw, t_hi).reshape(w.shape[0], -1).max(axis=1) + bias
    lo = np.einsum("hk,wl,okl->ohw", vh, vw, t_lo).reshape(w.shape[0], -1).min(axis=1) + bias
    return AccBound(lo, hi, signed_width(lo.min(), hi.max()))


def linear_bound(ig: Graph, n: Node, xr: Range) -> AccBound:
    """Exact accumulator bounds of a ``qlinear`` with constant weights."""
    zp = int(n.attr("x_zp", 0))
    lo_x, hi_x = xr[0] - zp, xr[1] - zp
    w = ig.const(n.inputs[1]).astype(np.int64)
    bias = ig.const(n.inputs[2]).astype(np.int64) if len(n.inputs) == 3 else np.zeros(w.shape[0], np.int64)
    hi = np.maximum(w * lo_x, w * hi_x).sum(axis=1) + bias
    lo = np.minimum(w * lo_x, w * hi_x).sum(axis=1) + bias
    return AccBound(lo, hi, signed_width(lo.min(), hi.max()))


def extreme_input(ig: Graph, n: Node, xr: Range, side: str) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """``(x, channel, out_index)``: an input of layer ``n`` (qconv2d/qlinear) whose accumulator reaches the
    bound's ``side`` ("hi" or "lo") exactly at ``out_index``, the proof that the bound is tight."""
    bound = conv_bound(ig, n, xr) if n.op == "qconv2d" else linear_bound(ig, n, xr)
    o = int(np.argmax(bound.hi) if side == "hi" else np.argmin(bound.lo))
    w = ig.const(n.inputs[1]).astype(np.int64)[o]
    x_t = ig.type_of(n.inputs[0])
    zp = int(n.attr("x_zp", 0))
    big, small = (xr[1], xr[0]) if side == "hi" else (xr[0], xr[1])
    x = np.full(x_t.shape, zp, np.int64)
    if n.op == "qlinear":
        x[...] = np.where(w > 0, big, np.where(w < 0, small, zp))
        return x.astype(x_t.np_dtype), o, tuple([0] * (len(x_t.shape) - 1)) + (o,)
    a = n.attr_dict
    k, s, p, d = hw_attrs({**a, "kernel": w.shape[1:]})
    y_t = ig.type_of(n.name)
    vh = _taps_valid(x_t.shape[2], k[0], s[0], p[0], d[0], y_t.shape[2])
    vw = _taps_valid(x_t.shape[3], k[1], s[1], p[1], d[1], y_t.shape[3])
    lo_x, hi_x = xr[0] - zp, xr[1] - zp
    tap = (np.maximum(w * lo_x, w * hi_x) if side == "hi" else np.minimum(w * lo_x, w * hi_x)).sum(axis=0)
    per_pos = np.einsum("hk,wl,kl->hw", vh.astype(np.int64), vw.astype(np.int64), tap)
    oh, ow = np.unravel_index(int(np.argmax(per_pos) if side == "hi" else np.argmin(per_pos)), per_pos.shape)
    groups = int(a.get("groups", 1))
    cg = x_t.shape[1] // groups
    g0 = (o // (y_t.shape[1] // groups)) * cg
    for kh in range(k[0]):
        for kw in range(k[1]):
            if not (vh[oh, kh] and vw[ow, kw]):
                continue
            ih, iw = oh * s[0] - p[0] + kh * d[0], ow * s[1] - p[1] + kw * d[1]
            for c in range(cg):
                wv = w[c, kh, kw]
                x[0, g0 + c, ih, iw] = big if wv > 0 else (small if wv < 0 else zp)
    return x.astype(x_t.np_dtype), o, (0, o, int(oh), int(ow))


def _const_range(a: np.ndarray) -> Range:
    return (int(a.min()), int(a.max())) if a.size else (0, 0)


def analyze(ig: Graph) -> tuple[dict[str, Range | None], dict[str, AccBound]]:
    """(value -> integer range, or None for float values; weighted layer -> its accumulator bound)."""
    r: dict[str, Range | None] = {}
    acc: dict[str, AccBound] = {}
    for name in ig.inputs:
        t = ig.type_of(name)
        if t.is_float:
            r[name] = None
        else:
            q = ig.quant_of(name)
            info = np.iinfo(t.np_dtype)
            r[name] = q.qrange if q is not None else (int(info.min), int(info.max))
    for name, arr in ig.constants.items():
        r[name] = None if ig.type_of(name).is_float else _const_range(arr)
    for n in ig.nodes:
        ins = [r.get(i) for i in n.inputs]
        r[n.name] = _node_range(ig, n, ins, acc)
    return r, acc


def _node_range(ig: Graph, n: Node, ins: list, acc: dict) -> Range | None:
    a = n.attr_dict
    op = n.op
    if op == "quantize":
        return int_range(a["bits"], a["signed"])
    if op == "dequantize":
        return None
    if any(x is None for x in ins):
        raise CodegenError("integer op with a float operand", node=n)
    if op == "qconv2d":
        b = conv_bound(ig, n, ins[0])
        acc[n.name] = b
        return int(b.lo.min()), int(b.hi.max())
    if op == "qlinear":
        b = linear_bound(ig, n, ins[0])
        acc[n.name] = b
        return int(b.lo.min()), int(b.hi.max())
    if op == "qmatmul":
        x = (ins[0][0] - a.get("a_zp", 0), ins[0][1] - a.get("a_zp", 0))
        y = (ins[1][0] - a.get("b_zp", 0), ins[1][1] - a.get("b_zp", 0))
        k = ig.type_of(n.inputs[0]).shape[-1]
        c = _corners(x, y)
        return min(0, c[0]) * k, max(0, c[1]) * k
    if op == "qmul":
        x = (ins[0][0] - a.get("a_zp", 0), ins[0][1] - a.get("a_zp", 0))
        y = (ins[1][0] - a.get("b_zp", 0), ins[1][1] - a.get("b_zp", 0))
        return _corners(x, y)
    if op == "requantize":
        lo, hi = int(a["qmin"]), int(a["qmax"])
        if len(n.inputs) >= 4:
            lo = max(lo, ins[3][0])
        if len(n.inputs) == 5:
            hi = min(hi, ins[4][1])
        return lo, max(lo, hi)
    if op == "qadd":
        return int(a["qmin"]), int(a["qmax"])
    if op in ("qsum", "qavgpool"):
        zp = int(a.get("x_zp", 0))
        lo, hi = ins[0][0] - zp, ins[0][1] - zp
        x_t = ig.type_of(n.inputs[0])
        if op == "qsum":
            cnt = {int(np.prod([x_t.shape[ax] for ax in a["axes"]]))}
        else:
            y_t = pool_out_type(x_t, a)
            div = avgpool_divisor(x_t.shape[2:], {**a, "count_include_pad": False}, y_t.shape[2:])
            cnt = {int(div.min()), int(div.max())}
        return min(min(lo * c, 0) for c in cnt), max(max(hi * c, 0) for c in cnt)
    if op == "lut":
        return ins[1]
    if op in ("reshape", "identity", "transpose", "slice", "gather"):
        return ins[0]
    if op == "concat":
        return _union(*ins)
    if op == "pad":
        if a.get("mode", "constant") == "constant":
            v = int(a.get("value", 0))
            return _union(ins[0], (v, v))
        return ins[0]
    if op == "maxpool":
        return _union(ins[0], (maxpool_floor(ig.type_of(n.inputs[0])),) * 2) if all_pad_window(ig, n) else ins[0]
    raise CodegenError(f"no HLS form for op {op!r}", node=n)


def maxpool_floor(t: TensorType) -> int:
    """What the interpreter's max pool yields for a window entirely in padding: the dtype's minimum."""
    return int(np.iinfo(t.np_dtype).min)


def all_pad_window(ig: Graph, n: Node) -> bool:
    """True when some max-pool window reads only padding."""
    a = n.attr_dict
    x_t, y_t = ig.type_of(n.inputs[0]), ig.type_of(n.name)
    k, s, p, d = hw_attrs(a)
    vh = _taps_valid(x_t.shape[2], k[0], s[0], p[0], d[0], y_t.shape[2]).any(axis=1)
    vw = _taps_valid(x_t.shape[3], k[1], s[1], p[1], d[1], y_t.shape[3]).any(axis=1)
    return not (vh.all() and vw.all())
