# SPDX-License-Identifier: Apache-2.0
"""Evaluate a float Graph with torch ops: differentiable in its weights, fast on batches.

    tg = TorchGraph(g)                          # constants become torch tensors
    y = tg(x)                                   # x: [N, ...], N a multiple of the graph's batch B
    y = tg(x, weights={"w1": w1})               # override constants (fake-quantized, requires_grad, ...)
    tg = TorchGraph(q, simulated=True)          # fake-quantize every value that carries a QuantType

Every float op of the registry has a torch counterpart with the interpreter's semantics (pads are
``(top, left, bottom, right)``, ceil-mode pools pad the high side, average pools divide by
``avgpool_divisor``). Graphs have static shapes: when ``N != B`` the graph runs under
``torch.func.vmap`` over ``N / B`` chunks of ``B`` samples, so static ``reshape``s stay valid and autograd
(gradients, Hessian-vector products) still works. ``simulated`` rounds like ``interp`` mode
"simulated": ``q = clamp(round_half_even(x / s) + z)`` in float64, ``x <- s (q - z)``.

This module imports torch; only the passes that need autograd (``sensitivity``, ``pareto``) load it.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PassError
from ..ir.graph import Graph, Node
from ..ir.ops.nn import avgpool_divisor, pool_out_type
from ..ir.ops.shape import _slices
from ..ir.ops.window import hw_attrs
from ..ir.types import QuantType, TensorType

Fn = Callable[[Sequence[torch.Tensor]], torch.Tensor]


# ---- op table: op name -> builder(node, graph) -> fn(args) --------------------------------------
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
    oh, ow = pool_out_type(in_t, a).shape[2:]
    extra = tuple(max(0, (o - 1) * st + dl * (kk - 1) + 1 - (m + lo + hi))
                  for o, st, dl, kk, m, lo, hi in zip((oh, ow), s, d, k, in_t.shape[2:], p[:2], p[2:]))
    pads = (p[0], p[1], p[2] + extra[0], p[3] + extra[1])
    if kind == "max":
        return lambda x: F.max_pool2d(_pad_hw(x[0], pads, -math.inf), k, s, 0, d)[..., :oh, :ow]
    if d != (1, 1):
        raise PassError("torch evaluation of a dilated avgpool is not supported", node=n)
    div = torch.from_numpy(avgpool_divisor(in_t.shape[2:], a, (oh, ow)).astype(np.float32))
    return lambda x: (F.avg_pool2d(_pad_hw(x[0], pads), k, s, 0, divisor_override=1)[..., :oh, :ow]
                      / div.to(x[0].dtype))


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


OPS: dict[str, Callable[[Node, Graph], Fn]] = {
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


# ---- fake quantization ----------------------------------------------------------------------------
def fake_quant(x: torch.Tensor, q: QuantType) -> torch.Tensor:
    """``scale * (clamp(round_half_even(x / scale) + zp) - zp)`` in float64, back in x's dtype."""
    rank = x.ndim
    s = torch.from_numpy(q.scale_array(rank).astype(np.float64))
    z = torch.from_numpy(q.zp_array(rank).astype(np.float64))
    lo, hi = q.qrange
    v = torch.clamp(torch.round(x.double() / s) + z, lo, hi)
    return ((v - z) * s).to(x.dtype)


class TorchGraph:
    """A float Graph as a torch function of its inputs (and, optionally, of its constants)."""

    def __init__(self, g: Graph, *, outputs: Sequence[str] | None = None, simulated: bool = False):
        self.g = g
        self.outputs = tuple(outputs) if outputs is not None else tuple(g.outputs)
        for o in self.outputs:
            if o not in g.values:
                raise PassError(f"torch evaluation: unknown output value %{o}")
        self.batch = g.type_of(g.inputs[0]).shape[0] if g.inputs and g.type_of(g.inputs[0]).rank else 1
        self.simulated = simulated
        needed = set(self.outputs)
        for n in reversed(g.nodes):
            if any(o in needed for o in n.outputs):
                needed.update(n.inputs)
        self.nodes = [n for n in g.nodes if any(o in needed for o in n.outputs)]
        self.fns: list[Fn] = []
        for n in self.nodes:
            build = OPS.get(n.op)
            if build is None or not g.type_of(n.outputs[0]).is_float and n.op not in ("reshape", "transpose",
                                                                                       "slice", "concat", "gather"):
                raise PassError(f"op {n.op!r} has no torch evaluation (float graphs only)", node=n)
            self.fns.append(build(n, g))
        self.constants = {k: torch.from_numpy(np.array(v)) for k, v in g.constants.items() if k in needed}
        if simulated:
            for k, t in self.constants.items():
                q = g.quant_of(k)
                if q is not None and t.is_floating_point():
                    self.constants[k] = fake_quant(t, q)
        self.quants = {k: g.quant_of(k) for k in needed if g.quant_of(k) is not None} if simulated else {}

    # ---- evaluation ------------------------------------------------------------------------------
    def values(self, inputs: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor] | None = None,
               *, base: Mapping[str, torch.Tensor] | None = None, nodes: Sequence[int] | None = None,
               keep: Sequence[str] | None = None, taps: Mapping[str, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
        """Environment after running ``nodes`` (indices into ``self.nodes``; default all) on batch-B inputs.

        ``base`` supplies values computed earlier (so only a suffix of the graph need run); ``keep``
        limits the returned names (default: the outputs); ``taps`` are added to the named values as they
        are made (zeros with ``requires_grad``: gradients with respect to activations).
        """
        taps = taps or {}
        env: dict[str, torch.Tensor] = dict(self.constants)
        if weights:
            env.update({k: fake_quant(v, self.quants[k]) if k in self.quants else v for k, v in weights.items()})
        for k, v in inputs.items():
            env[k] = fake_quant(v, self.quants[k]) if k in self.quants else v
            if k in taps:
                env[k] = env[k] + taps[k]
        if base:
            env.update(base)
        for i in (range(len(self.nodes)) if nodes is None else nodes):
            n = self.nodes[i]
            y = self.fns[i]([env[a] for a in n.inputs])
            q = self.quants.get(n.outputs[0])
            env[n.outputs[0]] = fake_quant(y, q) if q is not None and y.is_floating_point() else y
            if n.outputs[0] in taps:
                env[n.outputs[0]] = env[n.outputs[0]] + taps[n.outputs[0]]
        return {k: env[k] for k in (keep if keep is not None else self.outputs)}

    def run(self, x, weights: Mapping[str, torch.Tensor] | None = None, **kw) -> dict[str, torch.Tensor]:
        """``values`` on ``N`` samples (``N`` a multiple of the batch; vmapped over chunks when ``N != B``)."""
        inputs = self._bind(x)
        n = next(iter(inputs.values())).shape[0]
        base = kw.pop("base", None)
        if n == self.batch:
            return self.values(inputs, weights, base=base, **kw)
        if n % self.batch:
            raise PassError(f"{n} samples do not split into batches of {self.batch}")
        c = n // self.batch

        def split(d):
            return {k: v.reshape((c, self.batch) + tuple(v.shape[1:])) for k, v in d.items()}

        def one(inp, b):
            return self.values(inp, weights, base=b, **kw)
        out = torch.func.vmap(one)(split(inputs), split(base) if base else {})
        return {k: v.reshape((n,) + tuple(v.shape[2:])) for k, v in out.items()}

    def __call__(self, x, weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | list[torch.Tensor]:
        out = self.run(x, weights)
        res = [out[o] for o in self.outputs]
        return res[0] if len(res) == 1 else res

    def _bind(self, x) -> dict[str, torch.Tensor]:
        if not isinstance(x, Mapping):
            if len(self.g.inputs) != 1:
                raise PassError(f"graph takes {len(self.g.inputs)} inputs: pass a dict")
            x = {self.g.inputs[0]: x}
        out = {}
        for k in self.g.inputs:
            v = x[k]
            t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
            want = self.g.type_of(k)
            out[k] = t.to(_torch_dtype(want)) if want.is_float else t
        return out


def _torch_dtype(t: TensorType) -> torch.dtype:
    return torch.float64 if t.dtype == "f64" else torch.float32
