# SPDX-License-Identifier: Apache-2.0
"""One C++ function per integer op, in the synthesizable subset (static sizes, no heap, no recursion).

Every function reads its operands from arrays and writes its output array; constants are the globals of
``weights.h``. Arithmetic follows ``ir/ops/integer.py`` exactly, in ``ap_int`` types whose widths come
from ``ranges``: products are full width (``ap_int<A> * ap_int<B>`` is ``ap_int<A+B>``), an accumulator
is ``ap_int<acc_bits>`` (exact: see ``ranges``), the dyadic rescale ``((acc - zp) * m + 2^(s-1)) >> s``
runs in ``ap_int<product_bits>`` (arithmetic shift), and the clamp happens before the narrowing store.
``quantize`` / ``dequantize`` compute in ``double`` like numpy (``std::nearbyint``: round half to even
in the default rounding mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import CodegenError
from ...ir.graph import Graph, Node
from ...ir.ops.nn import pool_out_type
from ...ir.ops.shape import _slices
from ...ir.ops.window import hw_attrs
from ...ir.types import int_range
from .ranges import Range, all_pad_window, ctype, maxpool_floor, signed_width


@dataclass
class Ctx:
    """What the emitters need: the graph, value ranges and C names/types, the reuse factor."""

    ig: Graph
    ranges: dict
    acc: dict
    names: dict
    reuse: int = 1
    acc_override: dict = field(default_factory=dict)

    def ty(self, v: str) -> str:
        r = self.ranges[v]
        return "float" if r is None else ctype(r)

    def shape(self, v: str) -> tuple[int, ...]:
        return self.ig.type_of(v).shape

    def size(self, v: str) -> int:
        return max(1, self.ig.type_of(v).size)

    def acc_bits(self, n: Node) -> int:
        if n.name in self.acc_override:
            return int(self.acc_override[n.name])
        r = self.ranges[n.name]
        return signed_width(*r)


def lit(v: float) -> str:
    """A C++ double literal that parses back to exactly ``v``."""
    s = repr(float(v))
    return s if any(c in s for c in ".eEn") else s + ".0"


def ilit(v: int) -> str:
    v = int(v)
    if v < -(1 << 31) + 1 or v > (1 << 31) - 1:
        return f"{v}LL"
    return str(v)


def strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def bcast_index(out_shape: tuple[int, ...], in_shape: tuple[int, ...], var: str = "i") -> str:
    """Flat index into an operand broadcast (numpy rules) to ``out_shape``, loop variables ``i0, i1, ...``."""
    off = len(out_shape) - len(in_shape)
    st = strides(in_shape)
    terms = []
    for k, d in enumerate(in_shape):
        if d != 1 and st[k]:
            terms.append(f"{var}{k + off}" if st[k] == 1 else f"{var}{k + off} * {st[k]}")
    return " + ".join(terms) or "0"


class Body:
    """Indented C++ lines."""

    def __init__(self, depth: int = 1):
        self.lines: list[str] = []
        self.depth = depth

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def open(self, line: str) -> None:
        self(line + " {")
        self.depth += 1

    def close(self, n: int = 1) -> None:
        for _ in range(n):
            self.depth -= 1
            self("}")

    def loops(self, shape: tuple[int, ...], var: str = "i", pipeline: int | None = 1) -> int:
        """Open one loop per dim of ``shape``, the pipeline pragma on loop ``pipeline_dim(shape)`` (the
        loops inside it unroll: ``lanes(shape)`` elements per cycle); returns how many loops."""
        shape = shape or (1,)
        for k, d in enumerate(shape):
            self.open(f"for (int {var}{k} = 0; {var}{k} < {d}; ++{var}{k})")
            if k == pipeline_dim(shape) and pipeline:
                self(f"#pragma HLS PIPELINE II={pipeline}")
        return len(shape)


def pipeline_dim(shape: tuple[int, ...]) -> int:
    """Element-wise loops pipeline over N (rank <= 2: a whole row per cycle) or over N, C (NCHW: a whole
    channel plane per cycle)."""
    return 0 if len(shape) <= 2 else 1


def lanes(shape: tuple[int, ...]) -> int:
    """Elements per cycle of an element-wise op over ``shape`` (``Body.loops``)."""
    shape = shape or (1,)
    return int(np.prod(shape[pipeline_dim(shape) + 1:], dtype=np.int64)) if len(shape) > 1 else 1


def _flat(shape: tuple[int, ...], var: str = "i") -> str:
    st = strides(shape or (1,))
    return " + ".join(f"{var}{k}" if s == 1 else f"{var}{k} * {s}" for k, s in enumerate(st)) or "0"


# ---- boundary -----------------------------------------------------------------------------------------
def _quant_params(c: Ctx, n: Node, b: Body, out_shape) -> tuple[str, str]:
    a = n.attr_dict
    scale, zp = list(a["scale"]), list(a["zero_point"])
    if "axis" not in a or len(scale) == 1:
        return lit(scale[0]), ilit(zp[0])
    nm = c.names[n.name]
    b(f"static const double {nm}_scale[{len(scale)}] = {{{', '.join(lit(s) for s in scale)}}};")
    b(f"static const long long {nm}_zp[{len(zp)}] = {{{', '.join(ilit(z) for z in zp)}}};")
    ax = a["axis"] % len(out_shape)
    return f"{nm}_scale[i{ax}]", f"{nm}_zp[i{ax}]"


def e_quantize(c: Ctx, n: Node, b: Body) -> None:
    lo, hi = int_range(n.attr("bits"), n.attr("signed"))
    shape = c.shape(n.name)
    scale, zp = _quant_params(c, n, b, shape)
    k = b.loops(shape)
    b(f"double v = std::nearbyint((double)x0[{_flat(shape)}] / {scale}) + (double)({zp});")
    b(f"v = v < {lo}.0 ? {lo}.0 : (v > {hi}.0 ? {hi}.0 : v);")
    b(f"y[{_flat(shape)}] = ({c.ty(n.name)})(long long)v;")
    b.close(k)


def e_dequantize(c: Ctx, n: Node, b: Body) -> None:
    shape = c.shape(n.name)
    scale, zp = _quant_params(c, n, b, shape)
    k = b.loops(shape)
    b(f"y[{_flat(shape)}] = (float)((double)((long long)x0[{_flat(shape)}] - ({zp})) * {scale});")
    b.close(k)


# ---- weighted layers ----------------------------------------------------------------------------------
def _operand(c: Ctx, n: Node, i: int) -> str:
    """C expression naming input ``i`` of ``n``: a global constant or the function argument."""
    v = n.inputs[i]
    return c.names[v] if c.ig.is_const(v) else f"x{i}"


def _zp_type(c: Ctx, r: Range, zp: int) -> str:
    return ctype((r[0] - zp, r[1] - zp))


def _partition_weights(c: Ctx, n: Node, b: Body) -> None:
    """The weight ROM in ceil(numel / R) banks: each multiplier reads its own bank once per cycle."""
    w = n.inputs[1]
    if not c.ig.is_const(w):
        return
    size = c.size(w)
    if c.reuse == 1:
        b(f"#pragma HLS ARRAY_PARTITION variable={c.names[w]} complete dim=1")
    else:
        b(f"#pragma HLS ARRAY_PARTITION variable={c.names[w]} cyclic factor={-(-size // c.reuse)} dim=1")


def e_qconv2d(c: Ctx, n: Node, b: Body) -> None:
    a = n.attr_dict
    xs, ys, ws = c.shape(n.inputs[0]), c.shape(n.name), c.shape(n.inputs[1])
    k, s, p, d = hw_attrs({**a, "kernel": ws[2:]})
    groups = int(a.get("groups", 1))
    og, cg = ys[1] // groups, xs[1] // groups
    zp = int(a.get("x_zp", 0))
    xt = _zp_type(c, c.ranges[n.inputs[0]], zp)
    wt = ctype(c.ranges[n.inputs[1]])
    acc_t = f"ap_int<{c.acc_bits(n)}>"
    x, w = _operand(c, n, 0), _operand(c, n, 1)
    bias = _operand(c, n, 2) if len(n.inputs) == 3 else None
    _partition_weights(c, n, b)
    b.open(f"for (int n = 0; n < {ys[0]}; ++n)")
    b.open(f"for (int oh = 0; oh < {ys[2]}; ++oh)")
    b.open(f"for (int ow = 0; ow < {ys[3]}; ++ow)")
    b(f"#pragma HLS PIPELINE II={c.reuse}")
    b.open(f"for (int o = 0; o < {ys[1]}; ++o)")
    b(f"{acc_t} acc = {f'{bias}[o]' if bias else '0'};")
    b(f"const int g0 = (o / {og}) * {cg};")
    b.open(f"for (int kh = 0; kh < {k[0]}; ++kh)")
    b(f"const int ih = oh * {s[0]} - {p[0]} + kh * {d[0]};")
    b.open(f"for (int kw = 0; kw < {k[1]}; ++kw)")
    b(f"const int iw = ow * {s[1]} - {p[1]} + kw * {d[1]};")
    b(f"if (ih < 0 || ih >= {xs[2]} || iw < 0 || iw >= {xs[3]}) continue;   // padding: x - x_zp = 0")
    b.open(f"for (int ci = 0; ci < {cg}; ++ci)")
    b(f"const {xt} xv = {x}[((n * {xs[1]} + g0 + ci) * {xs[2]} + ih) * {xs[3]} + iw] - ({zp});")
    b(f"const {wt} wv = {w}[((o * {cg} + ci) * {k[0]} + kh) * {k[1]} + kw];")
    b("acc += xv * wv;")
    b.close(3)
    b(f"y[((n * {ys[1]} + o) * {ys[2]} + oh) * {ys[3]} + ow] = acc;")
    b.close(4)


def e_qlinear(c: Ctx, n: Node, b: Body) -> None:
    xs, ys = c.shape(n.inputs[0]), c.shape(n.name)
    kdim, odim = xs[-1], ys[-1]
    rows = int(np.prod(xs[:-1], dtype=np.int64)) if len(xs) > 1 else 1
    zp = int(n.attr("x_zp", 0))
    xt = _zp_type(c, c.ranges[n.inputs[0]], zp)
    wt = ctype(c.ranges[n.inputs[1]])
    acc_t = f"ap_int<{c.acc_bits(n)}>"
    x, w = _operand(c, n, 0), _operand(c, n, 1)
    bias = _operand(c, n, 2) if len(n.inputs) == 3 else None
    _partition_weights(c, n, b)
    b.open(f"for (int r = 0; r < {rows}; ++r)")
    b(f"#pragma HLS PIPELINE II={c.reuse}")
    b.open(f"for (int o = 0; o < {odim}; ++o)")
    b(f"{acc_t} acc = {f'{bias}[o]' if bias else '0'};")
    b.open(f"for (int k = 0; k < {kdim}; ++k)")
    b(f"const {xt} xv = {x}[r * {kdim} + k] - ({zp});")
    b(f"const {wt} wv = {w}[o * {kdim} + k];")
    b("acc += xv * wv;")
    b.close()
    b(f"y[r * {odim} + o] = acc;")
    b.close(2)


def e_qmatmul(c: Ctx, n: Node, b: Body) -> None:
    a = n.attr_dict
    sa, sb, sy = c.shape(n.inputs[0]), c.shape(n.inputs[1]), c.shape(n.name)
    az, bz = int(a.get("a_zp", 0)), int(a.get("b_zp", 0))
    at = _zp_type(c, c.ranges[n.inputs[0]], az)
    bt = _zp_type(c, c.ranges[n.inputs[1]], bz)
    kdim = sa[-1]
    batch = sy[:-2]
    x0, x1 = _operand(c, n, 0), _operand(c, n, 1)
    ia = bcast_index(batch, sa[:-2], "i")
    ib = bcast_index(batch, sb[:-2], "i")
    k = b.loops(batch, pipeline=None) if batch else 0
    mm, nn_ = sy[-2], sy[-1]
    b.open(f"for (int m = 0; m < {mm}; ++m)")
    b(f"#pragma HLS PIPELINE II={c.reuse}")
    b.open(f"for (int j = 0; j < {nn_}; ++j)")
    b(f"ap_int<{c.acc_bits(n)}> acc = 0;")
    b.open(f"for (int k = 0; k < {kdim}; ++k)")
    b(f"const {at} av = {x0}[({ia}) * {mm * kdim} + m * {kdim} + k] - ({az});")
    b(f"const {bt} bv = {x1}[({ib}) * {kdim * nn_} + k * {nn_} + j] - ({bz});")
    b("acc += av * bv;")
    b.close()
    yb = _flat(batch) if batch else "0"
    b(f"y[({yb}) * {mm * nn_} + m * {nn_} + j] = acc;")
    b.close(2 + k)


# ---- rescaling ----------------------------------------------------------------------------------------
def product_range(vr: Range, mr: Range, sr: Range) -> Range:
    """Range of ``v * m + 2^(s-1)`` over v, m, s in their ranges."""
    p = [vr[0] * mr[0], vr[0] * mr[1], vr[1] * mr[0], vr[1] * mr[1]]
    return min(p) + (1 << (sr[0] - 1)), max(p) + (1 << (sr[1] - 1))


def e_requantize(c: Ctx, n: Node, b: Body) -> None:
    a = n.attr_dict
    shape = c.shape(n.name)
    in_zp, out_zp = int(a.get("in_zp", 0)), int(a.get("out_zp", 0))
    ar = c.ranges[n.inputs[0]]
    vr = (ar[0] - in_zp, ar[1] - in_zp)
    mr, sr = c.ranges[n.inputs[1]], c.ranges[n.inputs[2]]
    if sr[0] < 1 or sr[1] > 62:
        raise CodegenError(f"shift range {sr} outside [1, 62]", node=n)
    pw = signed_width(*product_range(vr, mr, sr))
    ops = [_operand(c, n, i) for i in range(len(n.inputs))]
    idx = [bcast_index(shape, c.shape(v)) for v in n.inputs]
    k = b.loops(shape)
    b(f"const {ctype(vr)} v = {ops[0]}[{idx[0]}] - ({in_zp});")
    b(f"const int sh = (int){ops[2]}[{idx[2]}];")
    b(f"const ap_int<{pw}> p = v * {ops[1]}[{idx[1]}] + (ap_int<{pw}>(1) << (sh - 1));")
    b(f"ap_int<{pw}> q = (p >> sh) + ({out_zp});")
    lo, hi = int(a["qmin"]), int(a["qmax"])
    b(f"if (q < {lo}) q = {lo};")
    b(f"if (q > {hi}) q = {hi};")
    if len(n.inputs) >= 4:
        b(f"if (q < {ops[3]}[{idx[3]}]) q = {ops[3]}[{idx[3]}];")
    if len(n.inputs) == 5:
        b(f"if (q > {ops[4]}[{idx[4]}]) q = {ops[4]}[{idx[4]}];")
    b(f"y[{_flat(shape)}] = q;")
    b.close(k)


def e_qadd(c: Ctx, n: Node, b: Body) -> None:
    a = n.attr_dict
    shape = c.shape(n.name)
    ra, rb = c.ranges[n.inputs[0]], c.ranges[n.inputs[1]]
    va = (ra[0] - a["a_zp"], ra[1] - a["a_zp"])
    vb = (rb[0] - a["b_zp"], rb[1] - a["b_zp"])
    pa = sorted((va[0] * a["a_m"], va[1] * a["a_m"]))
    pb = sorted((vb[0] * a["b_m"], vb[1] * a["b_m"]))
    r = 1 << (a["shift"] - 1)
    pw = signed_width(pa[0] + pb[0] + r, pa[1] + pb[1] + r)
    ops = [_operand(c, n, i) for i in range(2)]
    idx = [bcast_index(shape, c.shape(v)) for v in n.inputs]
    k = b.loops(shape)
    b(f"const {ctype(va)} va = {ops[0]}[{idx[0]}] - ({a['a_zp']});")
    b(f"const {ctype(vb)} vb = {ops[1]}[{idx[1]}] - ({a['b_zp']});")
    b(f"const ap_int<{pw}> p = va * ap_int<{signed_width(a['a_m'], a['a_m'])}>({ilit(a['a_m'])}) "
      f"+ vb * ap_int<{signed_width(a['b_m'], a['b_m'])}>({ilit(a['b_m'])}) + (ap_int<{pw}>(1) << {a['shift'] - 1});")
    b(f"ap_int<{pw}> q = (p >> {a['shift']}) + ({a['out_zp']});")
    b(f"if (q < {a['qmin']}) q = {a['qmin']};")
    b(f"if (q > {a['qmax']}) q = {a['qmax']};")
    b(f"y[{_flat(shape)}] = q;")
    b.close(k)


def e_qmul(c: Ctx, n: Node, b: Body) -> None:
    a = n.attr_dict
    shape = c.shape(n.name)
    az, bz = int(a.get("a_zp", 0)), int(a.get("b_zp", 0))
    ops = [_operand(c, n, i) for i in range(2)]
    idx = [bcast_index(shape, c.shape(v)) for v in n.inputs]
    ta = _zp_type(c, c.ranges[n.inputs[0]], az)
    tb = _zp_type(c, c.ranges[n.inputs[1]], bz)
    k = b.loops(shape)
    b(f"const {ta} va = {ops[0]}[{idx[0]}] - ({az});")
    b(f"const {tb} vb = {ops[1]}[{idx[1]}] - ({bz});")
    b(f"y[{_flat(shape)}] = va * vb;")
    b.close(k)


# ---- reductions ---------------------------------------------------------------------------------------
def e_qsum(c: Ctx, n: Node, b: Body) -> None:
    xs, ys = c.shape(n.inputs[0]), c.shape(n.name)
    axes = sorted({ax % len(xs) for ax in n.attr("axes")})
    zp = int(n.attr("x_zp", 0))
    st = strides(xs)
    k = b.loops(ys, "i", pipeline=c.reuse)
    b(f"ap_int<{c.acc_bits(n)}> acc = 0;")
    for ax in axes:
        b.open(f"for (int r{ax} = 0; r{ax} < {xs[ax]}; ++r{ax})")
    terms = [f"{'r' if d in axes else 'i'}{d} * {st[d]}" for d in range(len(xs))]
    b(f"acc += {_operand(c, n, 0)}[{' + '.join(terms)}] - ({zp});")
    b.close(len(axes))
    b(f"y[{_flat(ys)}] = acc;")
    b.close(k)


def e_qavgpool(c: Ctx, n: Node, b: Body) -> None:
    _window(c, n, b, "sum")


def e_maxpool(c: Ctx, n: Node, b: Body) -> None:
    _window(c, n, b, "max")


def _window(c: Ctx, n: Node, b: Body, kind: str) -> None:
    a = n.attr_dict
    xs = c.shape(n.inputs[0])
    ys = pool_out_type(c.ig.type_of(n.inputs[0]), a).shape
    k, s, p, d = hw_attrs(a)
    if kind == "sum":
        d = (1, 1)
    x = _operand(c, n, 0)
    b.open(f"for (int nc = 0; nc < {ys[0] * ys[1]}; ++nc)")
    b.open(f"for (int oh = 0; oh < {ys[2]}; ++oh)")
    b.open(f"for (int ow = 0; ow < {ys[3]}; ++ow)")
    b(f"#pragma HLS PIPELINE II={c.reuse}")
    if kind == "sum":
        b(f"ap_int<{c.acc_bits(n)}> acc = 0;")
    else:
        floor = maxpool_floor(c.ig.type_of(n.inputs[0])) if all_pad_window(c.ig, n) else c.ranges[n.inputs[0]][0]
        b(f"{c.ty(n.name)} acc = {floor};")
    b.open(f"for (int kh = 0; kh < {k[0]}; ++kh)")
    b.open(f"for (int kw = 0; kw < {k[1]}; ++kw)")
    b(f"const int ih = oh * {s[0]} - {p[0]} + kh * {d[0]}, iw = ow * {s[1]} - {p[1]} + kw * {d[1]};")
    b(f"if (ih < 0 || ih >= {xs[2]} || iw < 0 || iw >= {xs[3]}) continue;")
    src = f"{x}[(nc * {xs[2]} + ih) * {xs[3]} + iw]"
    if kind == "sum":
        b(f"acc += {src} - ({int(a.get('x_zp', 0))});")
    else:
        b(f"if ({src} > acc) acc = {src};")
    b.close(2)
    b(f"y[(nc * {ys[2]} + oh) * {ys[3]} + ow] = acc;")
    b.close(3)


def e_lut(c: Ctx, n: Node, b: Body) -> None:
    shape = c.shape(n.name)
    tab = _operand(c, n, 1)
    k = b.loops(shape)
    b(f"y[{_flat(shape)}] = {tab}[(int){_operand(c, n, 0)}[{_flat(shape)}] - ({int(n.attr('in_min'))})];")
    b.close(k)


# ---- data movement ------------------------------------------------------------------------------------
def e_copy(c: Ctx, n: Node, b: Body) -> None:
    shape = c.shape(n.name)
    k = b.loops(shape)
    b(f"y[{_flat(shape)}] = {_operand(c, n, 0)}[{_flat(shape)}];")
    b.close(k)


def e_transpose(c: Ctx, n: Node, b: Body) -> None:
    xs, ys = c.shape(n.inputs[0]), c.shape(n.name)
    st = strides(xs)
    perm = n.attr("perm")
    k = b.loops(ys)
    src = " + ".join(f"i{j} * {st[perm[j]]}" for j in range(len(ys))) or "0"
    b(f"y[{_flat(ys)}] = {_operand(c, n, 0)}[{src}];")
    b.close(k)


def e_slice(c: Ctx, n: Node, b: Body) -> None:
    xs, ys = c.shape(n.inputs[0]), c.shape(n.name)
    st = strides(xs)
    sl = _slices(xs, n.attr_dict)
    terms = []
    for j, (dim, sli) in enumerate(zip(xs, sl)):
        start, _, step = sli.indices(dim)
        terms.append(f"({start} + i{j} * {step}) * {st[j]}")
    k = b.loops(ys)
    b(f"y[{_flat(ys)}] = {_operand(c, n, 0)}[{' + '.join(terms) or '0'}];")
    b.close(k)


def e_pad(c: Ctx, n: Node, b: Body) -> None:
    xs, ys = c.shape(n.inputs[0]), c.shape(n.name)
    pads = n.attr("pads")
    mode = n.attr("mode", "constant")
    rank = len(xs)
    st = strides(xs)
    k = b.loops(ys)
    inside = []
    for j in range(rank):
        b(f"int s{j} = i{j} - {pads[j]};")
        if mode == "edge":
            b(f"s{j} = s{j} < 0 ? 0 : (s{j} >= {xs[j]} ? {xs[j] - 1} : s{j});")
        elif mode == "reflect":
            b(f"s{j} = s{j} < 0 ? -s{j} : (s{j} >= {xs[j]} ? {2 * (xs[j] - 1)} - s{j} : s{j});")
        elif mode == "constant":
            inside.append(f"s{j} >= 0 && s{j} < {xs[j]}")
        else:
            raise CodegenError(f"pad mode {mode!r} has no HLS form", node=n)
    src = f"{_operand(c, n, 0)}[{' + '.join(f's{j} * {st[j]}' for j in range(rank)) or '0'}]"
    if inside:
        b(f"y[{_flat(ys)}] = ({' && '.join(inside)}) ? ({c.ty(n.name)}){src} : "
          f"({c.ty(n.name)})({int(n.attr('value', 0))});")
    else:
        b(f"y[{_flat(ys)}] = {src};")
    b.close(k)


def e_concat(c: Ctx, n: Node, b: Body) -> None:
    ys = c.shape(n.name)
    ax = n.attr("axis") % len(ys)
    off = 0
    for i, v in enumerate(n.inputs):
        xs = c.shape(v)
        k = b.loops(xs)
        dst = " + ".join(f"{f'(i{j} + {off})' if j == ax else f'i{j}'} * {s}"
                         for j, s in enumerate(strides(ys)))
        b(f"y[{dst}] = {_operand(c, n, i)}[{_flat(xs)}];")
        b.close(k)
        off += xs[ax]


def e_gather(c: Ctx, n: Node, b: Body) -> None:
    ds = c.shape(n.inputs[0])
    if not c.ig.is_const(n.inputs[1]):
        raise CodegenError("gather needs constant indices for HLS", node=n)
    ax = n.attr("axis", 0) % len(ds)
    idx = c.ig.const(n.inputs[1]).astype(np.int64).reshape(-1)
    idx = np.where(idx < 0, idx + ds[ax], idx)
    outer = int(np.prod(ds[:ax], dtype=np.int64))
    inner = int(np.prod(ds[ax + 1:], dtype=np.int64))
    nm = c.names[n.name]
    b(f"static const int {nm}_idx[{max(1, idx.size)}] = {{{', '.join(map(str, idx.tolist())) or '0'}}};")
    b.open(f"for (int o = 0; o < {outer}; ++o)")
    b.open(f"for (int j = 0; j < {idx.size}; ++j)")
    b.open(f"for (int k = 0; k < {inner}; ++k)")
    b("#pragma HLS PIPELINE II=1")
    b(f"y[(o * {idx.size} + j) * {inner} + k] = {_operand(c, n, 0)}[(o * {ds[ax]} + {nm}_idx[j]) * {inner} + k];")
    b.close(3)


EMITTERS = {
    "quantize": e_quantize, "dequantize": e_dequantize,
    "qconv2d": e_qconv2d, "qlinear": e_qlinear, "qmatmul": e_qmatmul,
    "requantize": e_requantize, "qadd": e_qadd, "qmul": e_qmul,
    "qsum": e_qsum, "qavgpool": e_qavgpool, "lut": e_lut,
    "reshape": e_copy, "identity": e_copy, "transpose": e_transpose, "concat": e_concat,
    "slice": e_slice, "pad": e_pad, "maxpool": e_maxpool, "gather": e_gather,
}
ACC_OPS = ("qconv2d", "qlinear", "qmatmul", "qsum", "qavgpool")
