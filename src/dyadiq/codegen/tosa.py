# SPDX-License-Identifier: Apache-2.0
"""Integer graph -> MLIR TOSA (v1.0, generic form), bit-exact with the kernels of ``ir/ops/integer.py``.

The module's ``main`` takes and returns the integer tensors between the graph's ``quantize`` and
``dequantize`` (those two run in numpy, ``targets.tosa``: TOSA has no float64 division, and the integer
part stays free of float ops). Rank-4 tensors live in NHWC inside the module (one ``tosa.transpose`` at
each end); weights are OHWI (depthwise: ``[KH, KW, C, M]``).

- ``qconv2d`` -> ``tosa.conv2d`` / ``tosa.depthwise_conv2d`` (i8 x i8, ``acc_type = i32``, input zero
  point operand; TOSA skips padded taps, so padding contributes ``(x_zp - x_zp) * w = 0`` as in dyadiq);
  grouped convs are sliced per group and concatenated; i16 activations run as two i8 convs (``_conv16``). TOSA needs ``(H + pads - window) % stride == 0``:
  the bottom/right pad is set to what the output rows read (extra rows are never read; unused input rows
  are sliced off). ``qlinear`` -> 1x1 ``tosa.conv2d`` on ``[rows, 1, 1, K]``; ``qmatmul`` -> ``tosa.matmul``.
- ``requantize`` -> ``tosa.rescale`` (``SINGLE_ROUND``, per channel) + ``tosa.clamp`` (or per-channel
  ``maximum``/``minimum``); ``qadd`` -> int32 ``mul``/``add``/``arithmetic_right_shift`` (exactness and
  its limits: ``codegen.tosa_rescale``).
- ``qsum`` -> ``cast`` + ``reduce_sum`` - ``x_zp * n``; ``qavgpool`` -> depthwise conv with ones and the
  input zero point; ``maxpool`` -> ``tosa.max_pool2d``; ``lut`` over i8 -> ``tosa.table`` (256 entries),
  other widths -> ``tosa.gather`` on clamped indices; ``qmul`` -> int32 ``tosa.mul``.
- ``reshape`` / ``transpose`` / ``concat`` / ``slice`` / ``pad`` (constant) map one to one (axes moved to NHWC).
"""
from __future__ import annotations

import numpy as np

from ..errors import CodegenError
from ..ir.graph import Graph, Node
from ..ir.ops.nn import pool_out_type
from ..ir.ops.shape import _slices
from ..ir.ops.window import hw_attrs
from . import tosa_rescale as rs
from .tosa_builder import NCHW_TO_NHWC, NHWC_TO_NCHW, Builder, Tensor, _bits

INT_TYPES = {"i8": "i8", "i16": "i16", "i32": "i32", "i4": "i8"}
BOUNDARY = ("quantize", "dequantize")
SUPPORTED = ("qconv2d", "qlinear", "qmatmul", "requantize", "qadd", "qmul", "qsum", "qavgpool", "lut",
             "maxpool", "reshape", "transpose", "concat", "slice", "pad", "identity") + BOUNDARY


class _Emitter(Builder):
    def __init__(self, g: Graph):
        super().__init__()
        self.g, self.env = g, {}

    # ---- values ---------------------------------------------------------------------------------
    def value(self, name: str) -> Tensor:
        if name not in self.env and self.g.is_const(name):     # a constant operand (qadd / qmul / concat)
            dt = self.g.type_of(name).dtype
            if dt not in INT_TYPES:
                raise CodegenError(f"constant %{name} is {dt}: TOSA operands here are i8, i16 or i32")
            self.env[name] = self.const(np.asarray(self.g.const(name)), INT_TYPES[dt])
        if name not in self.env:
            raise CodegenError(f"value %{name} is not available in the TOSA module")
        return self.env[name]

    def operands(self, n: Node) -> tuple[Tensor, Tensor]:
        """The two operands of an elementwise op at one rank (numpy broadcasting: leading ones) and, at rank
        4, in one layout (NHWC when either is)."""
        a, b = self.value(n.inputs[0]), self.value(n.inputs[1])
        r = max(len(a.shape), len(b.shape))
        a, b = (self.reshape(x, (1,) * (r - len(x.shape)) + tuple(x.shape)) if len(x.shape) < r else x
                for x in (a, b))
        if r == 4 and a.nhwc != b.nhwc:
            a, b = (x if x.nhwc else self.transpose(x, NCHW_TO_NHWC, nhwc=True) for x in (a, b))
        return a, b

    def native(self, name: str) -> Tensor:
        """``name`` in the graph's own layout (NCHW for rank 4)."""
        x = self.value(name)
        return self.transpose(x, NHWC_TO_NCHW) if x.nhwc else x

    def nhwc(self, name: str) -> Tensor:
        x = self.value(name)
        if len(x.shape) != 4 or x.nhwc:
            return x
        return self.transpose(x, NCHW_TO_NHWC, nhwc=True)

    def np_const(self, n: Node, i: int) -> np.ndarray:
        if not self.g.is_const(n.inputs[i]):
            raise CodegenError(f"operand %{n.inputs[i]} must be a constant", node=n)
        return np.asarray(self.g.const(n.inputs[i]))

    def axis(self, x: Tensor, ax: int) -> int:
        ax %= len(x.shape)
        return NCHW_TO_NHWC.index(ax) if x.nhwc else ax

    # ---- convolutions ---------------------------------------------------------------------------
    def _window(self, x: Tensor, k, s, p, d, out_hw):
        """(x sliced to what is read, TOSA pads (t, b, l, r)) so that every division is exact."""
        pads, crop = [], []
        for i, (size, kk, st, dl, lo, o) in enumerate(zip(x.shape[1:3], k, s, d, p[:2], out_hw)):
            need = (o - 1) * st + dl * (kk - 1) + 1 - lo           # input rows read, from row 0
            pads.append((lo, max(0, need - size)))
            crop.append(min(size, need))
        if tuple(crop) != x.shape[1:3]:
            x = self.op("slice", [x, self.shape_const([0, 0, 0, 0]),
                                  self.shape_const([x.shape[0], crop[0], crop[1], x.shape[3]])],
                        (x.shape[0], crop[0], crop[1], x.shape[3]), x.et, nhwc=True)
        return x, (pads[0][0], pads[0][1], pads[1][0], pads[1][1])

    def _conv(self, x: Tensor, w_ohwi: np.ndarray, bias: np.ndarray, zp: int, k, s, p, d, out_hw,
              depthwise: bool = False, acc_bound: int = 1 << 31) -> Tensor:
        x, pads = self._window(x, k, s, p, d, out_hw)
        if x.et == "i16":
            return self._conv16(x, w_ohwi, bias, zp, k, s, pads, d, out_hw, depthwise, acc_bound)
        acc = "i32"
        attrs = (f"acc_type = {acc}, dilation = array<i64: {d[0]}, {d[1]}>, "
                 f"pad = array<i64: {', '.join(map(str, pads))}>, stride = array<i64: {s[0]}, {s[1]}>")
        if depthwise:                     # [C*M, 1, KH, KW] -> [KH, KW, C, M]
            c = x.shape[3]
            wt = w_ohwi.reshape(c, -1, w_ohwi.shape[1], w_ohwi.shape[2]).transpose(2, 3, 0, 1)
        else:
            wt = w_ohwi
        oc = w_ohwi.shape[0]
        ins = [x, self.const(wt, "i8"), self.const(bias.astype(np.int64), acc), self.zp(zp, x.et),
               self.zp(0, "i8")]
        return self.op("depthwise_conv2d" if depthwise else "conv2d", ins, (x.shape[0], *out_hw, oc), acc,
                       attrs, nhwc=True)

    def _conv16(self, x: Tensor, w_ohwi, bias, zp: int, k, s, pads, d, out_hw, depthwise, acc_bound) -> Tensor:
        """i16 activations as two i8 convolutions (IREE's rescale of TOSA's i48 accumulator sign-extends
        wrongly, so no i48): ``x = 256 h + l + 128`` with ``h = x >> 8``, ``l = (x & 255) - 128``, and zero
        points ``h_zp = floor(zp / 256)``, ``l_zp = (zp mod 256) - 128`` (``256 h_zp + l_zp = zp - 128``), so
        ``sum((x - zp) w) = 256 * sum((h - h_zp) w) + sum((l - l_zp) w)`` over the same taps (TOSA skips
        padded taps in both). Both sums are int32: ``|256 * conv_h| <= acc_bound + K * 255 * 128 + |b|``."""
        fan_in = int(np.prod(w_ohwi.shape[1:]))
        if acc_bound + fan_in * 255 * 128 + int(np.abs(bias).max(initial=0)) >= 1 << 31:
            raise CodegenError(f"16-bit convolution (fan-in {fan_in}) has no int32 split form for accumulators "
                               f"up to {acc_bound}")
        x = self.cast(x, "i32")                                  # (int16 elementwise ops are not in TOSA's profiles)
        h = self.cast(self.op("arithmetic_right_shift", [x, self.scalar(x, 8)], x.shape, "i32", "round = false",
                              True), "i8")
        low = self.op("bitwise_and", [x, self.scalar(x, 255)], x.shape, "i32", nhwc=True)
        low = self.cast(self.binary("sub", low, self.scalar(low, 128)), "i8")
        zero = np.zeros_like(bias)
        conv_h = self._conv(h, w_ohwi, zero, zp // 256, k, s, (pads[0], pads[2], pads[1], pads[3]), d, out_hw,
                            depthwise)
        conv_l = self._conv(low, w_ohwi, bias, zp % 256 - 128, k, s, (pads[0], pads[2], pads[1], pads[3]), d,
                            out_hw, depthwise)
        return self.binary("add", self.mul(conv_h, self.scalar(conv_h, 256)), conv_l)

    def qconv2d(self, n: Node) -> Tensor:
        x = self.nhwc(n.inputs[0])
        if x.et not in ("i8", "i16"):
            raise CodegenError(f"qconv2d input {x.et}: TOSA convolutions take i8 or i16 activations", node=n)
        _, s, p, d = hw_attrs(n.attr_dict)
        w = self.np_const(n, 1).astype(np.int64)                      # [O, I/g, KH, KW]
        b = self.np_const(n, 2).astype(np.int64).reshape(-1) if len(n.inputs) == 3 else np.zeros(w.shape[0], np.int64)
        k, groups, zp = w.shape[2:], int(n.attr("groups", 1)), int(n.attr("x_zp", 0))
        out_hw = self.g.type_of(n.name).shape[2:]
        w_ohwi = w.transpose(0, 2, 3, 1)
        cin = x.shape[3]
        bound = 1 << (int(n.attr("acc_bits", 32)) - 1)
        if groups == 1:
            return self._conv(x, w_ohwi, b, zp, k, s, p, d, out_hw, acc_bound=bound)
        if groups == cin and w.shape[1] == 1:
            return self._conv(x, w_ohwi, b, zp, k, s, p, d, out_hw, depthwise=True, acc_bound=bound)
        parts, og, ig = [], w.shape[0] // groups, cin // groups
        for gi in range(groups):
            xs = self.op("slice", [x, self.shape_const([0, 0, 0, gi * ig]),
                                   self.shape_const([*x.shape[:3], ig])], (*x.shape[:3], ig), "i8", nhwc=True)
            sl = slice(gi * og, (gi + 1) * og)
            parts.append(self._conv(xs, w_ohwi[sl], b[sl], zp, k, s, p, d, out_hw, acc_bound=bound))
        shape = (*parts[0].shape[:3], w.shape[0])
        return self.op("concat", parts, shape, "i32", "axis = 3 : i32", nhwc=True)

    def qlinear(self, n: Node) -> Tensor:
        x = self.native(n.inputs[0])
        if x.et not in ("i8", "i16"):
            raise CodegenError(f"qlinear input {x.et}: TOSA convolutions take i8 or i16 activations", node=n)
        w = self.np_const(n, 1).astype(np.int64)                      # [O, K]
        b = self.np_const(n, 2).astype(np.int64).reshape(-1) if len(n.inputs) == 3 else np.zeros(w.shape[0], np.int64)
        rows = int(np.prod(x.shape[:-1]))
        x4 = self.reshape(x, (rows, 1, 1, x.shape[-1]))
        y = self._conv(x4, w.reshape(w.shape[0], 1, 1, w.shape[1]), b, int(n.attr("x_zp", 0)),
                       (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (1, 1), acc_bound=1 << (int(n.attr("acc_bits", 32)) - 1))
        return self.reshape(y, (*x.shape[:-1], w.shape[0]))

    def qmatmul(self, n: Node) -> Tensor:
        a, b = self.native(n.inputs[0]), self.native(n.inputs[1])
        if a.et != "i8" or b.et != "i8" or a.shape[:-2] != b.shape[:-2]:
            raise CodegenError("qmatmul: TOSA matmul here needs i8 operands with equal batch dims", node=n)
        batch = int(np.prod(a.shape[:-2]))
        a3 = self.reshape(a, (batch, *a.shape[-2:]))
        b3 = self.reshape(b, (batch, *b.shape[-2:]))
        y = self.op("matmul", [a3, b3, self.zp(n.attr("a_zp", 0), "i8"), self.zp(n.attr("b_zp", 0), "i8")],
                    (batch, a.shape[-2], b.shape[-1]), "i32")
        return self.reshape(y, (*a.shape[:-1], b.shape[-1]))

    # ---- rescales -------------------------------------------------------------------------------
    def _vmax(self, n: Node, x: Tensor) -> int:
        """Largest ``|acc - in_zp|`` the requantize input can hold (proven ``acc_bits`` when known)."""
        zp = int(n.attr("in_zp", 0))
        lo, hi = -(1 << (_bits(x.et) - 1)), (1 << (_bits(x.et) - 1)) - 1
        prod = self.g.producers().get(n.inputs[0])
        if prod is not None and prod.attr("acc_bits") is not None:
            b = 1 << (int(prod.attr("acc_bits")) - 1)
            lo, hi = max(lo, -b), min(hi, b)
        return max(abs(lo - zp), abs(hi - zp))

    def requantize(self, n: Node) -> Tensor:
        x = self.value(n.inputs[0])
        out_et = INT_TYPES.get(n.attr("dtype"))
        if out_et not in ("i8", "i16"):
            raise CodegenError(f"requantize to {n.attr('dtype')} has no TOSA rescale here", node=n)
        m, s = self.np_const(n, 1).astype(np.int64), self.np_const(n, 2).astype(np.int64)
        zp_in, zp_out = int(n.attr("in_zp", 0)), int(n.attr("out_zp", 0))
        lo, hi = np.asarray(n.attr("qmin"), np.int64), np.asarray(n.attr("qmax"), np.int64)
        if len(n.inputs) >= 4:
            lo = np.maximum(lo, self.np_const(n, 3).astype(np.int64))
        if len(n.inputs) == 5:
            hi = np.minimum(hi, self.np_const(n, 4).astype(np.int64))
        try:
            plan = rs.rescale_plan(self._vmax(n, x), m, s, zp_out, lo, hi)
        except ValueError as e:
            raise CodegenError(str(e), node=n) from None
        if plan is not None or (zp_in and x.et != "i8"):
            x = self.cast(x, "i32")
            if plan is not None:
                x = self.clamp(x, plan[0] + zp_in, plan[1] + zp_in)     # saturating inputs (tosa_rescale)
            if zp_in:
                x = self.binary("sub", x, self.scalar(x, zp_in))
                zp_in = 0
        # axes of the stored tensor along which (m, s) vary go last, flattened into one channel axis
        ms = np.broadcast_arrays(m, s, np.empty(self.g.type_of(n.inputs[0]).shape, np.int8))[:2]
        ms = [a.transpose(NCHW_TO_NHWC) if x.nhwc else a for a in ms]
        rank = len(x.shape)
        vary = [a for a in range(rank) if any(np.any(np.diff(v, axis=a) != 0) for v in ms)]
        keep = [a for a in range(rank) if a not in vary]
        perm = keep + vary
        flat = [v.transpose(perm).reshape(-1, int(np.prod([x.shape[a] for a in vary], dtype=np.int64)))[0]
                for v in ms]
        xt = self.transpose(x, perm) if vary and vary != [rank - 1] else x
        xr = xt
        if vary and vary != [rank - 1]:
            xr = self.reshape(xt, (int(np.prod(xt.shape[:len(keep)], dtype=np.int64)), flat[0].size))
        # TOSA wants output_zp = 0 for i16 results: rescale to i32, add the zero point, clamp, cast
        r_et, r_zp = ("i32", 0) if out_et == "i16" and zp_out else (out_et, zp_out)
        y = self.op("rescale", [xr, self.const(flat[0], "i32"), self.const(flat[1], "i8"), self.zp(zp_in, x.et),
                                self.zp(r_zp, r_et)], xr.shape, r_et,
                    "input_unsigned = false, output_unsigned = false, "
                    f"per_channel = {'true' if vary else 'false'}, "
                    "rounding_mode = #tosa<rounding_mode<SINGLE_ROUND>>, scale32 = true")
        if xr is not xt:
            y = self.reshape(y, xt.shape)
        if xt is not x:
            y = self.transpose(y, list(np.argsort(perm)))
        y = Tensor(y.ssa, y.shape, y.et, x.nhwc)
        if r_et != out_et:
            y = self.binary("add", y, self.scalar(y, zp_out))
        y = self.clamp(y, self.chan(lo, y) if lo.size > 1 else lo, self.chan(hi, y) if hi.size > 1 else hi)
        return self.cast(y, out_et)

    def qadd(self, n: Node) -> Tensor:
        a, b = self.operands(n)
        out_et = INT_TYPES.get(n.attr("dtype"))
        ranges = [self._operand_range(name, x, int(n.attr(zp))) for name, x, zp in
                  ((n.inputs[0], a, "a_zp"), (n.inputs[1], b, "b_zp"))]
        if None in ranges or out_et not in ("i8", "i16"):
            raise CodegenError("qadd: the int32 TOSA form needs i8 or i16 operands (or constants) and output",
                               node=n)
        vmax = max(ranges)
        am, bm = int(n.attr("a_m")), int(n.attr("b_m"))
        try:                                       # a negative multiplier (a subtraction) negates its operand
            p = rs.qadd_plan(abs(am), abs(bm), int(n.attr("shift")), vmax)
        except ValueError as e:
            raise CodegenError(str(e), node=n) from None

        def centred(x: Tensor, zp: int, m: int) -> Tensor:
            """``x - zp``, or ``zp - x`` for ``m < 0``, in int32 (``|.| <= vmax`` either way)."""
            x, z = self.cast(x, "i32"), self.scalar(Tensor("", x.shape, "i32"), zp)
            return self.binary("sub", z, x) if m < 0 else self.binary("sub", x, z)
        va, vb = centred(a, int(n.attr("a_zp")), am), centred(b, int(n.attr("b_zp")), bm)
        c = lambda v: self.scalar(va, v)
        carry = None
        for j, (da, db) in enumerate(zip(p["a"], p["b"])):           # c = (P_j + c) >> k; tosa_rescale
            pj = self.binary("add", self.mul(va, c(da)), self.mul(vb, c(db)))
            if carry is not None:
                pj = self.binary("add", pj, carry)
            if j < len(p["a"]) - 1:
                carry = self.op("arithmetic_right_shift", [pj, c(p["k"])], pj.shape, "i32", "round = false", pj.nhwc)
        u = self.binary("add", pj, c(p["round"]))
        y = self.op("arithmetic_right_shift", [u, c(p["shift"])], u.shape, "i32", "round = false", u.nhwc)
        y = self.clamp(self.binary("add", y, c(n.attr("out_zp"))), n.attr("qmin"), n.attr("qmax"))
        return self.cast(y, out_et)

    def _operand_range(self, name: str, x: Tensor, zp: int) -> int | None:
        """Largest ``|x - zp|``: over the constant's own values, or over an i8 / i16 type; None for wider
        activations."""
        if self.g.is_const(name):
            return int(np.abs(np.asarray(self.g.const(name), np.int64) - zp).max(initial=0))
        return self._range(x.et, zp) if x.et in ("i8", "i16") else None

    @staticmethod
    def _range(et: str, zp: int) -> int:
        """Largest ``|x - zp|`` over the values of ``et``."""
        return max(abs(-(1 << (_bits(et) - 1)) - zp), abs((1 << (_bits(et) - 1)) - 1 - zp))

    def qmul(self, n: Node) -> Tensor:
        a, b = self.operands(n)
        va = self.binary("sub", self.cast(a, "i32"), self.scalar(Tensor("", a.shape, "i32"), n.attr("a_zp", 0)))
        vb = self.binary("sub", self.cast(b, "i32"), self.scalar(Tensor("", b.shape, "i32"), n.attr("b_zp", 0)))
        return self.mul(va, vb)

    # ---- pools and sums -------------------------------------------------------------------------
    def qsum(self, n: Node) -> Tensor:
        x = self.value(n.inputs[0])
        t = self.g.type_of(n.inputs[0])
        axes = sorted({a % t.rank for a in n.attr("axes")})
        y = self.cast(x, "i32")
        for ax in axes:
            a = self.axis(y, ax)
            shape = tuple(1 if i == a else dd for i, dd in enumerate(y.shape))
            y = self.op("reduce_sum", [y], shape, "i32", f"axis = {a} : i32", y.nhwc)
        zp = int(n.attr("x_zp", 0))
        count = int(np.prod([t.shape[a] for a in axes]))
        return y if zp == 0 else self.binary("sub", y, self.scalar(y, zp * count))

    def qavgpool(self, n: Node) -> Tensor:
        x = self.nhwc(n.inputs[0])
        k, s, p, d = hw_attrs(n.attr_dict)
        c = x.shape[3]
        out_hw = self.g.type_of(n.name).shape[2:]
        if x.et not in ("i8", "i16"):
            raise CodegenError(f"qavgpool input {x.et}: TOSA depthwise sums take i8 or i16", node=n)
        return self._conv(x, np.ones((c, k[0], k[1], 1), np.int64), np.zeros(c, np.int64), int(n.attr("x_zp", 0)),
                          k, s, p, d, out_hw, depthwise=True)

    def maxpool(self, n: Node) -> Tensor:
        x = self.nhwc(n.inputs[0])
        k, s, p, d = hw_attrs(n.attr_dict)
        if tuple(d) != (1, 1):
            raise CodegenError("maxpool with dilation has no TOSA max_pool2d", node=n)
        out_hw = pool_out_type(self.g.type_of(n.inputs[0]), n.attr_dict).shape[2:]
        x, pads = self._window(x, k, s, p, d, out_hw)
        if max(pads) >= max(k):
            raise CodegenError(f"maxpool pads {pads} reach the kernel size (TOSA max_pool2d)", node=n)
        return self.op("max_pool2d", [x], (x.shape[0], *out_hw, x.shape[3]), x.et,
                       f"kernel = array<i64: {k[0]}, {k[1]}>, pad = array<i64: {', '.join(map(str, pads))}>, "
                       f"stride = array<i64: {s[0]}, {s[1]}>", nhwc=True)

    def lut(self, n: Node) -> Tensor:
        x = self.value(n.inputs[0])
        table = self.np_const(n, 1).astype(np.int64)
        in_min = int(n.attr("in_min"))
        out_et = INT_TYPES.get(self.g.type_of(n.name).dtype)
        if out_et is None:
            raise CodegenError(f"lut output {self.g.type_of(n.name).dtype} is not a TOSA integer type", node=n)
        if x.et == "i8" and out_et == "i8":                   # tosa.table: out = t[x + 128]
            idx = np.arange(-128, 128) - in_min
            t = np.where((idx >= 0) & (idx < table.size), table[np.clip(idx, 0, table.size - 1)], 0)
            return self.op("table", [x, self.const(t, "i8")], x.shape, "i8", nhwc=x.nhwc)
        i = self.binary("sub", self.cast(x, "i32"), self.scalar(Tensor("", x.shape, "i32"), in_min))
        i = self.clamp(i, 0, table.size - 1)
        size = int(np.prod(x.shape))
        vals = self.const(table.reshape(1, -1, 1), out_et)
        y = self.op("gather", [vals, self.reshape(i, (1, size))], (1, size, 1), out_et)
        return self.reshape(y, x.shape, nhwc=x.nhwc)

    # ---- data movement --------------------------------------------------------------------------
    def reshape_op(self, n: Node) -> Tensor:
        return self.reshape(self.native(n.inputs[0]), self.g.type_of(n.name).shape)

    def transpose_op(self, n: Node) -> Tensor:
        x = self.value(n.inputs[0])
        perm = [int(v) % len(x.shape) for v in n.attr("perm")]
        if x.nhwc:                                  # graph perm over NCHW, composed with the NHWC storage
            perm = [NCHW_TO_NHWC.index(v) for v in perm]
        return self.transpose(x, perm)

    def concat(self, n: Node) -> Tensor:
        xs = [self.value(i) for i in n.inputs]
        xs = [self.nhwc(i) for i in n.inputs] if any(x.nhwc for x in xs) else xs
        ax = self.axis(xs[0], int(n.attr("axis")))
        shape = list(xs[0].shape)
        shape[ax] = sum(x.shape[ax] for x in xs)
        return self.op("concat", xs, shape, xs[0].et, f"axis = {ax} : i32", nhwc=xs[0].nhwc)

    def slice(self, n: Node) -> Tensor:
        x = self.native(n.inputs[0])
        sl = _slices(x.shape, n.attr_dict)
        starts, sizes = [], []
        for ax, s in enumerate(sl):
            idx = np.arange(x.shape[ax])[s]
            if s.step not in (None, 1):
                raise CodegenError("strided slice has no TOSA form here", node=n)
            starts.append(int(idx[0]) if idx.size else 0)
            sizes.append(int(idx.size))
        return self.op("slice", [x, self.shape_const(starts), self.shape_const(sizes)], sizes, x.et)

    def pad(self, n: Node) -> Tensor:
        if n.attr("mode", "constant") != "constant":
            raise CodegenError(f"pad mode {n.attr('mode')!r} has no TOSA form", node=n)
        x = self.native(n.inputs[0])
        r, p = len(x.shape), n.attr("pads")
        pads = [int(v) for i in range(r) for v in (p[i], p[i + r])]
        shape = [x.shape[i] + pads[2 * i] + pads[2 * i + 1] for i in range(r)]
        return self.op("pad", [x, self.shape_const(pads), self.const(np.asarray([int(n.attr("value", 0))]), x.et)],
                       shape, x.et)

    def identity(self, n: Node) -> Tensor:
        return self.value(n.inputs[0])

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> tuple[str, list[str], list[str]]:
        g = self.g
        prods = g.producers()
        ins = []
        for name in g.inputs:
            q = [c for c in g.consumers().get(name, []) if c.op == "quantize"]
            real = q[0].name if q else name
            t = g.type_of(real)
            et = INT_TYPES.get(t.dtype)
            if et is None or t.dtype == "i4":
                raise CodegenError(f"graph input %{name} of type {t.dtype} is not a TOSA integer type")
            arg = Tensor(f"%arg{len(ins)}", t.shape, et)
            self.env[real] = arg
            ins.append(real)
        outs = [prods[o].inputs[0] if o in prods and prods[o].op == "dequantize" else o for o in g.outputs]
        table = {"reshape": self.reshape_op, "transpose": self.transpose_op}
        for n in g.nodes:
            if n.op in BOUNDARY:
                continue
            fn = table.get(n.op) or (getattr(self, n.op, None) if n.op in SUPPORTED else None)
            if fn is None:
                raise CodegenError(f"op {n.op!r} has no TOSA lowering (supported: {', '.join(SUPPORTED)})", node=n)
            self.env[n.name] = fn(n)
        res = [self.native(o) for o in outs]
        args = ", ".join(f"{self.env[i].ssa}: {self.env[i].type}" for i in ins)
        rtypes = ", ".join(r.type for r in res)
        head = f'  func.func @main({args}) -> ({rtypes}) {{'
        ret = f'    "func.return"({", ".join(r.ssa for r in res)}) : ({rtypes}) -> ()'
        text = "\n".join(["module {", head, *self.lines, ret, "  }", "}", ""])
        return text, ins, outs


def to_tosa_text(ig: Graph) -> tuple[str, list[str], list[str]]:
    """(MLIR text of ``main``, the integer values it takes, those it returns) for the integer graph ``ig``."""
    return _Emitter(ig).run()


def normalize(text: str) -> str:
    """Parse and verify ``text`` with the MLIR bindings; the module printed in generic form (a fixed point
    of parse -> print, the form IREE reads)."""
    from torch_mlir import ir
    with ir.Context(), ir.Location.unknown():
        try:
            m = ir.Module.parse(text)
        except Exception as e:
            raise CodegenError(f"TOSA module does not parse: {_first_line(e)}") from e
        try:
            ok = m.operation.verify()
        except Exception as e:
            raise CodegenError(f"TOSA module does not verify: {_first_line(e)}") from e
        if not ok:
            raise CodegenError("TOSA module does not verify")
        return m.operation.get_asm(print_generic_op_form=True, large_elements_limit=None)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " | ".join(lines[:3])


def to_tosa(ig: Graph) -> str:
    """The verified TOSA module (generic form) of the integer graph ``ig``."""
    return normalize(to_tosa_text(ig)[0])
