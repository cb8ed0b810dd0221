# SPDX-License-Identifier: Apache-2.0
"""The last steps of ``fold_fake_quant``: inherit QuantTypes, fix weights and biases, check for integerize.

- activations are signed (numerics.md): an unsigned QuantType (PT2E's uint8) becomes the signed one
  with the same reals, ``zp - 2^(b-1)``; data-movement outputs without a QuantType keep their input's
  (numerics.md rule 5; ``concat`` when all inputs share one);
- conv2d / linear weights become signed symmetric <= 8-bit codes on axis 0: exactly when the codes
  ``q - zp`` fit (e.g. uint8 with zp 128 is int8), else re-quantized to 8 bits per output channel
  (``scale = max|w| / 127``, at most half a new LSB per weight) and reported;
- biases lose their QuantType; ``round(b / (s_x s_w))`` must give back the model's int32 codes (kind
  ``bias`` otherwise, in LSBs of the layer output; float32 noise under 1e-3 LSB is not reported); codes
  so large that ``|b| + max|x - z_x| sum|w_q|`` could overflow int32 (ORT clips biases of near-dead
  channels with tiny weight scales to int32) are clamped, a change of a tiny fraction of an LSB;
- reported for integerize: unquantized values that are not fused into a clamp, per-channel activations,
  ops without an integer lowering or with constant operands, multipliers outside the dyadic range.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..ir.numerics import dyadic, fake_quant, quantize
from ..ir.ops.registry import is_weighted
from ..ir.types import QuantType
from .annotate_quant import CLAMPS, FUSE_FROM, inherits
from .fold_fake_quant_consts import note
from .integerize import LOWERED

ACC_MARGIN = 1 << 8          # float32 biases near 2^31 are off by up to 2^7 accumulator steps
MIN_REPORTED_LSB = 1e-3      # bias code differences below this (in output LSBs) are float32 noise


def _note(f, node, kind, value, max_lsb, message):
    note(f.report, node, kind, value, max_lsb, message)


def inherit(f, outputs: list[str]) -> None:
    """Signed activation QuantTypes; data movement (and concat of one QuantType) inherits its input's."""
    for k, q in list(f.quant.items()):
        if not q.signed and k not in f.consts:      # u8 (z) == i8 (z - 128): the same reals, signed codes
            f.quant[k] = QuantType(q.bits, True, q.scale, tuple(z - (1 << (q.bits - 1)) for z in q.zero_point),
                                   q.axis)
    for n in f.nodes:
        o = n.outputs[0]
        if o in f.quant or not f.values[o].type.is_float:
            continue
        qs = [f.quant.get(i) for i in n.inputs]
        if n.op == "concat" and len(set(qs)) == 1 and qs[0] is not None and not qs[0].per_channel:
            f.quant[o] = qs[0]
        elif inherits(n) and qs and qs[0] is not None and not qs[0].per_channel and n.inputs[0] not in f.consts:
            f.quant[o] = qs[0]


def _signed_bits(lo: int, hi: int) -> int:
    b = 2
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def _requantize8(w: np.ndarray) -> tuple[np.ndarray, QuantType]:
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    q = QuantType.make(8, True, np.where(m > 0, m / 127, 1.0), 0, 0)
    return fake_quant(w, q), q


def fix_weight(f, n: Node) -> None:
    w = n.inputs[1]
    if w not in f.consts:
        _note(f, n, "unsupported", w, None, f"weight %{w} is computed at run time; integerize needs a constant")
        return
    arr, q = f.consts[w], f.quant.get(w)
    why = None
    if q is None:
        why = "is not quantized in the model"
    elif q.per_channel and q.axis != 0:
        why = f"is quantized per channel along axis {q.axis}, not the output channels"
    elif not (q.signed and q.bits <= 8 and not any(q.zero_point)):
        codes = f.codes.get(w)
        c = (codes if codes is not None else quantize(arr, q)) - q.zp_array(arr.ndim)
        bits = _signed_bits(int(c.min(initial=0)), int(c.max(initial=0)))
        if bits <= 8:                       # the same real values on a signed symmetric grid: exact
            f.quant[w] = QuantType.make(max(bits, min(q.bits, 8)) if q.signed else bits, True, q.scale, 0, q.axis)
            f.codes[w] = c
            return
        why = f"is {q} with codes q - zp needing {bits} signed bits"
    if why is None:
        return
    new, q8 = _requantize8(arr)
    f.put_const(w, new.astype(arr.dtype), q8)
    f.codes.pop(w, None)
    _note(f, n, "weight", w, 0.5, f"weight %{w} {why}; re-quantized to 8-bit symmetric per output channel "
          f"(each weight moves by at most half a new LSB)")


def check_bias(f, n: Node, qy: QuantType | None) -> None:
    """Drop the bias QuantType; clamp codes that would overflow int32; compare with the model's codes."""
    b = n.inputs[2]
    if b not in f.consts:
        _note(f, n, "unsupported", b, None, f"bias %{b} is computed at run time; integerize needs a constant")
        return
    qb = f.quant.pop(b, None)
    qx, qw = f.quant.get(n.inputs[0]), f.quant.get(n.inputs[1])
    if qx is None or qw is None or qx.per_channel:
        return
    w = f.consts[n.inputs[1]]
    o = w.shape[0]
    acc = qx.scale[0] * np.broadcast_to(np.asarray(qw.scale, np.float64), (o,))
    to_out = acc / qy.scale[0] if qy is not None and not qy.per_channel else None
    bias = f.consts[b].astype(np.float64)
    code = np.rint(bias / acc)
    lo, hi = qx.qrange
    dmax = max(hi - qx.zero_point[0], qx.zero_point[0] - lo)
    room = (2**31 - 1 - ACC_MARGIN) - dmax * np.abs(quantize(w, qw).reshape(o, -1)).sum(axis=1)
    over = np.abs(code) > room
    if over.any():
        code = np.clip(code, -room, room)
        f.put_const(b, (code * acc).astype(f.consts[b].dtype), None)
        steps = np.abs(np.rint(bias / acc) - code)
        _note(f, n, "bias", b, None if to_out is None else float((steps * to_out).max()),
              f"bias %{b}: {int(over.sum())} channel(s) clamped by up to {int(steps.max())} accumulator steps "
              f"so the int32 accumulator cannot overflow (|bias| + {dmax} sum|w_q| < 2^31)")
    codes = f.codes.get(b)
    if qb is None or codes is None:
        return
    diff = np.where(over, 0, np.abs(np.rint(f.consts[b].astype(np.float64) / acc) - codes.reshape(-1)))
    lsb = None if to_out is None else float((diff * to_out).max())
    if diff.max(initial=0) > 0 and (lsb is None or lsb >= MIN_REPORTED_LSB):
        _note(f, n, "bias", b, lsb, f"bias %{b}: round(b / (s_x s_w)) differs from the model's int32 codes by "
              f"up to {int(diff.max())} accumulator steps (bias scale {qb.scale[0]:.6g}, s_x s_w {acc[0]:.6g})")


def fused_end(f, name: str, consumers, outputs) -> str | None:
    """The clamp-chain value whose QuantType a fused ``name`` uses (None if it is not fused)."""
    cur = name
    while cur not in f.quant:
        c = consumers.get(cur, [])
        if (len(c) != 1 or c[0].op not in CLAMPS or cur in outputs
                or sum(i not in f.consts for i in c[0].inputs) != 1):
            return None
        cur = c[0].outputs[0]
    return cur


def fix_layers(f, outputs: list[str]) -> None:
    """Weights to signed symmetric <= 8-bit grids on axis 0; biases checked against the model's codes."""
    consumers: dict[str, list[Node]] = {}
    for n in f.nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    for n in f.nodes:
        if not is_weighted(n.op):
            continue
        fix_weight(f, n)
        end = fused_end(f, n.outputs[0], consumers, outputs)
        if len(n.inputs) == 3:
            check_bias(f, n, f.quant.get(end) if end else None)


def _multiplier(f, n: Node, qy: QuantType) -> None:
    q = [f.quant.get(i) for i in n.inputs]
    if any(v is None or (v.per_channel and i not in f.consts) for v, i in zip(q, n.inputs)) or qy.per_channel:
        return
    s = [np.asarray(v.scale, np.float64) for v in q]
    if is_weighted(n.op):
        M, what = s[0] * s[1] / qy.scale[0], "requantize multiplier s_x s_w / s_y"
    elif n.op == "add":
        M, what = np.maximum(s[0], s[1]) / qy.scale[0], "add operand multiplier s_in / s_y"
    else:
        M, what = s[0] * s[1] / qy.scale[0], "requantize multiplier s_a s_b / s_y"
    try:
        dyadic(M, what=what)
    except ValueError as e:
        _note(f, n, "multiplier-range", n.outputs[0], None, str(e))


def check_contract(f, outputs: list[str]) -> None:
    """Report what integerize will refuse or approximate (see the module docstring)."""
    consumers: dict[str, list[Node]] = {}
    for n in f.nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    for name in f.g.inputs:
        if f.values[name].type.is_float and name not in f.quant:
            _note(f, None, "unquantized", name, None, f"graph input %{name} is not quantized in the model")
    for n in f.nodes:
        o = n.outputs[0]
        if n.op not in LOWERED:
            _note(f, n, "unsupported", o, None, f"op {n.op} has no integer lowering")
        const_ins = [i for k, i in enumerate(n.inputs) if i in f.consts and not (is_weighted(n.op) and k > 0)]
        if const_ins and not (len(n.inputs) == 2 and np.asarray(f.consts[const_ins[0]]).size == 1):
            _note(f, n, "unsupported", const_ins[0], None,
                  f"constant operand %{const_ins[0]} of {n.op} (integerize takes constants only as "
                  f"conv2d / linear weights and biases)")
        if not f.values[o].type.is_float:
            continue
        q = f.quant.get(o)
        end = o if q is not None else (fused_end(f, o, consumers, outputs) if n.op in FUSE_FROM else None)
        if end is None:
            _note(f, n, "unquantized", o, None, f"%{o} is not quantized in the model and not fused into a "
                                                 f"following relu/clip (quantize it, e.g. by calibration)")
            continue
        if q is not None and q.per_channel:
            _note(f, n, "per-channel-activation", o, None, f"%{o} is quantized per channel ({q}); "
                                                             f"integerize needs per-tensor activations")
        elif n.op in ("conv2d", "linear", "add", "mul", "matmul"):
            _multiplier(f, n, f.quant[end])
