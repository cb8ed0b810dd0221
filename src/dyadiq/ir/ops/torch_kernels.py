# SPDX-License-Identifier: Apache-2.0
"""The torch evaluation of every float op, beside the numpy kernels of the registry (one semantics, two
array libraries): ``TORCH_OPS[op](node, graph) -> fn(tensors) -> tensor``.

Used by ``passes.torch_eval.TorchGraph`` (differentiable, batched evaluation for the sensitivity, wide-
activation and pareto planners). ``tests/ir/test_torch_parity.py`` checks every registered float op
against the numpy interpreter in float and simulated modes; ``missing_torch_ops()`` names any op that
lacks an entry. Semantics follow the numpy kernels: pads ``(top, left, bottom, right)``, pool geometry
from ``window.pool_geometry``, average pools divided by ``avgpool_divisor``.

Every function keeps to what ``torch.func.vmap`` and autograd need: attributes, shapes and index tables come
from the node and the graph's static types, never from tensor values (no ``.item()``, no branching on
data). Outputs keep the numpy kernel's dtype: predicates give ``torch.bool``, ``argmax``/``argmin`` and
``topk`` indices ``torch.int64``, ``cast`` the dtype ``to`` names (``TORCH_DTYPES``). An op with several
outputs (``topk``) returns a tuple, one tensor per output. Integer ops follow numpy where torch differs:
``mod`` by 0 gives 0 (torch raises); uint16 operands are widened to int64 and the result cast back (torch
lacks most uint16 kernels).

This module imports torch; ``import dyadiq.ir.ops`` never imports it.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..graph import Graph, Node
from .nn import avgpool_divisor
from .registry import OPS as REGISTRY
from .shape import _slices
from .window import hw_attrs, pool_geometry

Fn = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _pad_hw(x: torch.Tensor, p: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    t, l, b, r = p
    return F.pad(x, (l, r, t, b), value=value) if (t or l or b or r) else x


def _conv2d(n: Node, g: Graph) -> Fn:
    _, s, p, d = hw_attrs(n.attr_dict)
    groups = n.attr("groups", 1)
    sym = p[0] == p[2] and p[1] == p[3]

    def fn(a):
        x = a[0] if sym else _pad_hw(a[0], p)
        return F.conv2d(x, a[1], a[2] if len(a) == 3 else None, s, (p[0], p[1]) if sym else 0, d, groups)
    return fn


def _pool(n: Node, g: Graph, kind: str) -> Fn:
    a = n.attr_dict
    k, s, p, d = hw_attrs(a)
    in_t = g.type_of(n.inputs[0])
    (oh, ow), extra = pool_geometry(in_t.shape[2:], a)
    pads = (p[0], p[1], p[2] + extra[0], p[3] + extra[1])
    if kind == "max":
        return lambda x: F.max_pool2d(_pad_hw(x[0], pads, -math.inf), k, s, 0, d)[..., :oh, :ow]
    div = torch.from_numpy(avgpool_divisor(in_t.shape[2:], a, (oh, ow)).astype(np.float32))

    def avg(x):
        xp = _pad_hw(x[0], pads)
        nb, c = xp.shape[:2]
        cols = F.unfold(xp, k, dilation=d, stride=s)                   # [N, C*KH*KW, L]
        hh = (xp.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        ww = (xp.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        win = cols.reshape(nb, c, k[0] * k[1], hh, ww).sum(dim=2)[..., :oh, :ow]
        return win / div.to(x[0].dtype)
    return avg


def _reduce(fn):
    def build(n: Node, g: Graph) -> Fn:
        rank = g.type_of(n.inputs[0]).rank
        axes = tuple(ax % rank for ax in n.attr("axes", tuple(range(rank))))
        keep = bool(n.attr("keepdims", True))
        return lambda x: fn(x[0], axes, keep)
    return build


def _select(picks: list[tuple[int, "torch.Tensor"]]) -> Fn:
    """``index_select`` of the input along each (axis, indices) pair in turn."""
    def fn(x):
        y = x[0]
        for ax, ix in picks:
            y = torch.index_select(y, ax, ix)
        return y
    return fn


def _slice(n: Node, g: Graph) -> Fn:
    shape = g.type_of(n.inputs[0]).shape
    idx = _slices(shape, n.attr_dict)
    picks = [(ax, torch.from_numpy(np.arange(shape[ax])[sl].astype(np.int64)))
             for ax, sl in enumerate(idx) if sl != slice(None)]

    return _select(picks)


def _pad(n: Node, g: Graph) -> Fn:
    shape = g.type_of(n.inputs[0]).shape
    rank = len(shape)
    p = tuple(n.attr("pads"))
    mode = n.attr("mode", "constant")
    if mode == "constant":
        widths = [w for i in reversed(range(rank)) for w in (p[i], p[i + rank])]
        return lambda x: F.pad(x[0], widths, value=float(n.attr("value", 0)))
    # reflect / edge on any dims: gather the source index of every padded position (numpy's rule)
    picks = [(ax, torch.from_numpy(np.pad(np.arange(shape[ax]), (p[ax], p[ax + rank]), mode=mode).astype(np.int64)))
             for ax in range(rank) if p[ax] or p[ax + rank]]

    return _select(picks)


def _gather(n: Node, g: Graph) -> Fn:
    d = g.type_of(n.inputs[0])
    ax = n.attr("axis", 0) % d.rank
    ishape = g.type_of(n.inputs[1]).shape
    out = d.shape[:ax] + ishape + d.shape[ax + 1:]
    return lambda x: torch.index_select(x[0], ax, x[1].reshape(-1).long() % d.shape[ax]).reshape(out)


def _clip(n: Node, g: Graph) -> Fn:
    lo, hi = n.attr("min", -math.inf), n.attr("max", math.inf)
    lo, hi = (None if math.isinf(lo) else lo), (None if math.isinf(hi) else hi)
    return lambda x: torch.clamp(x[0], lo, hi)


def _layernorm(n: Node, g: Graph) -> Fn:
    t = g.type_of(n.inputs[0])
    norm = t.shape[n.attr("axis", -1) % t.rank:]
    return lambda x: F.layer_norm(x[0], norm, x[1], x[2], n.attr("eps", 1e-5))


def _batchnorm(n: Node, g: Graph) -> Fn:
    rank = g.type_of(n.inputs[0]).rank
    eps = n.attr("eps", 1e-5)
    sh = (-1,) + (1,) * (rank - 2)
    return lambda x: (x[0] - x[3].reshape(sh)) / torch.sqrt(x[4].reshape(sh) + eps) * x[1].reshape(sh) \
        + x[2].reshape(sh)


def _unary(f):
    return lambda n, g: (lambda x: f(x[0], n))


def _binary(f):
    return lambda n, g: (lambda x: f(x[0], x[1]))


def _softmax(x: list, axis: int) -> torch.Tensor:
    """softmax, or with a keep mask ``x[1]`` over the kept elements only (none kept: all 0)."""
    if len(x) == 1:
        return torch.softmax(x[0], axis)
    keep = (x[1] != 0).expand(x[0].shape)
    v = x[0].masked_fill(~keep, -torch.inf)
    m = v.amax(dim=axis, keepdim=True)
    e = torch.exp(v - torch.where(torch.isfinite(m), m, torch.zeros_like(m))).masked_fill(~keep, 0)
    s = e.sum(dim=axis, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def _gelu(x, n):
    return F.gelu(x, approximate="tanh" if n.attr("approximate", "none") == "tanh" else "none")


def _fq_params(n: Node, rank: int):
    a = n.attr_dict
    from .fake_quant import qrange
    shape = [1] * rank
    if a.get("axis") is not None:
        shape[int(a["axis"]) % rank] = -1
    s = torch.tensor(np.asarray(a["scale"], np.float64)).reshape(shape if len(a["scale"]) > 1 else [])
    z = torch.tensor(np.asarray(a["zero_point"], np.float64)).reshape(shape if len(a["zero_point"]) > 1 else [])
    return s, z, qrange(a)


def _quantize_linear(n: Node, g: Graph) -> Fn:
    rank = g.type_of(n.inputs[0]).rank
    s, z, (lo, hi) = _fq_params(n, rank)
    dt = {"i8": torch.int8, "u8": torch.uint8, "i16": torch.int16, "i32": torch.int32}.get(
        g.type_of(n.name).dtype, torch.int64)
    return lambda x: torch.clamp(torch.round(x[0].double() / s) + z, lo, hi).to(dt)


def _dequantize_linear(n: Node, g: Graph) -> Fn:
    s, z, _ = _fq_params(n, g.type_of(n.inputs[0]).rank)
    return lambda x: ((x[0].double() - z) * s).float()


def _fake_quant(n: Node, g: Graph) -> Fn:
    s, z, (lo, hi) = _fq_params(n, g.type_of(n.inputs[0]).rank)
    return lambda x: ((torch.clamp(torch.round(x[0].double() / s) + z, lo, hi) - z) * s).to(x[0].dtype)


TORCH_OPS: dict[str, Callable[[Node, Graph], Fn]] = {
    "quantize_linear": _quantize_linear,
    "dequantize_linear": _dequantize_linear,
    "fake_quant": _fake_quant,
    "conv2d": _conv2d,
    "linear": lambda n, g: (lambda x: F.linear(x[0], x[1], x[2] if len(x) == 3 else None)),
    "matmul": _binary(torch.matmul),
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "softmax": lambda n, g: (lambda x: _softmax(x, n.attr("axis", -1))),
    "maxpool": lambda n, g: _pool(n, g, "max"),
    "avgpool": lambda n, g: _pool(n, g, "avg"),
    "global_avgpool": lambda n, g: (lambda x: x[0].mean(dim=tuple(range(2, x[0].ndim)), keepdim=True)),
    "mean": _reduce(lambda x, ax, k: x.mean(dim=ax, keepdim=k)),
    "reduce_sum": _reduce(lambda x, ax, k: x.sum(dim=ax, keepdim=k)),
    "reduce_max": _reduce(lambda x, ax, k: x.amax(dim=ax, keepdim=k)),
    "reduce_min": _reduce(lambda x, ax, k: x.amin(dim=ax, keepdim=k)),
    "reshape": lambda n, g: (lambda x: x[0].reshape(tuple(n.attr("shape")))),
    "transpose": lambda n, g: (lambda x: x[0].permute(tuple(n.attr("perm")))),
    "concat": lambda n, g: (lambda x: torch.cat(list(x), dim=n.attr("axis"))),
    "slice": _slice,
    "pad": _pad,
    "gather": _gather,
    "add": _binary(torch.add), "sub": _binary(torch.sub), "mul": _binary(torch.mul),
    "div": _binary(torch.div), "pow": _binary(torch.pow),
    "maximum": _binary(torch.maximum), "minimum": _binary(torch.minimum),
    "identity": _unary(lambda x, n: x),
    "neg": _unary(lambda x, n: -x),
    "abs": _unary(lambda x, n: x.abs()),
    "exp": _unary(lambda x, n: x.exp()),
    "log": _unary(lambda x, n: x.log()),
    "sqrt": _unary(lambda x, n: x.sqrt()),
    "reciprocal": _unary(lambda x, n: 1 / x),
    "erf": _unary(lambda x, n: torch.erf(x)),
    "relu": _unary(lambda x, n: torch.relu(x)),
    "leaky_relu": _unary(lambda x, n: F.leaky_relu(x, n.attr("alpha", 0.01))),
    "clip": _clip,
    "sigmoid": _unary(lambda x, n: torch.sigmoid(x)),
    "tanh": _unary(lambda x, n: torch.tanh(x)),
    "silu": _unary(lambda x, n: F.silu(x)),
    "hardsigmoid": _unary(lambda x, n: torch.clamp(n.attr("alpha", 1 / 6) * x + n.attr("beta", 0.5), 0, 1)),
    "hardswish": _unary(lambda x, n: x * torch.clamp(x + 3, 0, 6) / 6),
    "gelu": _unary(_gelu),
}


# ---- coverage ops (ir.ops.coverage): activations, predicates, integer arithmetic, selections, resize --------
TORCH_DTYPES = {"f32": torch.float32, "f64": torch.float64, "i4": torch.int8, "u4": torch.uint8, "i8": torch.int8,
                "u8": torch.uint8, "i16": torch.int16, "u16": torch.uint16, "i32": torch.int32, "i64": torch.int64,
                "i1": torch.bool}
_NARROW_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)    # torch has few kernels for these: widen


def _wide(f):
    """``f`` on operands widened to int64 where torch lacks kernels for their dtype, cast back after."""
    def g(*x):
        dt = x[0].dtype
        if dt in _NARROW_UNSIGNED:
            y = f(*[v.to(torch.int64) for v in x])
            return y if y.dtype == torch.bool else y.to(dt)
        return f(*x)
    return g


def _w(x: torch.Tensor) -> torch.Tensor:
    """``x`` widened to int64 where torch lacks kernels for its dtype (uint16/32/64), else itself."""
    return x.to(torch.int64) if x.dtype in _NARROW_UNSIGNED else x


def _k(x: torch.Tensor, v) -> torch.Tensor:
    """An attribute scalar in ``x``'s dtype (as the numpy kernels' ``np.asarray(v, x.dtype)``)."""
    return torch.tensor(v, dtype=x.dtype)


def _elu(x, n):
    return torch.where(x > 0, x, _k(x, n.attr("alpha", 1.0)) * torch.expm1(torch.clamp(x, max=0)))


def _selu(x, n):
    al, ga = _k(x, n.attr("alpha", 1.6732632423543772)), _k(x, n.attr("gamma", 1.0507009873554805))
    return torch.where(x > 0, ga * x, ga * (al * torch.exp(torch.clamp(x, max=0)) - al))


def _celu(x, n):
    al = _k(x, n.attr("alpha", 1.0))
    return torch.clamp(x, min=0) + torch.clamp(al * torch.expm1(torch.clamp(x, max=0) / al), max=0)


def _softplus(x, n=None):
    return torch.logaddexp(x, torch.zeros_like(x))


def _shrink(x, n):
    lam, bias = _k(x, n.attr("lambd", 0.5)), _k(x, n.attr("bias", 0.0))
    return torch.where(x < -lam, x + bias, torch.where(x > lam, x - bias, torch.zeros_like(x)))


def _isinf(x, n):
    pos, neg = n.attr("detect_positive", True), n.attr("detect_negative", True)
    y = torch.zeros_like(x, dtype=torch.bool)
    if pos:
        y = y | torch.isposinf(x)
    if neg:
        y = y | torch.isneginf(x)
    return y


def _safe_int_div(f):
    """Integer ``x mod y`` as numpy gives it: 0 where ``y`` is 0 (and where it is -1, which cannot overflow)."""
    def g(x, y):
        if x.is_floating_point() or x.dtype == torch.bool:
            return f(x, y)
        bad = (y == 0) | (y == -1) if y.dtype.is_signed else y == 0
        return torch.where(bad, torch.zeros_like(x), f(x, torch.where(bad, torch.ones_like(y), y)))
    return g


def _mod(n: Node, g: Graph) -> Fn:
    f = _wide(_safe_int_div(torch.fmod if n.attr("fmod", False) else torch.remainder))
    return lambda x: f(x[0], x[1]).to(x[0].dtype)


def _bitshift(n: Node, g: Graph) -> Fn:
    d = n.attr("direction", "LEFT")
    if d not in ("LEFT", "RIGHT"):
        raise ValueError(f"bitshift direction {d!r}")
    f = _wide(torch.bitwise_left_shift if d == "LEFT" else torch.bitwise_right_shift)
    return lambda x: f(x[0], x[1])


def _cast(n: Node, g: Graph) -> Fn:
    dt = TORCH_DTYPES[n.attr("to")]
    return lambda x: x[0].to(dt)


def _arg(which: str):
    def build(n: Node, g: Graph) -> Fn:
        rank = g.type_of(n.inputs[0]).rank
        ax = n.attr("axis", 0) % max(rank, 1)
        keep = bool(n.attr("keepdims", True))
        last = bool(n.attr("select_last_index", False))
        f = torch.argmax if which == "max" else torch.argmin

        def fn(x):
            v = _w(x[0])
            if last:
                size = v.shape[ax]
                return size - 1 - f(torch.flip(v, (ax,)), dim=ax, keepdim=keep)
            return f(v, dim=ax, keepdim=keep)
        return fn
    return build


def _reduce_prod(n: Node, g: Graph) -> Fn:
    rank = g.type_of(n.inputs[0]).rank
    axes = sorted({ax % rank for ax in n.attr("axes", tuple(range(rank)))}, reverse=True)
    keep = bool(n.attr("keepdims", True))

    def fn(x):
        y = x[0]
        for ax in axes:                                     # from the last, so that earlier axes keep their index
            y = torch.prod(y, dim=ax, keepdim=keep)
        return y.to(x[0].dtype)
    return fn


def _cumsum(n: Node, g: Graph) -> Fn:
    rank = g.type_of(n.inputs[0]).rank
    ax = n.attr("axis") % max(rank, 1)
    rev, excl = bool(n.attr("reverse", False)), bool(n.attr("exclusive", False))

    def fn(x):
        v = torch.flip(_w(x[0]), (ax,)) if rev else _w(x[0])
        y = torch.cumsum(v, dim=ax, dtype=v.dtype)
        m = y.shape[ax]
        if excl and m:
            y = torch.cat([torch.zeros_like(y.narrow(ax, 0, 1)), y.narrow(ax, 0, m - 1)], dim=ax)
        return (torch.flip(y, (ax,)) if rev else y).to(x[0].dtype)
    return fn


def _hardmax(n: Node, g: Graph) -> Fn:
    t = g.type_of(n.inputs[0])
    ax = n.attr("axis", -1) % max(t.rank, 1)
    pos = torch.arange(t.shape[ax]).reshape([-1 if i == ax else 1 for i in range(t.rank)])

    def fn(x):
        idx = torch.argmax(_w(x[0]), dim=ax, keepdim=True)
        return (pos == idx).to(x[0].dtype)
    return fn


def _topk(n: Node, g: Graph) -> Fn:
    """(values, indices): a stable sort of ``-x`` (largest) or ``x``, as numpy's argsort: ties keep the lower
    index first, NaN sorts last."""
    ax = n.attr("axis", -1) % max(g.type_of(n.inputs[0]).rank, 1)
    k, largest = int(n.attr("k")), bool(n.attr("largest", True))

    def fn(x):
        v = x[0]
        key = v
        if largest:
            key = -v.to(torch.int64) if v.dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64) else -v
        idx = torch.sort(key, dim=ax, stable=True).indices.narrow(ax, 0, k)
        return torch.gather(_w(v), ax, idx).to(v.dtype), idx
    return fn


def _gather_elements(n: Node, g: Graph) -> Fn:
    t = g.type_of(n.inputs[0])
    ax = n.attr("axis", 0) % max(t.rank, 1)
    size = t.shape[ax]

    def fn(x):
        i = x[1].to(torch.int64)
        return torch.gather(_w(x[0]), ax, torch.where(i < 0, i + size, i)).to(x[0].dtype)
    return fn


def _einsum(n: Node, g: Graph) -> Fn:
    eq = n.attr("equation")
    return lambda x: torch.einsum(eq, *[_w(v) for v in x]).to(x[0].dtype)


def _resize(n: Node, g: Graph) -> Fn:
    """The numpy kernel's per-axis plan (``coverage.resize_plan``): a gather (nearest) or a [m, n] matrix of tap
    weights (linear, cubic; float64 as the numpy kernel), then the extrapolation mask."""
    from .coverage import resize_plan
    t = g.type_of(n.inputs[0])
    a = n.attr_dict
    nearest = a.get("mode", "nearest") == "nearest"
    extrap = float(a.get("extrapolation", 0.0))
    steps = []
    for ax, idx, w, extra in resize_plan(t.shape, a):
        mask = None
        if extra is not None and extra.any():
            mask = torch.from_numpy(extra.reshape((-1,) + (1,) * (t.rank - ax - 1)))
        if nearest:
            steps.append((ax, torch.from_numpy(idx.reshape(-1).astype(np.int64)), mask))
        else:
            m = np.zeros((idx.shape[0], t.shape[ax]), np.float64)
            np.add.at(m, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.reshape(-1)), w.reshape(-1))
            steps.append((ax, torch.from_numpy(m), mask))
    floaty = t.is_float

    def fn(x):
        v = x[0]
        y = _w(v) if nearest else v.double()
        for ax, op, mask in steps:
            if nearest:
                y = torch.index_select(y, ax, op)
            else:
                y = torch.movedim(torch.matmul(torch.movedim(y, ax, -1), op.T), -1, ax)
            if mask is not None:
                y = torch.where(mask, torch.tensor(extrap, dtype=y.dtype), y)
        if not nearest and not floaty:
            info = torch.iinfo(v.dtype)
            y = torch.clamp(torch.round(y), info.min, info.max)
        return y.to(v.dtype)
    return fn


def _conv_transpose2d(n: Node, g: Graph) -> Fn:
    """``F.conv_transpose2d`` without padding, then the (t, l, b, r) pads cropped and ``output_padding`` added
    at the bottom/right (``F.pad`` with negative widths crops): the numpy kernel's zero-stuffed conv2d."""
    s = tuple(n.attr("stride", (1, 1)))
    p = tuple(n.attr("pad", (0, 0, 0, 0)))
    d = tuple(n.attr("dilation", (1, 1)))
    op = tuple(n.attr("output_padding", (0, 0)))
    groups = int(n.attr("groups", 1))
    widths = (-p[1], op[1] - p[3], -p[0], op[0] - p[2])

    def fn(x):
        y = F.conv_transpose2d(x[0], x[1], None, s, 0, 0, groups, d)
        if any(widths):
            y = F.pad(y, widths)
        if len(x) == 3:
            y = y + x[2].reshape(-1, 1, 1)
        return y
    return fn


COVERAGE_OPS: dict[str, Callable[[Node, Graph], Fn]] = {
    "elu": _unary(_elu), "selu": _unary(_selu), "celu": _unary(_celu),
    "mish": _unary(lambda x, n: x * torch.tanh(_softplus(x))),
    "softplus": _unary(_softplus),
    "softsign": _unary(lambda x, n: x / (1 + x.abs())),
    "thresholded_relu": _unary(lambda x, n: torch.where(x > _k(x, n.attr("alpha", 1.0)), x, torch.zeros_like(x))),
    "shrink": _unary(_shrink),
    "sin": _unary(lambda x, n: torch.sin(x)), "cos": _unary(lambda x, n: torch.cos(x)),
    "tan": _unary(lambda x, n: torch.tan(x)), "asin": _unary(lambda x, n: torch.asin(x)),
    "acos": _unary(lambda x, n: torch.acos(x)), "atan": _unary(lambda x, n: torch.atan(x)),
    "sinh": _unary(lambda x, n: torch.sinh(x)), "cosh": _unary(lambda x, n: torch.cosh(x)),
    "asinh": _unary(lambda x, n: torch.asinh(x)), "acosh": _unary(lambda x, n: torch.acosh(x)),
    "atanh": _unary(lambda x, n: torch.atanh(x)),
    "floor": _unary(lambda x, n: torch.floor(x)), "ceil": _unary(lambda x, n: torch.ceil(x)),
    "round": _unary(lambda x, n: torch.round(x)),                  # half to even, as numpy
    "sign": _unary(lambda x, n: torch.sign(x)),
    "equal": _binary(_wide(torch.eq)), "less": _binary(_wide(torch.lt)), "less_equal": _binary(_wide(torch.le)),
    "greater": _binary(_wide(torch.gt)), "greater_equal": _binary(_wide(torch.ge)),
    "logical_and": _binary(torch.logical_and), "logical_or": _binary(torch.logical_or),
    "logical_xor": _binary(torch.logical_xor), "logical_not": _unary(lambda x, n: torch.logical_not(x)),
    "isnan": _unary(lambda x, n: torch.isnan(x)),
    "isinf": _unary(_isinf),
    "where": lambda n, g: (lambda x: torch.where(x[0].to(torch.bool), _w(x[1]), _w(x[2])).to(x[1].dtype)),
    "mod": _mod,
    "bitshift": _bitshift,
    "bitwise_and": _binary(_wide(torch.bitwise_and)), "bitwise_or": _binary(_wide(torch.bitwise_or)),
    "bitwise_xor": _binary(_wide(torch.bitwise_xor)),
    "bitwise_not": _unary(lambda x, n: _wide(torch.bitwise_not)(x)),
    "cast": _cast,
    "argmax": _arg("max"), "argmin": _arg("min"),
    "reduce_prod": _reduce_prod,
    "cumsum": _cumsum,
    "hardmax": _hardmax,
    "topk": _topk,
    "gather_elements": _gather_elements,
    "einsum": _einsum,
    "resize": _resize,
    "conv_transpose2d": _conv_transpose2d,
}
TORCH_OPS.update(COVERAGE_OPS)


def torch_op(op: str) -> Callable[[Node, Graph], Fn] | None:
    """The torch evaluation of ``op``: the one registered with the op (``register(..., torch=)``), else this
    module's table."""
    d = REGISTRY.get(op)
    return (d.torch if d is not None and d.torch is not None else None) or TORCH_OPS.get(op)


def missing_torch_ops() -> list[str]:
    """Registered float ops without a torch evaluation (the parity test requires none)."""
    return sorted(n for n, d in REGISTRY.items() if not d.integer and torch_op(n) is None)
