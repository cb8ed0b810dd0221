# SPDX-License-Identifier: Apache-2.0
"""Evaluate a float Graph with torch ops: differentiable in its weights, fast on batches.

    tg = TorchGraph(g)                          # constants become torch tensors
    y = tg(x)                                   # x: [N, ...], N a multiple of the graph's batch B
    y = tg(x, weights={"w1": w1})               # override constants (fake-quantized, requires_grad, ...)
    tg = TorchGraph(q, simulated=True)          # fake-quantize every value that carries a QuantType

Every float op of the registry has a torch counterpart (``ir.ops.torch_kernels``) with the interpreter's
semantics, checked op by op against the numpy kernels in float and simulated modes. Graphs have static shapes: when ``N != B`` the graph runs under
``torch.func.vmap`` over ``N / B`` chunks of ``B`` samples, so static ``reshape``s stay valid and autograd
(gradients, Hessian-vector products) still works. ``simulated`` rounds like ``interp`` mode
"simulated": ``q = clamp(round_half_even(x / s) + z)`` in float64, ``x <- s (q - z)``.

This module imports torch; only the passes that need autograd (``sensitivity``, ``pareto``) load it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import PassError
from ..ir.graph import Graph
from ..ir.ops.registry import is_weighted, op_def
from ..ir.ops.torch_kernels import Fn, torch_op
from ..ir.types import QuantType, TensorType


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
            build = torch_op(n.op)
            if build is None or op_def(n.op).integer:
                raise PassError(f"op {n.op!r} has no torch evaluation (float graphs only)", node=n)
            self.fns.append(build(n, g))
        self.constants = {k: torch.from_numpy(np.array(v)) for k, v in g.constants.items() if k in needed}
        if simulated:
            for k, t in self.constants.items():
                q = g.quant_of(k)
                if q is not None and t.is_floating_point():
                    self.constants[k] = fake_quant(t, q)
        self.quants = {k: g.quant_of(k) for k in needed if g.quant_of(k) is not None} if simulated else {}
        self.bias_steps = {i: _bias_step(g, n) for i, n in enumerate(self.nodes)
                           if simulated and is_weighted(n.op) and len(n.inputs) == 3 and _bias_step(g, n) is not None}

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
            args = [env[a] for a in n.inputs]
            if i in self.bias_steps:            # the bias the integer code adds (as interp's simulated mode)
                step = self.bias_steps[i]
                args[2] = (torch.round(args[2].double() / step) * step).to(args[2].dtype)
            ys = self.fns[i](args)
            for o, y in zip(n.outputs, ys if isinstance(ys, (tuple, list)) else (ys,)):   # topk: values, indices
                q = self.quants.get(o)
                env[o] = fake_quant(y, q) if q is not None and y.is_floating_point() else y
                if o in taps:
                    env[o] = env[o] + taps[o]
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


def _bias_step(g: Graph, n) -> torch.Tensor | None:
    """``s_x s_w`` of a layer whose input and weight are quantized (per-tensor input), else None."""
    qx, qw = g.quant_of(n.inputs[0]), g.quant_of(n.inputs[1])
    if qx is None or qw is None or qx.per_channel:
        return None
    return torch.from_numpy(qx.scale[0] * np.asarray(qw.scale, np.float64))


def _torch_dtype(t: TensorType) -> torch.dtype:
    return torch.float64 if t.dtype == "f64" else torch.float32
