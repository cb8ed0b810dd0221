# SPDX-License-Identifier: Apache-2.0
"""Lower a quantized float graph (docs/numerics.md) to integer-only dyadic code.

- ``conv2d`` / ``linear`` [-> relu | clip | minimum(c) | maximum(c)]* -> ``qconv2d`` / ``qlinear`` (int32,
  bias ``round(b / (s_x s_w))``) -> ``requantize`` with ``M_c = s_x s_w,c / s_y`` and the activation as a
  (per-channel) clamp ``round(bound / s_y) + z_y``;
- ``add`` -> ``qadd`` (operands rescaled by ``s_a/s_y``, ``s_b/s_y`` with one shared shift, one rounding);
  ``mul`` / ``matmul`` -> ``qmul`` / ``qmatmul`` + ``requantize``;
- ``global_avgpool`` / ``mean`` / ``avgpool`` -> ``qsum`` / ``qavgpool`` + ``requantize`` by ``s_x / (s_y n)``;
- any other unary op (relu, clip, sigmoid, silu, hardswish, gelu, tanh, ...) -> ``lut``, a table of
  ``quantize(f(dequantize(q)))`` over every input code: exactly what simulated mode computes;
- a binary op with a scalar constant operand (``x + 3``, ``x / 6``, ``x * c``, ``max(x, c)``) is a unary op
  of ``x``: a ``lut`` too;
- data movement runs on the integers; a quantization change becomes a ``requantize``.
The result holds no float tensor except the graph input (``quantize``) and output (``dequantize``),
or none with ``raw=True``.

``LOWERINGS`` is the table: op -> ``Lowering(rewrite, check)``; ``check(g, n)`` returns why ``n`` cannot be
lowered (None: it can), ``rewrite`` emits its integer ops. ``LOWERED`` (what fold_fake_quant's report and
``inspect --check`` consult) is the table's keys. After lowering, ``ir.verify_integer`` proves every
integer op's arithmetic bound from its operand ranges (an int32 product that could reach 2^31 is refused
with the node named, never wrapped).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import PassError, VerifyError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node
from ..ir.numerics import dequantize, dyadic, quantize
from ..ir.ops import op_def
from ..ir.ops.coverage import INTEGER_PREDICATES
from ..ir.ops.nn import avgpool_divisor
from ..ir.ops.registry import ops_with
from ..ir.ops.shape import reverse_sequence_index
from ..ir.types import DTYPES, QuantType, int_dtype
from ..ir.verify_integer import verify_integer
from . import integerize_nn
from .rewrite import rename

ACC_OPS = ops_with(fusable=True)                         # conv2d, linear, matmul, add
CLAMP_OPS = ops_with(clamp=True)                         # relu, clip, minimum/maximum (constant bound)
MOVE_OPS = ops_with(moves_data=True, quant="inherit")    # reshape, transpose, slice, pad, maxpool, identity
LUT_OPS = ops_with(pointwise=True) - MOVE_OPS           # unary elementwise: a table over the input codes
SCALAR_BINARY = frozenset({"add", "sub", "mul", "div", "pow", "maximum", "minimum"})


def _dtype(q: QuantType) -> str:
    return int_dtype(max(q.bits, 8), q.signed)


def _qkw(q: QuantType) -> dict:
    lo, hi = q.qrange
    return {"qmin": lo, "qmax": hi, "dtype": _dtype(q)}


class _Lowering:
    """State of one integerize run: float value name -> (integer value name, its QuantType)."""

    def __init__(self, g: Graph, raw: bool):
        self.g, self.raw = g, raw
        self.b = GraphBuilder(g.name)
        self.env: dict[str, tuple[str, QuantType]] = {}
        self.consumers = g.consumers()
        self.fused: dict[str, tuple[Node, list[Node]]] = {}   # chain output -> (producer, clamp chain)
        self.skip: set[str] = set()

    # ---- helpers -----------------------------------------------------------------------------
    def quant(self, name: str, node: Node | None = None) -> QuantType:
        q = self.g.quant_of(name)
        if q is None:
            raise PassError(f"value %{name} has no quantization parameters (quantize the graph first)", node=node)
        return q

    def act(self, name: str, node: Node) -> tuple[str, QuantType]:
        if name in self.env:
            return self.env[name]
        if self.g.is_const(name):
            raise PassError(f"constant operand %{name} is not supported here (only conv/linear weights)", node=node)
        raise PassError(f"operand %{name} was not lowered", node=node)

    def mult(self, M, node: Node, what: str) -> tuple[str, str]:
        """Constants (m, s) for real multipliers ``M`` (array broadcastable to the accumulator)."""
        try:
            m, s = dyadic(M, what=what)
        except ValueError as e:
            raise PassError(str(e), node=node) from None
        shape = np.shape(M)
        return (self.b.const(f"{node.name}.m", m.reshape(shape)),
                self.b.const(f"{node.name}.s", s.astype(np.int32).reshape(shape)))

    def requant(self, acc: str, M, qo: QuantType, node: Node, *, in_zp: int = 0, lo=None, hi=None,
                name: str | None = None) -> str:
        m, s = self.mult(M, node, "requantize multiplier")
        ins = [acc, m, s]
        if lo is not None or hi is not None:
            qmin, qmax = qo.qrange
            ins.append(self.b.const(f"{node.name}.lo", np.asarray(lo if lo is not None else qmin, np.int32)))
            if hi is not None:
                ins.append(self.b.const(f"{node.name}.hi", np.asarray(hi, np.int32)))
        return self.b.op("requantize", ins, name or node.name, quant=qo, in_zp=in_zp,
                         out_zp=qo.zero_point[0], **_qkw(qo))

    def bind(self, name: str, out: str, q: QuantType) -> None:
        self.env[name] = (out, q)

    def convert(self, x: str, qx: QuantType, qo: QuantType, node: Node) -> str:
        """Requantize an integer value to another per-tensor QuantType (no-op when equal)."""
        if qx == qo:
            return x
        if qx.per_channel or qo.per_channel:
            raise PassError("per-channel activation quantization cannot be requantized", node=node)
        return self.requant(x, qx.scale[0] / qo.scale[0], qo, node, in_zp=qx.zero_point[0], name=f"{x}.rq")

    # ---- clamp chains ------------------------------------------------------------------------
    def find_chains(self) -> None:
        """Mark producer -> clamp* -> quantized value chains for fusion."""
        for n in self.g.nodes:
            if n.op not in ACC_OPS or self.g.quant_of(n.name) is not None or is_exact(self.g, n):
                continue
            chain, cur = [], n.name
            while self.g.quant_of(cur) is None:
                cons = self.consumers.get(cur, [])
                if len(cons) != 1 or cons[0].op not in CLAMP_OPS or cur in self.g.outputs:
                    raise PassError(f"value %{cur} has no quantization parameters and cannot be fused "
                                    f"into a following clamp", node=n)
                chain.append(cons[0])
                cur = cons[0].name
            self.fused[n.name] = (n, chain)
            self.skip.update(c.name for c in chain)

    def clamp_bounds(self, chain: list[Node], qo: QuantType, channels: int, rank: int, node: Node):
        """Real clamp bounds of a chain as integer lo/hi arrays (scalar or per-channel)."""
        lo, hi = np.asarray(-np.inf), np.asarray(np.inf)
        for c in chain:
            if c.op == "relu":
                lo = np.maximum(lo, 0.0)
            elif c.op == "clip":
                lo, hi = np.maximum(lo, c.attr("min", -np.inf)), np.minimum(hi, c.attr("max", np.inf))
            else:
                other = [i for i in c.inputs if self.g.is_const(i)]
                if len(other) != 1:
                    raise PassError("fused minimum/maximum needs one constant operand", node=c)
                v = np.asarray(self.g.const(other[0]), np.float64)
                if v.size not in (1, channels):
                    raise PassError(f"bound of shape {v.shape} is neither scalar nor per-channel", node=c)
                v = v.reshape(-1)
                lo, hi = (np.maximum(lo, v), hi) if c.op == "maximum" else (lo, np.minimum(hi, v))
        s, z = qo.scale[0], qo.zero_point[0]
        qmin, qmax = qo.qrange
        def to_int(v):
            v = np.asarray(v, np.float64)
            q = np.rint(np.where(np.isfinite(v), v, 0.0) / s) + z
            return np.clip(np.where(np.isfinite(v), q, np.where(v > 0, qmax, qmin)), qmin, qmax).astype(np.int64)
        lo_q, hi_q = to_int(lo), to_int(hi)
        shape = (1, -1) + (1,) * (rank - 2) if rank >= 2 else (-1,)
        fix = lambda a: (a.reshape(shape) if a.size > 1 else a.reshape(())).astype(np.int32)  # noqa: E731
        return (None if np.all(lo_q <= qmin) else fix(lo_q)), (None if np.all(hi_q >= qmax) else fix(hi_q))

    # ---- per-op lowering ---------------------------------------------------------------------
    def weighted(self, n: Node, chain: list[Node]) -> None:
        out_name = chain[-1].name if chain else n.name
        qo = self.quant(out_name, n)
        x, qx = self.act(n.inputs[0], n)
        if qx.per_channel:
            raise PassError("per-channel activation input is not supported", node=n)
        w_name = n.inputs[1]
        if not self.g.is_const(w_name):
            raise PassError(f"weight %{w_name} is not a constant", node=n)
        qw = self.quant(w_name, n)
        if any(z != 0 for z in qw.zero_point):
            raise PassError("weights must be symmetric (zero point 0)", node=n)
        w = self.g.const(w_name)
        wq = quantize(w, qw)
        o = w.shape[0]
        sw = np.broadcast_to(np.asarray(qw.scale, np.float64), (o,))
        sx = qx.scale[0]
        ins = [x, self.b.const(f"{w_name}.q", wq.astype(np.int8), dtype="i4" if qw.bits <= 4 else "i8", quant=qw)]
        bias = np.zeros(o, np.int64)
        if len(n.inputs) == 3:
            bias = np.rint(np.asarray(self.g.const(n.inputs[2]), np.float64) / (sx * sw)).astype(np.int64)
        lo, hi = qx.qrange
        dmax = max(hi - qx.zero_point[0], qx.zero_point[0] - lo)
        bound = dmax * np.abs(wq.reshape(o, -1)).sum(axis=1) + np.abs(bias)
        if bound.max(initial=0) >= 2**31:
            raise PassError(f"int32 accumulator bound {int(bound.max())} >= 2^31", node=n)
        if len(n.inputs) == 3:
            ins.append(self.b.const(f"{n.inputs[2]}.q", bias.astype(np.int32)))
        acc_bits = int(math.ceil(math.log2(float(bound.max(initial=0)) + 1))) + 1
        zx = qx.zero_point[0]
        if n.op == "conv2d":
            acc = self.b.op("qconv2d", ins, f"{n.name}.acc", x_zp=zx, acc_bits=acc_bits,
                            **{k: v for k, v in n.attrs})
            M = (sx * sw / qo.scale[0]).reshape(1, o, 1, 1)
        else:
            acc = self.b.op("qlinear", ins, f"{n.name}.acc", x_zp=zx, acc_bits=acc_bits)
            M = sx * sw / qo.scale[0]
            if qw.per_channel:
                M = M.reshape((1,) * (self.g.type_of(n.name).rank - 1) + (o,))
            else:
                M = M[:1].reshape(())
        if not qw.per_channel and n.op == "conv2d":
            M = M.reshape(-1)[0].reshape(())
        rank = self.g.type_of(n.name).rank
        lo_q, hi_q = self.clamp_bounds(chain, qo, o, rank if n.op == "conv2d" else 1, n)
        if n.op == "linear" and lo_q is not None and lo_q.ndim:
            lo_q = lo_q.reshape((1,) * (rank - 1) + (-1,))
        if n.op == "linear" and hi_q is not None and hi_q.ndim:
            hi_q = hi_q.reshape((1,) * (rank - 1) + (-1,))
        self.bind(out_name, self.requant(acc, M, qo, n, lo=lo_q, hi=hi_q, name=out_name), qo)

    def add(self, n: Node, chain: list[Node]) -> None:
        out_name = chain[-1].name if chain else n.name
        qo = self.quant(out_name, n)
        (a, qa), (bb, qb) = self.act(n.inputs[0], n), self.act(n.inputs[1], n)
        if qa.per_channel or qb.per_channel or qo.per_channel:
            raise PassError("add needs per-tensor quantized operands", node=n)
        ma, mb = qa.scale[0] / qo.scale[0], qb.scale[0] / qo.scale[0]
        try:
            _, shift = dyadic(max(ma, mb), what="add operand multiplier")
        except ValueError as e:
            raise PassError(str(e), node=n) from None
        shift = int(shift)
        a_m, b_m = int(round(ma * 2.0**shift)), int(round(mb * 2.0**shift))
        if n.op == "sub":
            b_m = -b_m                                        # a - b: the same rounding with -b
        lo_q, hi_q = self.clamp_bounds(chain, qo, 1, 1, n)
        kw = _qkw(qo)
        if lo_q is not None:
            kw["qmin"] = int(lo_q)
        if hi_q is not None:
            kw["qmax"] = int(hi_q)
        y = self.b.op("qadd", [a, bb], out_name, quant=qo, a_zp=qa.zero_point[0], b_zp=qb.zero_point[0],
                      a_m=a_m, b_m=b_m, shift=shift, out_zp=qo.zero_point[0], **kw)
        self.bind(out_name, y, qo)

    def with_const(self, n: Node, chain: list[Node]) -> None:
        """``x op c`` for a constant tensor ``c`` (per-channel scale or shift, positional tables):
        - ``x * c``: ``requantize((x - zp_x) * sign(c))`` with the multiplier ``s_x |c| / s_y`` per element of
          ``c`` (exact in c up to the dyadic multiplier; a zero of ``c`` gives the code of 0);
        - ``x + c`` / ``x - c`` / ``c - x``: ``qadd`` of ``x`` and the codes ``round(+-c / s_y)`` at the output
          scale (one rounding; ``c`` costs at most half an output step)."""
        out_name = chain[-1].name if chain else n.name
        qo = self.quant(out_name, n)
        ci = next(i for i in n.inputs if self.g.is_const(i))
        xi = next(i for i in n.inputs if not self.g.is_const(i))
        x, qx = self.act(xi, n)
        if qx.per_channel or qo.per_channel:
            raise PassError("a constant operand needs per-tensor quantized activations", node=n)
        c = np.asarray(self.g.const(ci), np.float64)
        lo_q, hi_q = self.clamp_bounds(chain, qo, 1, 1, n)
        rank = self.g.type_of(n.name).rank
        if c.ndim > rank:
            raise PassError(f"constant operand %{ci} has more dims than the result", node=n)
        c = c.reshape((1,) * (rank - c.ndim) + c.shape)
        if n.op == "mul":
            sign = np.sign(c).astype(np.int8)
            acc = self.b.op("qmul", [x, self.b.const(f"{n.name}.sign", sign)], f"{n.name}.acc",
                            a_zp=qx.zero_point[0], b_zp=0)
            M = np.where(c != 0, qx.scale[0] * np.abs(c) / qo.scale[0], 1.0)
            self.bind(out_name, self.requant(acc, _squeeze_equal(M), qo, n, lo=lo_q, hi=hi_q, name=out_name), qo)
            return
        neg_x = n.op == "sub" and ci == n.inputs[0]                     # c - x
        cc = -c if n.op == "sub" and not neg_x else c
        codes = np.rint(cc / qo.scale[0])
        if np.abs(codes).max(initial=0) >= 2**30:
            raise PassError(f"constant operand %{ci} is {np.abs(cc).max():.3g}: out of the output range", node=n)
        ma = qx.scale[0] / qo.scale[0]
        try:
            _, shift = dyadic(max(ma, 1.0), what="add operand multiplier")
        except ValueError as e:
            raise PassError(str(e), node=n) from None
        shift = int(shift)
        a_m = int(round(ma * 2.0**shift)) * (-1 if neg_x else 1)
        kw = _qkw(qo)
        if lo_q is not None:
            kw["qmin"] = int(lo_q)
        if hi_q is not None:
            kw["qmax"] = int(hi_q)
        cname = self.b.const(f"{n.name}.codes", codes.astype(np.int32))
        y = self.b.op("qadd", [x, cname], out_name, quant=qo, a_zp=qx.zero_point[0], b_zp=0, a_m=a_m,
                      b_m=1 << shift, shift=shift, out_zp=qo.zero_point[0], **kw)
        self.bind(out_name, y, qo)

    def resize_linear(self, n: Node) -> None:
        """Linear resize, one axis at a time, as ``qlinear`` of the codes with the axis's interpolation matrix
        ``A`` [out, in] (rows of at most two taps summing to 1), quantized per row to 8 bits
        (``A_q = round(127 A / max_row)``), then a per-row ``requantize`` by ``s_row``: to the input's scale
        between axes (interpolation stays inside the input's range), to the output's after the last.
        Each axis rounds once (half an output step) and its weights carry at most 1/254 relative error."""
        from ..ir.ops.coverage import resize_plan
        x, qx = self.act(n.inputs[0], n)
        qo = self.quant(n.name, n)
        shape = list(self.g.type_of(n.inputs[0]).shape)
        plan = resize_plan(tuple(shape), n.attr_dict)
        for k, (ax, idx, w, _) in enumerate(plan):
            m, src = idx.shape[0], shape[ax]
            A = np.zeros((m, src))
            np.add.at(A, (np.repeat(np.arange(m), idx.shape[1]), idx.reshape(-1)), w.reshape(-1))
            row = np.abs(A).max(axis=1)
            aq = np.rint(A / row[:, None] * 127).astype(np.int8)
            last = k == len(plan) - 1
            q_to = qo if last else qx
            perm = [i for i in range(len(shape)) if i != ax] + [ax]
            inv = list(np.argsort(perm))
            t = self.b.op("transpose", [x], f"{n.name}.ax{ax}.t", quant=qx, perm=tuple(perm)) if ax != len(shape) - 1 else x
            moved = [shape[i] for i in perm]
            flat = self.b.op("reshape", [t], f"{n.name}.ax{ax}.rows", quant=qx,
                             shape=(int(np.prod(moved[:-1])), src))
            wq = self.b.const(f"{n.name}.ax{ax}.A", aq)
            acc = self.b.op("qlinear", [flat, wq], f"{n.name}.ax{ax}.acc", x_zp=qx.zero_point[0])
            M = (qx.scale[0] * row / 127 / q_to.scale[0]).reshape(1, m)
            y = self.requant(acc, M, q_to, n, in_zp=0, name=f"{n.name}.ax{ax}.rq")
            moved[-1] = m
            y = self.b.op("reshape", [y], f"{n.name}.ax{ax}.back", quant=q_to, shape=tuple(moved))
            name = n.name if last else f"{n.name}.ax{ax}"
            y = self.b.op("transpose", [y], name, quant=q_to, perm=tuple(int(i) for i in inv)) \
                if ax != len(shape) - 1 else self.b.op("identity", [y], name, quant=q_to)
            shape[ax] = m
            x, qx = y, q_to
        if not plan:
            x = self.convert(x, qx, qo, n)
        self.bind(n.name, x, qo)

    def extremum(self, n: Node) -> None:
        """max / min of two activations: both requantized to the output's QuantType, then compared as codes
        (the code order is the value order for one per-tensor QuantType)."""
        qo = self.quant(n.name, n)
        ins = [self.convert(*self.act(i, n), qo, n) for i in n.inputs]
        self.bind(n.name, self.b.op(n.op, ins, n.name, quant=qo), qo)

    def index_of_extremum(self, n: Node) -> None:
        """argmax / argmin of a per-tensor quantized activation: the same op on its codes (the code order is the
        value order, ties included: simulated mode sees the same ties). The i64 result carries no QuantType
        and leaves the graph as it is."""
        x, qx = self.act(n.inputs[0], n)
        if qx.per_channel and qx.axis is not None:
            raise PassError("argmax/argmin of a per-channel quantized activation", node=n)
        self.bind(n.name, self.b.op(n.op, [x], n.name, **dict(n.attrs)), None)

    def select(self, n: Node) -> None:
        """``where(c, a, b)`` with a constant condition (masks: Trilu, OneHot) or one computed from integer
        values (an attention mask): both branches at the output's QuantType (activations requantized,
        constants quantized), then the same selection on the codes."""
        qo = self.quant(n.name, n)
        c = n.inputs[0]
        ins = [self.b.const(f"{n.name}.cond", np.asarray(self.g.const(c))) if self.g.is_const(c)
               else self.exact_operand(c, n)]
        for k, i in enumerate(n.inputs[1:]):
            if self.g.is_const(i):
                codes = quantize(np.asarray(self.g.const(i), np.float64), qo)
                ins.append(self.b.const(f"{n.name}.branch{k}", codes.astype(DTYPES[_dtype(qo)])))
            else:
                ins.append(self.convert(*self.act(i, n), qo, n))
        self.bind(n.name, self.b.op("where", ins, n.name, quant=qo), qo)

    def on_codes(self, n: Node) -> None:
        """A data-movement op with constant extra inputs (gather indices) or a reduction that picks one of its
        inputs (max / min): the same op on the integer codes."""
        x, qx = self.act(n.inputs[0], n)
        extra = [self.b.const(f"{n.name}.{k}", np.asarray(self.g.const(i))) for k, i in enumerate(n.inputs[1:])]
        y = self.b.op(n.op, [x] + extra, f"{n.name}.codes" if self.g.quant_of(n.name) not in (None, qx) else n.name,
                      quant=qx, **dict(n.attrs))
        qo = self.g.quant_of(n.name) or qx
        self.bind(n.name, self.convert(y, qx, qo, n) if qo != qx else y, qo)

    def product(self, n: Node, chain: list[Node]) -> None:
        out_name = chain[-1].name if chain else n.name
        qo = self.quant(out_name, n)
        (a, qa), (bb, qb) = self.act(n.inputs[0], n), self.act(n.inputs[1], n)
        if qa.per_channel or qb.per_channel:
            raise PassError("matmul/mul need per-tensor quantized operands", node=n)
        op = "qmatmul" if n.op == "matmul" else "qmul"
        acc = self.b.op(op, [a, bb], f"{n.name}.acc", a_zp=qa.zero_point[0], b_zp=qb.zero_point[0])
        lo_q, hi_q = self.clamp_bounds(chain, qo, 1, 1, n)
        y = self.requant(acc, qa.scale[0] * qb.scale[0] / qo.scale[0], qo, n, lo=lo_q, hi=hi_q, name=out_name)
        self.bind(out_name, y, qo)

    def quotient(self, n: Node) -> None:
        """div of two per-tensor activations -> qdiv (``ir/ops/integer_nn.py``)."""
        qo = self.quant(n.name, n)
        (a, qa), (b, qb) = self.act(n.inputs[0], n), self.act(n.inputs[1], n)
        if qa.per_channel or qb.per_channel or qo.per_channel:
            raise PassError("div of two activations needs per-tensor quantized operands", node=n)
        self.bind(n.name, self.b.op("qdiv", [a, b], n.name, quant=qo, a_zp=qa.zero_point[0], b_zp=qb.zero_point[0],
                                    **integerize_nn.divide_attrs(qa.scale[0] / (qb.scale[0] * qo.scale[0]), qo, n)),
                  qo)

    def pool(self, n: Node) -> None:
        qo = self.quant(n.name, n)
        x, qx = self.act(n.inputs[0], n)
        t = self.g.type_of(n.inputs[0])
        if n.op == "avgpool":
            acc = self.b.op("qavgpool", [x], f"{n.name}.acc", x_zp=qx.zero_point[0],
                            **{k: v for k, v in n.attrs if k != "count_include_pad"})
            out_hw = self.g.type_of(n.name).shape[2:]
            div = avgpool_divisor(t.shape[2:], n.attr_dict, out_hw).astype(np.float64)
            M = (qx.scale[0] / (qo.scale[0] * div))
            M = M.reshape(1, 1, *out_hw) if np.ptp(M) else M.reshape(-1)[0].reshape(())
        else:
            axes = (2, 3) if n.op == "global_avgpool" else tuple(a % t.rank for a in n.attr("axes", range(t.rank)))
            if n.op == "global_avgpool":
                axes = tuple(range(2, t.rank))
            acc = self.b.op("qsum", [x], f"{n.name}.acc", axes=axes, x_zp=qx.zero_point[0])
            count = 1 if n.op == "reduce_sum" else int(np.prod([t.shape[a] for a in axes]))
            M = np.asarray(qx.scale[0] / (qo.scale[0] * count))
        squeeze = n.op in ("mean", "reduce_sum") and not n.attr("keepdims", True)
        y = self.requant(acc, M, qo, n, name=None if squeeze else n.name)
        if squeeze:
            y = self.b.op("reshape", [y], n.name, quant=qo, shape=self.g.type_of(n.name).shape)
        self.bind(n.name, y, qo)

    def lut(self, n: Node, chain: list[Node] | None = None) -> None:
        """``n`` (one non-constant input, then the fused clamp ``chain``) as a table over the input codes."""
        chain = chain or []
        out_name = chain[-1].name if chain else n.name
        qo = self.quant(out_name, n)
        xi = next(i for i in n.inputs if not self.g.is_const(i))
        x, qx = self.act(xi, n)
        if qx.per_channel or qx.bits > 16:
            raise PassError("lookup tables need a per-tensor input of at most 16 bits", node=n)
        lo, hi = qx.qrange
        codes = np.arange(lo, hi + 1, dtype=np.int64)
        real = dequantize(codes, qx)
        args = [real if i == xi else np.asarray(self.g.const(i), np.float32).reshape(()) for i in n.inputs]
        (fx,) = op_def(n.op).kernel(args, n.attr_dict)
        for c in chain:                                             # fused clamps: scalar bounds only
            bounds = [np.asarray(self.g.const(i), np.float32) for i in c.inputs if self.g.is_const(i)]
            if any(b.size != 1 for b in bounds):
                raise PassError("a per-channel clamp after a table is not supported", node=c)
            cargs = [fx] + [b.reshape(()) for b in bounds]
            (fx,) = op_def(c.op).kernel(cargs, c.attr_dict)
        table = quantize(np.asarray(fx), qo).astype(DTYPES[_dtype(qo)])
        y = self.b.op("lut", [x, self.b.const(f"{n.name}.table", table)], out_name, quant=qo, in_min=lo)
        self.bind(out_name, y, qo)

    def move(self, n: Node) -> None:
        x, qx = self.act(n.inputs[0], n)
        attrs = dict(n.attrs)
        if n.op == "pad":
            if attrs.get("mode", "constant") == "constant":
                attrs["value"] = int(np.clip(np.rint(attrs.get("value", 0.0) / qx.scale[0]) + qx.zero_point[0],
                                             *qx.qrange))
        qo = self.g.quant_of(n.name) or qx
        y = self.b.op(n.op, [x], n.name, quant=qx, **attrs)
        self.bind(n.name, self.convert(y, qx, qo, n) if qo != qx else y, qo)

    def as_gather(self, n: Node, source_index) -> None:
        """A data-movement op given by ``source_index(shape, attrs)`` (flat source of each output element)
        as reshape -> gather of constant indices -> reshape, on the integer codes."""
        x, qx = self.act(n.inputs[0], n)
        shape = self.g.type_of(n.inputs[0]).shape
        flat = self.b.op("reshape", [x], f"{n.name}.flat", quant=qx, shape=(int(np.prod(shape)),))
        idx = self.b.const(f"{n.name}.idx", source_index(shape, n.attr_dict).reshape(-1).astype(np.int64))
        y = self.b.op("gather", [flat, idx], f"{n.name}.gather", quant=qx, axis=0)
        y = self.b.op("reshape", [y], n.name, quant=qx, shape=self.g.type_of(n.name).shape)
        qo = self.g.quant_of(n.name) or qx
        self.bind(n.name, self.convert(y, qx, qo, n) if qo != qx else y, qo)

    def concat(self, n: Node) -> None:
        """Every operand requantized to the output's type; a constant operand (a ViT's class token) is
        quantized to it once, here, as the simulated graph's output fake-quant does."""
        qo = self.quant(n.name, n)
        ins = []
        for i in n.inputs:
            if self.g.is_const(i) and i not in self.env:
                codes = quantize(np.asarray(self.g.const(i), np.float64), qo).astype(DTYPES[_dtype(qo)])
                ins.append(self.b.const(f"{n.name}.{i}.codes", codes))
                continue
            x, qx = self.act(i, n)
            ins.append(self.convert(x, qx, qo, n))
        self.bind(n.name, self.b.op("concat", ins, n.name, quant=qo, **dict(n.attrs)), qo)

    def exact_operand(self, name: str, node: Node) -> str:
        """An operand that is no quantized activation (a mask, token ids): its integer value as it is."""
        if name in self.env:
            y, q = self.env[name]
            if q is not None:
                raise PassError(f"operand %{name} is a quantized activation; an integer/i1 value is needed",
                                node=node)
            return y
        if self.g.is_const(name):
            return self.b.const(f"{node.name}.{name}", np.asarray(self.g.const(name)))
        raise PassError(f"operand %{name} was not lowered", node=node)

    def exact(self, n: Node) -> None:
        """An op on integer / i1 values only (the mask arithmetic of attention): the same op, unchanged."""
        ins = [self.exact_operand(i, n) for i in n.inputs]
        self.bind(n.name, self.b.op(n.op, ins, n.name, **dict(n.attrs)), None)

    def int_to_codes(self, n: Node) -> None:
        """``cast`` of an integer / i1 value to a quantized float (sentence-transformers' ``mask.float()``):
        the value as an int32 accumulator of scale 1, requantized to the output's codes."""
        qo = self.quant(n.name, n)
        x = self.exact_operand(n.inputs[0], n)
        if self.g.type_of(n.inputs[0]).dtype != "i32":
            x = self.b.op("cast", [x], f"{n.name}.i32", to="i32")
        self.bind(n.name, self.requant(x, np.asarray(1.0 / qo.scale[0]), qo, n), qo)

    def lower(self, n: Node, chain: list[Node]) -> None:
        """Lower ``n`` by the table (PassError with the reason when it cannot be)."""
        if n.op in EXACT_OPS and is_exact(self.g, n):
            return self.exact(n)
        rule = LOWERINGS.get(n.op)
        if rule is None:
            raise PassError(f"no integer lowering for op {n.op!r} (lowered ops: {', '.join(sorted(LOWERED))})",
                            node=n)
        why = rule.check(self.g, n)
        if why:
            raise PassError(why, node=n)
        rule.rewrite(self, n, chain)

    # ---- driver ------------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.g
        for name in g.inputs:
            if not g.type_of(name).is_float and g.quant_of(name) is None:     # token ids: unchanged
                self.bind(name, self.b.input(name, g.type_of(name).shape, g.type_of(name).dtype), None)
                continue
            q = self.quant(name)
            if self.raw:
                x = self.b.input(name, g.type_of(name).shape, _dtype(q), quant=q)
            else:
                xf = self.b.input(name, g.type_of(name).shape, "f32")
                x = self.b.op("quantize", [xf], f"{name}.q", quant=q, scale=q.scale, zero_point=q.zero_point,
                              bits=q.bits, signed=q.signed, dtype=_dtype(q))
            self.bind(name, x, q)
        self.find_chains()
        for n in g.nodes:
            if n.name in self.skip:
                continue
            self.lower(n, self.fused.get(n.name, (n, []))[1])
        outs, names = [], {}
        for name in g.outputs:
            y, q = self.env[name]
            if not self.raw and q is not None:
                axis = {"axis": q.axis} if q.axis is not None else {}
                codes = y
                y = self.b.op("dequantize", [y], f"{name}.dq", scale=q.scale, zero_point=q.zero_point, **axis)
                # the dequantized output keeps the float graph's name (its integer codes get another)
                if name not in self.b.values or (codes == name and name not in self.b.inputs):
                    if name in self.b.values:
                        names[codes] = self.b.fresh(f"{name}.codes")
                    names[y] = name
            outs.append(y)
        ig = self.b.build(outs)
        return rename(ig, names) if names else ig


# ---- the table ---------------------------------------------------------------------------------------
# ops computed unchanged when they read and write integer / i1 values only (no QuantType anywhere)
EXACT_OPS = INTEGER_PREDICATES | {"cast", "reshape", "transpose", "slice", "concat", "gather", "where", "identity",
                                  "add", "sub", "mul", "cumsum"}       # + position ids counted from a mask


def is_exact(g: Graph, n: Node) -> bool:
    """Every operand and result of ``n`` is an integer or i1 value without a QuantType."""
    vals = list(n.inputs) + list(n.outputs)
    return all(not g.type_of(v).is_float and g.quant_of(v) is None for v in vals)


def _check_exact(g: Graph, n: Node) -> str | None:
    return None if is_exact(g, n) else f"{n.op} of a float activation has no integer lowering"


def _int_to_float(g: Graph, n: Node) -> bool:
    x = n.inputs[0]
    return not g.type_of(x).is_float and g.quant_of(x) is None and g.type_of(n.name).is_float


def _cast(low: "_Lowering", n: Node, chain: list[Node]) -> None:
    return low.int_to_codes(n) if _int_to_float(low.g, n) else low.exact(n)


def _ok(g: Graph, n: Node) -> str | None:
    return None


def _check_weighted(g: Graph, n: Node) -> str | None:
    w = n.inputs[op_def(n.op).weight]
    if not g.is_const(w):
        return f"weight %{w} is computed at run time; integerize needs a constant"
    return None


def _scalar_operand(g: Graph, n: Node) -> bool:
    """A binary op with exactly one constant operand, a scalar (a unary function of the other)."""
    consts = [i for i in n.inputs if g.is_const(i)]
    return len(n.inputs) == 2 and len(consts) == 1 and np.asarray(g.const(consts[0])).size == 1


def _check_binary(g: Graph, n: Node) -> str | None:
    consts = [i for i in n.inputs if g.is_const(i)]
    if not consts:
        return None if n.op in ("add", "sub", "mul", "div", "matmul", "maximum", "minimum") else \
            f"{n.op} of two activations has no integer lowering"
    if _scalar_operand(g, n) or (len(consts) == 1 and n.op in ("add", "sub", "mul")):
        return None
    return (f"constant operand %{consts[0]} of shape {list(np.shape(g.const(consts[0])))} "
            f"(only scalar constants, conv/linear weights and biases, and tensors added or multiplied are "
            f"lowered)")


def _binary(low: "_Lowering", n: Node, chain: list[Node]) -> None:
    if _scalar_operand(low.g, n):
        low.lut(n, chain)
    elif any(low.g.is_const(i) for i in n.inputs):
        low.with_const(n, chain)
    elif n.op in ("add", "sub"):
        low.add(n, chain)
    elif n.op in ("maximum", "minimum"):
        low.extremum(n)
    elif n.op == "div":
        low.quotient(n)
    else:
        low.product(n, chain)


def _squeeze_equal(a: np.ndarray) -> np.ndarray:
    """A scalar when every element of ``a`` is equal, else ``a``."""
    a = np.asarray(a)
    return a.reshape(-1)[0].reshape(()) if a.size and np.all(a == a.reshape(-1)[0]) else a


def _check_gather(g: Graph, n: Node) -> str | None:
    if g.is_const(n.inputs[0]):
        return "gather from a constant table (embedding lookup) has no integer lowering yet"
    return None if g.is_const(n.inputs[1]) else f"gather indices %{n.inputs[1]} are computed at run time"


def kernel_index(op: str):
    """``source_index(shape, attrs)`` of a data-movement op: its own kernel run on the element indices."""
    def source_index(shape, attrs):
        (idx,) = op_def(op).kernel([np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)], attrs)
        return idx
    return source_index


def _check_resize(g: Graph, n: Node) -> str | None:
    if n.attr("mode", "nearest") not in ("nearest", "linear"):
        return f"resize mode {n.attr('mode')!r} has no integer lowering (nearest and linear have)"
    if n.attr("coord") == "tf_crop_and_resize":
        return "resize with tf_crop_and_resize (extrapolated values) has no integer lowering"
    return None


@dataclass(frozen=True)
class Lowering:
    """How one float op becomes integer ops: ``check`` says why it cannot (None: it can), ``rewrite`` emits."""

    rewrite: Callable[["_Lowering", Node, list[Node]], None]
    check: Callable[[Graph, Node], str | None] = _ok


LOWERINGS: dict[str, Lowering] = {
    "conv2d": Lowering(lambda low, n, c: low.weighted(n, c), _check_weighted),
    "linear": Lowering(lambda low, n, c: low.weighted(n, c), _check_weighted),
    **{op: Lowering(_binary, _check_binary) for op in SCALAR_BINARY | {"matmul"}},
    **{op: Lowering(lambda low, n, c: low.pool(n)) for op in ("avgpool", "global_avgpool", "mean", "reduce_sum")},
    **{op: Lowering(lambda low, n, c: low.move(n)) for op in MOVE_OPS},
    "concat": Lowering(lambda low, n, c: low.concat(n)),
    "reverse_sequence": Lowering(lambda low, n, c: low.as_gather(n, reverse_sequence_index)),
    "resize": Lowering(lambda low, n, c: low.as_gather(n, kernel_index("resize")) if n.attr("mode", "nearest") ==
                       "nearest" else low.resize_linear(n), _check_resize),
    "gather": Lowering(*integerize_nn.with_embed(lambda low, n, c: low.on_codes(n), _check_gather)),
    **{op: Lowering(lambda low, n, c: low.on_codes(n)) for op in ("reduce_max", "reduce_min")},
    **{op: Lowering(lambda low, n, c: low.index_of_extremum(n)) for op in ("argmax", "argmin")},
    "where": Lowering(lambda low, n, c: low.select(n),
                      lambda g, n: None if g.is_const(n.inputs[0]) or g.quant_of(n.inputs[0]) is None else
                      "where with a quantized condition"),
    **{op: Lowering(lambda low, n, c: low.lut(n)) for op in LUT_OPS},
    **{op: Lowering(lambda low, n, c: low.exact(n), _check_exact) for op in INTEGER_PREDICATES | {"cumsum"}},
    "cast": Lowering(_cast, lambda g, n: None if _int_to_float(g, n) else _check_exact(g, n)),
    "softmax": Lowering(integerize_nn.softmax),                       # transformer ops: integerize_nn
    "layernorm": Lowering(integerize_nn.layernorm, integerize_nn.check_layernorm),
}
LOWERED = frozenset(LOWERINGS)


def lowering_status(op: str) -> str | None:
    """None when ``op`` has an integer lowering, else why not (for ``inspect --check``)."""
    if op == "conv_transpose2d":
        return "only with constant weights (canonicalize turns those into conv2d)"
    return None if op in LOWERINGS else f"op {op!r} has no integer lowering"


def integerize(g: Graph, *, raw: bool = False) -> Graph:
    """Replace every float op of a quantized graph by integer ops with dyadic requantization."""
    if any(op_def(n.op).integer for n in g.nodes):
        return g
    ig = _Lowering(g, raw).run()
    try:
        return verify_integer(ig)
    except VerifyError as e:
        raise PassError(f"integer code would overflow: {e}") from None
