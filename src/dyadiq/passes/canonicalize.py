# SPDX-License-Identifier: Apache-2.0
"""Canonicalize a float graph: fold what is constant, fuse what later passes expect fused.

Rules, tried in this order on each node; the driver sweeps the nodes in topological order until no rule
fires (at most ``max_sweeps`` sweeps, then ``PassError`` naming the rules still firing):

- fold-constants:      op(c1, ..., cn) -> a constant computed by the op's registry kernel
- remove-identity:     identity(x) -> x
- fold-batchnorm:      bn(conv(x, W, b)) -> conv(x, W*k, b*k + beta - mu*k),  k = gamma / sqrt(var + eps)
                       per output channel (= (b - mu)*k + beta); also linear with a rank-2 output
- batchnorm-to-affine: any other bn(x) -> on NCHW input a depthwise 1x1 conv2d with weight k and bias
                       beta - mu*k (a layer: a following relu fuses into its requantize, one quantization
                       point, e.g. DenseNet's BN before ReLU+conv); other ranks x*k + (beta - mu*k),
                       constants shaped [C, 1, ...]; no ``batchnorm`` survives with constant parameters
- fuse-silu:           x * sigmoid(x), either operand order -> silu(x); x * hardsigmoid(x) with alpha 1/6,
                       beta 1/2 -> hardswish(x) (how opset < 14 exports write hard-swish: one table, not two
                       quantization points)
- remove-neutral:      x*1, 1*x, x/1, x+0, 0+x, x-0 -> x   (not when the constant broadcasts x up)
- div-to-mul:          x / c -> x * (1/c)
- sub-to-add:          x - c -> x + (-c)
- matmul-to-linear:    matmul(x, W) -> linear(x, W^T)   for a constant 2-D W
- conv-transpose:      conv_transpose2d(x, W, b) -> conv2d(zero_insert(x), flip(W^T), b) for a constant W:
                       zeros between input pixels (stride s: reshape -> pad -> reshape -> slice), the
                       border ``d (k-1) - pad`` as conv padding (a negative one as a slice), weights
                       regrouped [g*Cout/g, Cin/g, kh, kw] and flipped; so transposed convolutions take the
                       conv path everywhere after (equalization, GPTQ, integer conv, the x86 kernels)
- fold-pad:            conv2d(pad(x)) -> conv2d(x) with the pad widths added to its ``pad``, for zero
                       constant padding of H and W only (TF-style "same" padding from exporters)
- fold-scale:          layer(x, W, b) * s -> layer(x, W*s, b*s)     s: one value per output channel
- fold-bias:           layer(x, W, b) + c -> layer(x, W, b + c)     (layer = conv2d | linear; so
                       linear/matmul + bias vector -> linear with bias)
- affine-before-reshape: reshape(layer(x)) * c (or + c) -> reshape(layer(x) * c') for a per-channel c and a
                       reshape keeping dims 0 and 1 (torch.export's Conv1d + BatchNorm1d), so the two above
                       apply
- masked-softmax:      softmax(scores + where(keep, 0, -inf)) and the other spellings of an attention mask ->
                       softmax(scores, keep), keep an integer / i1 value (``passes/masked_softmax.py``)
- drop-nan-guard:      where(isnan(p), 0, p) -> p for a softmax output p
- uniform-gather:      gather(c, ids) of a constant whose elements are all equal -> a constant

Fusions need the layer output to have no other reader. A fused node takes the name of the last value it
replaces (``y = bn(conv(x))`` -> ``y = conv(...)``), so downstream names and graph outputs never change;
a rewritten weight or bias keeps its constant's name when nothing else reads it. Dead nodes are dropped.
``relu6`` arrives from the frontends as ``clip(min=0, max=6)`` and stays so. No rule removes a value that
carries a QuantType or rewrites a constant that has one.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node, verify
from ..ir.ops import op_def
from ..ir.ops.registry import is_weighted
from ..ir.types import TensorType, dtype_of
from .masked_softmax import drop_nan_guard, masked_softmax
from .rewrite import bias_hint, bypass, dce, fresh_name, splice, use_counts


class _Ctx:
    """Facts about one version of the graph that rules look up."""

    def __init__(self, g: Graph):
        self.g = g
        self.by_name = {n.name: n for n in g.nodes}
        self.producer = g.producers()
        self.uses = use_counts(g)

    def const(self, name: str) -> np.ndarray | None:
        """The array of an unquantized float constant, else None."""
        g = self.g
        if not g.is_const(name) or g.quant_of(name) is not None or g.const(name).dtype.kind != "f":
            return None
        return g.const(name)

    def sole(self, v: str) -> bool:
        """``v`` is read by exactly one node input, is no graph output and carries no QuantType."""
        return self.uses.get(v, 0) == 1 and v not in self.g.outputs and self.g.quant_of(v) is None

    def layer(self, v: str) -> Node | None:
        """The conv2d/linear with constant weight (and bias) producing ``v``, when only one node reads ``v``."""
        n = self.producer.get(v)
        if n is None or not is_weighted(n.op) or not self.sole(v):
            return None
        return n if all(self.const(i) is not None for i in n.inputs[1:]) else None


Rule = Callable[[Graph, Node, _Ctx], Graph | None]


def canonicalize(g: Graph, *, max_sweeps: int = 32) -> Graph:
    """Fold constants and BatchNorm, drop no-ops, fuse silu and biases; ``g`` itself if nothing changes."""
    out = dce(g)
    for _ in range(max_sweeps):
        fired: list[str] = []
        ctx = None
        for name in [n.name for n in out.nodes]:
            ctx = ctx or _Ctx(out)
            node = ctx.by_name.get(name)
            for rule_name, rule in RULES:
                new = rule(out, node, ctx) if node is not None else None
                if new is not None and new is not out:
                    out, ctx = new, None
                    fired.append(rule_name)
                    break
        if not fired:
            return g if out is g else verify(out)
    raise PassError(f"canonicalize: no fixed point after {max_sweeps} sweeps; still firing: "
                    f"{', '.join(sorted(set(fired)))}")


# ---- helpers ------------------------------------------------------------------------------------
def _quant_ok(g: Graph, gone: str, kept: str) -> bool:
    """Replacing ``gone`` by ``kept`` loses no quantization point."""
    return g.quant_of(gone) is None or g.quant_of(gone) == g.quant_of(kept)


def _channel_vector(c: np.ndarray, t: TensorType, axis: int) -> np.ndarray | None:
    """``c`` as one float64 per channel on ``axis`` of ``t``, if it broadcasts that way (else None)."""
    if c.ndim > t.rank:
        return None
    shape = (1,) * (t.rank - c.ndim) + c.shape
    ax = axis % t.rank
    if any(d != 1 for i, d in enumerate(shape) if i != ax) or shape[ax] not in (1, t.shape[ax]):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (t.shape[ax],))


def _put(g: Graph, ctx: _Ctx, consts: dict, old: str | None, hint: str, arr: np.ndarray) -> str:
    """Store ``arr`` under ``old`` when only one node reads it, else under a fresh name."""
    name = old if old is not None and ctx.uses.get(old) == 1 else fresh_name(g, hint, consts)
    consts[name] = arr
    return name


def _refold(g: Graph, ctx: _Ctx, layer: Node, anchor: Node, scale=None, shift=None) -> Graph:
    """Replace ``anchor(layer(x, W, b))`` by ``layer(x, W*scale, b*scale + shift)`` named like the anchor."""
    x, w_name, b_name = (layer.inputs + (None,))[:3]
    w = g.const(w_name)
    b = g.const(b_name).astype(np.float64) if b_name else np.zeros(w.shape[0])
    consts: dict[str, np.ndarray] = {}
    out = anchor.outputs[0]
    if scale is not None:
        w_new = w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        w_name = _put(g, ctx, consts, w_name, w_name, w_new.astype(w.dtype))
        b = b * scale
    if shift is not None:
        b = b + shift
    ins = (x, w_name)
    if b_name is not None or shift is not None:
        ins += (_put(g, ctx, consts, b_name, bias_hint(layer), b.astype(w.dtype)),)
    return splice(g, {layer.name: [], anchor.name: [Node(layer.op, ins, (out,), layer.attrs)]}, constants=consts)


def _bn_params(n: Node, ctx: _Ctx):
    """(k, beta - mu*k) of a batchnorm with constant parameters, in float64."""
    p = [ctx.const(i) for i in n.inputs[1:]]
    if any(a is None for a in p):
        return None
    gamma, beta, mean, var = (a.astype(np.float64) for a in p)
    k = gamma / np.sqrt(var + n.attr("eps", 1e-5))
    return k, beta - mean * k


# ---- rules --------------------------------------------------------------------------------------
def fold_constants(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """op(c1, ..., cn) -> constant."""
    if not n.inputs or not all(g.is_const(i) and g.quant_of(i) is None for i in n.inputs):
        return None
    with np.errstate(all="ignore"):
        arrays = op_def(n.op).kernel([g.const(i) for i in n.inputs], n.attr_dict)
    consts = {}
    for o, a in zip(n.outputs, arrays):
        t = g.type_of(o)
        a = np.asarray(a).astype(t.np_dtype, copy=False)
        if a.shape != t.shape or dtype_of(a) != t.dtype:
            return None
        consts[o] = a
    return splice(g, {n.name: []}, constants=consts, quants={o: g.quant_of(o) for o in n.outputs})


def remove_identity(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """identity(x) -> x."""
    if n.op != "identity" or not _quant_ok(g, n.name, n.inputs[0]):
        return None
    return bypass(g, n, n.inputs[0])


def fold_batchnorm(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """bn(conv(x, W, b)) -> conv(x, W*k, b*k + beta - mu*k)."""
    if n.op != "batchnorm" or (p := _bn_params(n, ctx)) is None or (layer := ctx.layer(n.inputs[0])) is None:
        return None
    if layer.op == "linear" and g.type_of(layer.name).rank != 2:
        return None
    return _refold(g, ctx, layer, n, scale=p[0], shift=p[1])


def batchnorm_to_affine(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """bn(x) -> depthwise 1x1 conv2d(x, k, beta - mu*k) on NCHW inputs, else x*k + (beta - mu*k)."""
    if n.op != "batchnorm" or (p := _bn_params(n, ctx)) is None:
        return None
    t = g.type_of(n.inputs[0])
    if t.rank == 4:             # one layer: a following relu fuses into its requantize, one quantization point
        c = t.shape[1]
        w_name = fresh_name(g, f"{n.name}.weight")
        b_name = fresh_name(g, f"{n.name}.bias", {w_name})
        conv = Node.make("conv2d", (n.inputs[0], w_name, b_name), n.name, groups=c)
        return splice(g, {n.name: [conv]}, constants={w_name: p[0].reshape(c, 1, 1, 1).astype(t.np_dtype),
                                                      b_name: p[1].reshape(c).astype(t.np_dtype)})
    shape = (-1,) + (1,) * (t.rank - 2)
    k_name = fresh_name(g, f"{n.name}.scale")
    s_name = fresh_name(g, f"{n.name}.shift", {k_name})
    mid = fresh_name(g, f"{n.name}.scaled", {k_name, s_name})
    nodes = [Node.make("mul", (n.inputs[0], k_name), mid), Node.make("add", (mid, s_name), n.name)]
    consts = {k_name: p[0].reshape(shape).astype(t.np_dtype), s_name: p[1].reshape(shape).astype(t.np_dtype)}
    return splice(g, {n.name: nodes}, constants=consts)


def _hard_sigmoid_of_swish(p: Node) -> bool:
    """hardsigmoid with alpha 1/6, beta 1/2 (the opset < 14 spelling of hard-swish's gate)."""
    return p.op == "hardsigmoid" and abs(p.attr("alpha", 0.2) - 1 / 6) < 1e-6 and abs(p.attr("beta", 0.5) - 0.5) < 1e-6


def fuse_silu(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """x * sigmoid(x) -> silu(x);  x * hardsigmoid(x, 1/6, 1/2) -> hardswish(x)."""
    if n.op != "mul":
        return None
    a, b = n.inputs
    for x, s in ((a, b), (b, a)):
        p = ctx.producer.get(s)
        if p is None or p.inputs[0] != x or not ctx.sole(s) or g.type_of(x) != g.type_of(n.name):
            continue
        if p.op == "sigmoid":
            return splice(g, {p.name: [], n.name: [Node.make("silu", (x,), n.name)]})
        if _hard_sigmoid_of_swish(p) and g.quant_of(s) is None:
            return splice(g, {p.name: [], n.name: [Node.make("hardswish", (x,), n.name)]})
    return None


NEUTRAL = {"mul": (1.0, (0, 1)), "add": (0.0, (0, 1)), "div": (1.0, (1,)), "sub": (0.0, (1,))}


def remove_neutral(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """x*1, x/1, x+0, x-0 -> x."""
    if n.op not in NEUTRAL:
        return None
    unit, slots = NEUTRAL[n.op]
    for k in slots:
        c, x = ctx.const(n.inputs[k]), n.inputs[1 - k]
        if c is not None and np.all(c == unit) and g.type_of(x) == g.type_of(n.name) and _quant_ok(g, n.name, x):
            return bypass(g, n, x)
    return None


def div_to_mul(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """x / c -> x * (1/c)."""
    c = ctx.const(n.inputs[1]) if n.op == "div" else None
    if c is None or not np.all(np.isfinite(c) & (c != 0)):
        return None
    name = fresh_name(g, f"{n.inputs[1]}.recip")
    mul = Node.make("mul", (n.inputs[0], name), n.name)
    return splice(g, {n.name: [mul]}, constants={name: (np.ones((), c.dtype) / c).astype(c.dtype)})


def sub_to_add(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """x - c -> x + (-c)."""
    c = ctx.const(n.inputs[1]) if n.op == "sub" else None
    if c is None:
        return None
    name = fresh_name(g, f"{n.inputs[1]}.neg")
    return splice(g, {n.name: [Node.make("add", (n.inputs[0], name), n.name)]}, constants={name: -c})


def matmul_to_linear(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """matmul(x, W) -> linear(x, W^T)."""
    w = ctx.const(n.inputs[1]) if n.op == "matmul" else None
    if w is None or w.ndim != 2 or g.is_const(n.inputs[0]):
        return None
    name = fresh_name(g, f"{n.inputs[1]}.t")
    lin = Node.make("linear", (n.inputs[0], name), n.name)
    return splice(g, {n.name: [lin]}, constants={name: np.ascontiguousarray(w.T)})


def conv_transpose(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """conv_transpose2d(x, W, b) -> conv2d(zero_insert(x), flip(W^T), b)."""
    w = ctx.const(n.inputs[1]) if n.op == "conv_transpose2d" else None
    if w is None or (len(n.inputs) == 3 and ctx.const(n.inputs[2]) is None):
        return None
    s = tuple(n.attr("stride", (1, 1)))
    p = tuple(n.attr("pad", (0, 0, 0, 0)))
    d = tuple(n.attr("dilation", (1, 1)))
    op = tuple(n.attr("output_padding", (0, 0)))
    groups = int(n.attr("groups", 1))
    t = g.type_of(n.inputs[0])
    nb, c, h, wd = t.shape
    ci, cog, kh, kw = w.shape
    taken: set[str] = set()

    def name(hint):
        v = fresh_name(g, f"{n.name}.{hint}", taken)
        taken.add(v)
        return v
    nodes, x = [], n.inputs[0]
    if s != (1, 1):                                    # zeros between pixels: [N,C,H,1,W,1] padded to s
        r = name("split")
        nodes.append(Node.make("reshape", (x,), r, shape=(nb, c, h, 1, wd, 1)))
        z = name("zeros")
        nodes.append(Node.make("pad", (r,), z, pads=(0, 0, 0, 0, 0, 0, 0, 0, 0, s[0] - 1, 0, s[1] - 1),
                               mode="constant", value=0.0))
        m = name("merged")
        nodes.append(Node.make("reshape", (z,), m, shape=(nb, c, h * s[0], wd * s[1])))
        x = name("dilated")
        nodes.append(Node.make("slice", (m,), x, starts=(0, 0), ends=((h - 1) * s[0] + 1, (wd - 1) * s[1] + 1),
                               axes=(2, 3), steps=(1, 1)))
    lo = [d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1]]
    hi = [d[0] * (kh - 1) - p[2] + op[0], d[1] * (kw - 1) - p[3] + op[1]]
    if min(lo + hi) < 0:                              # a pad larger than the border: crop instead
        hh, ww = (h - 1) * s[0] + 1, (wd - 1) * s[1] + 1
        cut = name("cropped")
        nodes.append(Node.make("slice", (x,), cut, starts=(max(-lo[0], 0), max(-lo[1], 0)),
                               ends=(hh - max(-hi[0], 0), ww - max(-hi[1], 0)), axes=(2, 3), steps=(1, 1)))
        x = cut
    wc = w.reshape(groups, ci // groups, cog, kh, kw).transpose(0, 2, 1, 3, 4).reshape(groups * cog, ci // groups,
                                                                                        kh, kw)
    wname = name("w")
    conv = Node.make("conv2d", (x, wname) + tuple(n.inputs[2:]), n.name, stride=(1, 1), dilation=d, groups=groups,
                     pad=(max(lo[0], 0), max(lo[1], 0), max(hi[0], 0), max(hi[1], 0)))
    return splice(g, {n.name: nodes + [conv]},
                  constants={wname: np.ascontiguousarray(wc[:, :, ::-1, ::-1]).astype(w.dtype)})


def fold_pad(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """conv2d(pad(x), W) -> conv2d(x, W) {pad += pads}."""
    p = ctx.producer.get(n.inputs[0]) if n.op == "conv2d" else None
    if p is None or p.op != "pad" or not ctx.sole(p.name) or not _quant_ok(g, p.name, p.inputs[0]):
        return None
    w = p.attr("pads")
    if p.attr("mode", "constant") != "constant" or p.attr("value", 0) != 0 or len(w) != 8 or any(w[:2] + w[4:6]):
        return None
    t, l, b, r = n.attr("pad", (0, 0, 0, 0))
    conv = n.with_attrs(pad=(t + w[2], l + w[3], b + w[6], r + w[7]))
    conv = Node(conv.op, (p.inputs[0],) + n.inputs[1:], n.outputs, conv.attrs)
    return splice(g, {p.name: [], n.name: [conv]})


def _layer_and_vector(g: Graph, n: Node, ctx: _Ctx):
    """(layer, per-output-channel vector) for op(layer(...), c) or op(c, layer(...))."""
    for k in (0, 1):
        layer, c = ctx.layer(n.inputs[k]), ctx.const(n.inputs[1 - k])
        if layer is None or c is None or g.type_of(n.name) != g.type_of(layer.name):
            continue
        vec = _channel_vector(c, g.type_of(layer.name), 1 if layer.op == "conv2d" else -1)
        if vec is not None:
            return layer, vec
    return None


def affine_before_reshape(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """op(reshape(layer(x)), c) -> reshape(op(layer(x), c')), op = mul | add, for a per-channel ``c`` and a
    reshape that keeps the first two dims (torch.export's Conv1d: conv2d on [N, C, 1, L] and a reshape
    to [N, C, L] before its BatchNorm's mul and add), so that fold-scale / fold-bias then apply."""
    if n.op not in ("mul", "add"):
        return None
    for k in (0, 1):
        r, c = ctx.producer.get(n.inputs[k]), ctx.const(n.inputs[1 - k])
        if r is None or r.op != "reshape" or c is None or not ctx.sole(n.inputs[k]) or ctx.layer(r.inputs[0]) is None:
            continue
        src, dst = g.type_of(r.inputs[0]), g.type_of(r.name)
        if min(src.rank, dst.rank) < 2 or src.shape[:2] != dst.shape[:2] or g.type_of(n.name) != dst:
            continue
        vec = _channel_vector(c, dst, 1)
        if vec is None:
            continue
        consts = {fresh_name(g, f"{n.name}.c", {}): vec.reshape((1, -1) + (1,) * (src.rank - 2)).astype(c.dtype)}
        (cname,) = consts
        mid = fresh_name(g, f"{n.name}.pre", consts)
        return splice(g, {r.name: [], n.name: [Node.make(n.op, (r.inputs[0], cname), mid),
                                               Node(r.op, (mid,), (n.name,), r.attrs)]}, constants=consts)
    return None


def fold_scale(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """layer(x, W, b) * s -> layer(x, W*s, b*s)."""
    m = _layer_and_vector(g, n, ctx) if n.op == "mul" else None
    return _refold(g, ctx, m[0], n, scale=m[1]) if m else None


def fold_bias(g: Graph, n: Node, ctx: _Ctx) -> Graph | None:
    """layer(x, W, b) + c -> layer(x, W, b + c)."""
    m = _layer_and_vector(g, n, ctx) if n.op == "add" else None
    return _refold(g, ctx, m[0], n, shift=m[1]) if m else None


def uniform_gather(g: Graph, n: Node, ctx) -> Graph | None:
    """gather / gather_elements from a constant table whose elements are all equal -> that constant, in the
    result's shape (HF RoBERTa's all-zero token_type_ids gathered at run-time position ids)."""
    if n.op not in ("gather", "gather_elements") or g.is_const(n.inputs[1]):
        return None
    table = g.const(n.inputs[0]) if g.is_const(n.inputs[0]) and g.quant_of(n.inputs[0]) is None else None
    if table is None or table.size == 0 or not np.all(table == table.reshape(-1)[0]):
        return None
    t = g.type_of(n.name)
    name = fresh_name(g, f"{n.name}.uniform")
    return splice(g, {n.name: []}, constants={name: np.full(t.shape, table.reshape(-1)[0], t.np_dtype)},
                  redirect={n.name: name}) if n.name not in g.outputs else None


RULES: list[tuple[str, Rule]] = [
    ("fold-constants", fold_constants),
    ("remove-identity", remove_identity),
    ("fold-batchnorm", fold_batchnorm),
    ("batchnorm-to-affine", batchnorm_to_affine),
    ("fuse-silu", fuse_silu),
    ("remove-neutral", remove_neutral),
    ("div-to-mul", div_to_mul),
    ("sub-to-add", sub_to_add),
    ("matmul-to-linear", matmul_to_linear),
    ("conv-transpose", conv_transpose),
    ("fold-pad", fold_pad),
    ("fold-scale", fold_scale),
    ("fold-bias", fold_bias),
    ("affine-before-reshape", affine_before_reshape),
    ("masked-softmax", masked_softmax),
    ("drop-nan-guard", drop_nan_guard),
    ("uniform-gather", uniform_gather),
]
