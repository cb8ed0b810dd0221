# SPDX-License-Identifier: Apache-2.0
"""Fold the quantization ops of a pre-quantized import into QuantTypes (docs/numerics.md).

Patterns (``Q`` = ``quantize_linear``, ``DQ`` = ``dequantize_linear``, ``FQ`` = ``fake_quant``):

- ``FQ(c)`` / ``DQ(c)`` / ``DQ(Q(c))`` of a constant ``c`` -> the constant ``scale (q - zp)`` on its grid,
  carrying the QuantType (weights: conv2d / linear input 1; a DQ'd int32 bias keeps only its float value,
  and ``round(b / (s_x s_w))`` is checked to give back the model's int32 codes);
- ``DQ(Q(x))`` and ``FQ(x)`` of a run-time value -> ``x`` carrying the QuantType; the float ops between
  quantization points stay, so a conv whose ``Q`` follows a ``Relu`` is left fused (numerics.md rule 4)
  and a ``Relu`` / ``Clip`` absorbed into the ``Q`` range (ORT) is the requantize clamp;
- ``DQ(move(Q(x)))``, ``move`` = reshape / transpose / slice / identity / maxpool / pad / concat on the
  integers (QOperator) -> the same move on the float ``x``, inheriting its QuantType;
- constant ``transpose`` / ``reshape`` are folded (the QuantType's axis follows), ``matmul(x, W)`` with a
  2-D constant ``W`` -> ``linear(x, Wᵀ)`` and ``linear/conv2d(x, W) + c`` -> a layer with bias ``c``, so
  ONNX ``Gemm`` / ``MatMul`` on dequantized weights become layers ``integerize`` lowers;
- data-movement outputs without a ``Q`` (and ``concat`` of equally quantized inputs) inherit their
  input's QuantType.

What is not expressible exactly is approximated and recorded, one entry per node, in ``report``
(``{"node", "op", "kind", "value", "max_lsb", "message"}``, ``max_lsb`` the expected worst deviation in
LSBs of ``value``, None when integerize will refuse the graph): a value quantized twice with different
parameters (``requantize``: identity + requantize, double rounding, ``0.5 + 0.5 s_1 / s_2`` plus the part of
the second range the first clips), a node reading the unquantized
value of a quantized tensor (``raw-read``), weights that are asymmetric / wider than 8 bits / per-channel
on another axis / unquantized (``weight``, re-quantized 8-bit symmetric per output channel unless the
codes fit a signed <= 8-bit grid exactly), a bias whose int32 codes are not ``round(b / (s_x s_w))``
(``bias``), a clamp range narrower than the QuantType (``narrow-range``), and, for integerize,
unquantized values, per-channel activations, multipliers outside the dyadic range, unsupported ops.
Malformed parameters (zero/negative scale, zero point out of range, wrong per-axis length) and
Q/DQ pairs that disagree raise ``PassError`` naming the node.
"""
from __future__ import annotations

from ..errors import IRError, PassError
from ..ir.graph import Graph, Node, Value, verify
from ..ir.ops.fake_quant import QUANT_OPS, qrange, quant_type
from ..ir.ops.registry import ops_with
from ..ir.types import QuantType
from . import fold_fake_quant_check as check
from .fold_fake_quant_consts import ConstFolder, note

INT_MOVES = ops_with(moves_data=True)       # they run unchanged on integer codes


def fold_fake_quant(g: Graph, report: list | None = None) -> Graph:
    """Turn quantize/dequantize/fake-quant ops into QuantTypes on values; deviations go to ``report``."""
    if not any(n.op in QUANT_OPS for n in g.nodes):
        return g
    f = _Folder(g)
    out = f.run()
    if report is not None:
        report.extend(f.report)
    return out


def fold_fake_quant_report(g: Graph) -> tuple[Graph, list[dict]]:
    """``fold_fake_quant`` returning ``(graph, report)``."""
    report: list[dict] = []
    return fold_fake_quant(g, report), report


def quantize_missing(g: Graph, calib, *, bits: int = 8, method: str = "minmax") -> Graph:
    """Give the values a pre-quantized model left float (e.g. a PT2E output) a QuantType by calibration."""
    from .annotate_quant import annotate_activations
    from .calibrate import collect_ranges
    return annotate_activations(g, collect_ranges(g, calib, method, bits=bits), bits=bits)


def _clipped(have: QuantType, want: QuantType) -> float:
    """How far (in LSBs of ``want``) the range of ``want`` reaches beyond that of ``have``."""
    (lo1, hi1), (lo2, hi2) = ([min(s * (q - z) for s, z in zip(v.scale, v.zero_point) for q in v.qrange),
                               max(s * (q - z) for s, z in zip(v.scale, v.zero_point) for q in v.qrange)]
                              for v in (have, want))
    return max(0.0, lo1 - lo2, hi2 - hi1) / min(want.scale)


class _Folder(ConstFolder):
    """One run: walks the nodes once, then folds constants, fixes weights/biases and checks the contract."""

    def __init__(self, g: Graph):
        super().__init__(g)
        self.alias: dict[str, str] = {}         # removed value -> the value it now is
        self.float_of: dict[str, str] = {}      # integer tensor of a Q (or moved) -> its float value
        self.qnode: dict[str, Node] = {}        # value -> the Q / FQ node that gave it its QuantType
        self.direct: list[tuple[Node, str]] = []  # (node, input) read without going through a DQ / FQ

    def res(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def params(self, n: Node) -> tuple[dict, QuantType]:
        a = n.attr_dict
        try:
            return a, quant_type(a, self.values[n.inputs[0]].type.shape)
        except (IRError, KeyError) as e:
            raise PassError(f"malformed quantization parameters: {e}", node=n) from None

    # ---- the walk ------------------------------------------------------------------------------
    def run(self) -> Graph:
        for n in self.g.nodes:
            ins = [self.res(i) for i in n.inputs]
            if n.op in QUANT_OPS:
                self.quant_op(n, ins[0])
            elif any(o == i and i in self.float_of for o, i in zip(n.inputs, ins)):   # reads integers
                self.int_move(n, ins)
            else:
                for orig, i in zip(n.inputs, ins):
                    if orig == i:
                        self.direct.append((n, i))
                self.nodes.append(Node(n.op, tuple(ins), n.outputs, n.attrs))
        outputs = []
        for o in self.g.outputs:
            r = self.res(o)
            if r == o and r in self.float_of:
                raise PassError(f"graph output %{o} is the integer tensor of a quantize_linear; "
                                f"dyadiq needs float graph outputs (dequantize it in the model)")
            outputs.append(r)
        self.raw_reads()
        self.fold_constants()
        check.inherit(self, outputs)
        check.fix_layers(self, outputs)
        check.check_contract(self, outputs)
        return verify(self.build(outputs))

    def quant_op(self, n: Node, x: str) -> None:
        a, qt = self.params(n)
        if x in self.consts:
            c = self.quantized_const(n, x, a, qt)
            if c != n.name:
                self.alias[n.name] = c
        elif n.op == "dequantize_linear":
            src = self.float_of.get(x)
            if src is None:
                raise PassError(f"dequantizes %{x}, which no quantize_linear produces (an integer graph "
                                f"input or the result of an integer op cannot be folded)", node=n)
            have = self.quant[src]
            if (have.scale, have.zero_point, have.axis) != (qt.scale, qt.zero_point, qt.axis):
                raise PassError(f"dequantizes with {qt} what %{self.qnode[src].name} quantized with {have}",
                                node=n)
            self.alias[n.name] = src
        else:
            f = self.attach(n, x, a, qt)
            if n.op == "fake_quant":
                if f != n.name:
                    self.alias[n.name] = f
            else:
                self.float_of[n.name] = f

    def attach(self, n: Node, x: str, a: dict, qt: QuantType) -> str:
        """Give ``x`` the QuantType ``qt``; a second, different one goes on an identity copy (requantize)."""
        have = self.quant.get(x)
        if have is None:
            self.quant[x], self.qnode[x] = qt, n
            lo, hi = qrange(a)
            full_lo, full_hi = qt.qrange
            if (lo, hi) != (full_lo, full_hi):
                note(self.report, n, "narrow-range", x, max(lo - full_lo, full_hi - hi),
                     f"clamps to [{lo}, {hi}], the {qt} range is [{full_lo}, {full_hi}]: differs only "
                     f"where the model saturates")
            return x
        if have == qt:
            return x
        self.values[n.name] = Value(n.name, self.values[x].type)
        self.nodes.append(Node.make("identity", [x], n.name))
        self.quant[n.name], self.qnode[n.name] = qt, n
        lsb = 0.5 + 0.5 * max(have.scale) / min(qt.scale) + _clipped(have, qt)
        note(self.report, n, "requantize", n.name, lsb,
             f"%{x} is already quantized as {have}; quantizing it again as {qt} rounds twice")
        return n.name

    def int_move(self, n: Node, ins: list[str]) -> None:
        """A data-movement op on the integers of a Q: the same op on the float value."""
        if n.op not in INT_MOVES or any(o != i or i not in self.float_of for o, i in zip(n.inputs, ins)):
            bad = next(i for o, i in zip(n.inputs, ins) if o == i and i in self.float_of)
            raise PassError(f"reads the integer tensor %{bad} of a quantize_linear; only dequantize_linear "
                            f"and data movement can be folded", node=n)
        src = [self.float_of[i] for i in ins]
        qs = {self.quant[s] for s in src}
        if len(qs) != 1:
            raise PassError("concatenates integer tensors quantized differently", node=n)
        qt = qs.pop()
        attrs = n.attr_dict
        if n.op == "pad" and attrs.get("mode", "constant") == "constant":
            if qt.per_channel:
                raise PassError("constant padding of a per-channel quantized integer tensor", node=n)
            attrs["value"] = float(qt.scale[0] * (float(attrs.get("value", 0)) - qt.zero_point[0]))
        self.values[n.name] = Value(n.name, self.values[n.name].type.with_dtype(self.values[src[0]].type.dtype))
        self.nodes.append(Node.make(n.op, src, n.outputs, **attrs))
        self.quant[n.name] = qt
        self.float_of[n.name] = n.name

    def raw_reads(self) -> None:
        """Nodes that read a value directly although the model quantized it for its other readers."""
        for n, i in self.direct:
            q = self.qnode.get(i)
            if q is not None:
                note(self.report, n, "raw-read", i, 0.5,
                     f"reads %{i} unquantized while %{q.name} quantizes it; it now reads the quantized value")
