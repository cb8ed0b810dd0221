# SPDX-License-Identifier: Apache-2.0
"""Which activations get 16 bits: sensitivity per activation tensor and a knapsack ILP.

Sensitivity. Quantizing activation ``a`` adds noise ``e`` with ``E[e e^T] = D_a(b)^2 / 12 I`` (``D`` the
step at ``b`` bits). With the label-free loss of ``sensitivity.py`` (mean KL of the float vs perturbed
outputs, Hessian ``H = mean_n J_n^T (diag p_n - p_n p_n^T) J_n``), to second order

    s_a(b) = 1/2 E[e^T H_a e] = 1/2 * D_a(b)^2 / 12 * Tr(H_a),

summed over the elements of ``a`` that do get noise (not 0 and not the ends of the range, which
activation functions and clamps put exactly on the grid). ``Tr(H_a)`` is estimated as there: output probes ``c_n`` with ``E[c c^T] = diag p - p p^T`` give
``E ||J_a^T c||^2 = N Tr(H_a)``, one backward pass per probe for every activation at once (gradients with
respect to zero "taps" added to each value).

The ILP (``scipy.optimize.milp``, HiGHS): one binary ``y_a`` per candidate (1 = 16 bits),

    minimize  sum_a s_a(8) (1 - y_a) + s_a(16) y_a
    s.t.      sum_a 1/2 (extra_bops_a / total_bops + extra_bits_a / total_bits) y_a <= budget,

the mean of the relative compute and memory increase: ``extra_bops_a`` = the MACs of the
conv/linear/matmul layers reading ``a`` times their weight bits times the 8 extra activation bits,
``total_bops`` = sum over layers of MACs * weight bits * activation bits; ``extra_bits_a`` = 16 - bits per
element of ``a``, ``total_bits`` = the bits of all quantized activations (per batch). Candidates are the
activations whose every reading layer keeps a provable int32 accumulator at 16 bits
(``2^15 * max_o sum |w_q| + |b| < 2^31``, the ``integerize`` check) and that are no factor of a product of
two activations (``read_by_product``), so the plan always lowers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node
from .annotate_quant import inherits
from .calibrate import prepare_calib
from .choose_bits import layer_macs

WIDE = 16
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ActChoice:
    """One candidate: its sensitivities at 8 and 16 bits and the BOPs it adds at 16."""

    name: str
    s8: float
    s16: float
    extra_bops: float
    extra_bits: int                   # activation memory added (elements * (16 - bits))


def activation_traces(g: Graph, calib, names, *, samples: int = 16, probes: int = 4, seed: int = 0,
                      progress: Progress | None = None) -> dict[str, float]:
    """``Tr(H_a)`` per value name of the float graph ``g`` (module docstring), per sample."""
    import torch
    from .sensitivity import _logit_names
    from .torch_eval import TorchGraph
    cs = prepare_calib(g, calib)
    n = min(cs.n, max(cs.batch, samples - samples % cs.batch))
    tg = TorchGraph(g, outputs=_logit_names(g))
    names = [v for v in names if v in g.values]
    acc = dict.fromkeys(names, 0.0)
    gen = torch.Generator().manual_seed(seed)
    chunks = [{k: torch.from_numpy(np.ascontiguousarray(v[i:i + cs.batch])) for k, v in cs.arrays.items()}
              for i in range(0, n - n % cs.batch, cs.batch)]
    total = len(chunks) * probes
    for ci, x in enumerate(chunks):
        x = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in x.items()}
        taps = {v: torch.zeros(tuple(g.type_of(v).shape), requires_grad=True) for v in names}
        env = tg.values(x, taps=taps, keep=[*tg.outputs, *names])
        zs = [env[o] for o in tg.outputs]
        masks = [_noisy(env[v].detach()) for v in names]
        ps = [torch.softmax(z.detach(), dim=-1) for z in zs]
        for k in range(probes):
            dot = 0.0
            for z, p in zip(zs, ps):
                r = torch.randint(0, 2, z.shape, generator=gen).to(z.dtype) * 2 - 1
                sp = p.sqrt() * r
                dot = dot + (z * (sp - p * sp.sum(-1, keepdim=True))).sum()
            grads = torch.autograd.grad(dot, list(taps.values()), retain_graph=k < probes - 1, allow_unused=True)
            for v, gr, m in zip(names, grads, masks):
                acc[v] += float(((gr.double() * m) ** 2).sum()) if gr is not None else 0.0
            if progress is not None:
                progress("activation sensitivity", ci * probes + k + 1, total)
    return {v: a / (probes * max(1, len(chunks) * cs.batch)) for v, a in acc.items()}


def _noisy(v):
    """1 where quantization adds noise: not at 0 or at the tensor's extremes (clamped / ReLU'd values are
    exact on the grid, which has 0 and the calibrated ends)."""
    return ((v != 0) & (v != v.max()) & (v != v.min())).to(v.dtype)


def _readers(g: Graph, name: str, consumers: Mapping[str, list[Node]] | None, want: Callable[[Node], bool]
             ) -> list[Node]:
    """The nodes ``want`` picks among those reading ``name``, directly or through data moves that keep its
    quantization (reshape, maxpool, ...)."""
    consumers = consumers if consumers is not None else g.consumers()
    out, todo, seen = [], [name], set()
    while todo:
        v = todo.pop()
        for c in consumers.get(v, []):
            if c.name in seen:
                continue
            seen.add(c.name)
            if want(c):
                out.append(c)
            elif inherits(c) and c.inputs[0] == v:
                todo.append(c.name)
    return out


def reading_layers(g: Graph, name: str, consumers: Mapping[str, list[Node]] | None = None) -> list[Node]:
    """conv2d / linear / matmul nodes that read ``name`` as data (``_readers``)."""
    return _readers(g, name, consumers, lambda c: c.op in ("conv2d", "linear", "matmul"))


def read_by_product(g: Graph, name: str, consumers: Mapping[str, list[Node]] | None = None) -> bool:
    """``name`` is one factor of a product of two activations (``_readers``): two 16-bit factors can leave
    int32 (GPT-2's ``x * (1 + tanh(..))``), so it stays 8-bit."""
    return bool(_readers(g, name, consumers, lambda c: c.op == "mul" and not any(g.is_const(i) for i in c.inputs)))


def _fits_int32(g: Graph, n: Node, codes: Mapping[str, np.ndarray], step16: float,
                scales: Mapping[str, np.ndarray] | None = None) -> bool:
    """``integerize``'s accumulator bound with a 16-bit input of step ``step16``: ``|x - zp| <= 2^16 - 1``
    times ``sum |w_q|`` per row, plus the integer bias ``|b| / (step16 * s_w)`` (counted twice: bias
    correction may still move it) when the weight scales ``s_w`` are known; matmul: never (no constant)."""
    if n.op == "matmul" or n.inputs[1] not in codes:
        return False
    w = codes[n.inputs[1]]
    bound = float((1 << WIDE) - 1) * np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1)
    if scales is not None and n.inputs[1] in scales and len(n.inputs) > 2 and g.is_const(n.inputs[2]):
        sw = np.broadcast_to(np.asarray(scales[n.inputs[1]], np.float64).reshape(-1), bound.shape)
        bound = bound + 2.0 * np.abs(np.asarray(g.const(n.inputs[2]), np.float64)) / (step16 * sw)
    return float(bound.max(initial=0)) < 2**31 * 0.99


def choices(g: Graph, traces: Mapping[str, float], *, weight_bits: Mapping[str, int],
            codes: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray] | None = None) -> list[ActChoice]:
    """Candidates of the annotated graph ``g`` (8-bit activation QuantTypes) with costs and sensitivities."""
    consumers = g.consumers()
    out = []
    for v, t in traces.items():
        q = g.quant_of(v)
        if q is None or g.is_const(v) or q.bits >= WIDE or q.per_channel:
            continue
        readers = reading_layers(g, v, consumers)
        step8 = float(q.scale[0])
        step16 = step8 * ((1 << q.bits) - 1) / ((1 << WIDE) - 1)
        if any(not _fits_int32(g, n, codes, step16, scales) for n in readers) or read_by_product(g, v, consumers):
            continue
        extra = sum(layer_macs(g, n) * weight_bits.get(n.name, 8) * (WIDE - q.bits) for n in readers)
        out.append(ActChoice(v, 0.5 * step8 ** 2 / 12 * t, 0.5 * step16 ** 2 / 12 * t, float(extra),
                             int(g.type_of(v).size) * (WIDE - q.bits)))
    return out


def relative_cost(c: ActChoice, total_bops: float, total_bits: float) -> float:
    """Mean of the relative BOPs and activation-memory increase of widening ``c``."""
    return 0.5 * (c.extra_bops / total_bops if total_bops else 0.0) + 0.5 * (
        c.extra_bits / total_bits if total_bits else 0.0)


def plan_act_bits(cands: list[ActChoice], total_bops: float, total_bits: float, budget: float) -> list[str]:
    """Names to widen: the knapsack ILP of the module docstring (``budget``: relative cost)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    if not 0 <= budget:
        raise PassError(f"activation BOPs budget must be >= 0, got {budget}")
    if not cands:
        return []
    gain = np.array([c.s8 - c.s16 for c in cands])
    cost = np.array([relative_cost(c, total_bops, total_bits) for c in cands])
    res = milp(-gain, constraints=[LinearConstraint(cost[None, :], -np.inf, budget)],
               integrality=np.ones(len(cands)), bounds=Bounds(0, 1))
    if res.x is None:
        raise PassError(f"activation width ILP failed: {res.message}")
    return sorted(c.name for c, y in zip(cands, res.x) if y > 0.5 and c.s8 > c.s16)


def total_act_bits(g: Graph) -> float:
    """Bits of all quantized activations of ``g`` (one batch)."""
    return float(sum(g.type_of(k).size * v.quant.bits for k, v in g.values.items()
                     if v.quant is not None and not g.is_const(k)))


def total_bops(g: Graph, weight_bits: Mapping[str, int], act_bits: int = 8) -> float:
    """Sum over conv2d/linear/matmul of MACs * weight bits * activation bits."""
    return float(sum(layer_macs(g, n) * weight_bits.get(n.name, 8) * act_bits
                     for n in g.nodes if n.op in ("conv2d", "linear", "matmul")))
