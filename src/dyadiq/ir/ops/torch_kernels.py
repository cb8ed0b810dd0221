# SPDX-License-Identifier: Apache-2.0
"""The torch evaluation of every float op, beside the numpy kernels of the registry (one semantics, two
array libraries): ``TORCH_OPS[op](node, graph) -> fn(tensors) -> tensor``.

Used by ``passes.torch_eval.TorchGraph`` (differentiable, batched evaluation for the sensitivity, wide-
activation and pareto planners). ``tests/ir/test_torch_parity.py`` checks every registered float op
against the numpy interpreter in float and simulated modes; ``missing_torch_ops()`` names any op that
lacks an entry. Semantics follow the numpy kernels: pads ``(top, left, bottom, right)``, pool geometry
from ``window.pool_geometry``, average pools divided by ``avgpool_divisor``.

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
    "softmax": _unary(lambda x, n: torch.softmax(x, n.attr("axis", -1))),
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


def missing_torch_ops() -> list[str]:
    """Registered float ops without a torch evaluation (the parity test requires none)."""
    return sorted(n for n, d in REGISTRY.items() if not d.integer and n not in TORCH_OPS)
