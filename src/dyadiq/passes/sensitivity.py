# SPDX-License-Identifier: Apache-2.0
"""Sensitivity of each conv2d/linear layer to quantizing its weights at ``b`` bits (input of ``choose_bits``).

The loss is label-free: ``L(W) = mean_n KL(p_n || q_n(W))`` with ``p_n`` the float model's softmax output
on calibration sample ``n`` and ``q_n(W)`` the output with perturbed weights (outputs produced by a
``softmax`` are taken at its input, the logits). ``L`` and its gradient vanish at the float weights, so
its Hessian there is the Gauss-Newton / Fisher matrix ``H = mean_n J_n^T (diag p_n - p_n p_n^T) J_n``
(``J_n``: Jacobian of the logits) and, to second order, ``L(W + dW) ~ 1/2 dW^T H dW``.

- ``hessian`` (HAWQ-V2/V3): ``s_l(b) = 1/2 * Tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2``, the second-order
  loss of a perturbation spread evenly over the ``n_l`` weights of layer ``l``; in the units of KL.
  ``Tr(H_l)`` is a Hutchinson estimate. ``estimator="output"`` (default) probes the logits: with
  ``r`` Rademacher and ``c_n = sqrt(p_n) * r_n - p_n <sqrt(p_n), r_n>`` (so ``E[c c^T] = diag p - p p^T``),
  ``E ||sum_n J_{n,l}^T c_n||^2 = N Tr(H_l)``: one backward pass per probe gives every layer's trace,
  never negative, and without cross-layer noise. ``estimator="parameter"`` is the classic
  ``E[v_l^T (H v)_l]``, ``v`` Rademacher over all weights, ``H v`` by double backward.
- ``measured``: the KL itself, measured with only layer ``l`` quantized to ``b`` bits (float
  activations), its output shift corrected as the pipeline's empirical bias correction does:
  ``E[conv(x, dW)] = conv(E[x], dW)`` per channel, exact because conv/linear are linear in ``x``. Only the
  part of the graph downstream of ``l`` is re-run.

``Q_b`` is the pipeline's weight quantizer (``quantize_weights.weight_quant``: symmetric, per channel
by default). The graph is prepared as ``quantize`` prepares it (canonicalize, then equalize with clamped
scales when the options say so), so layer names and weights are those the pipeline will quantize; the
sensitivities assume round-to-nearest (``rounding="gptq"`` makes the errors smaller). A weight shared by several
layers is charged to the first of them (the others get 0). Runs with torch (``torch_eval``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Sequence

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node
from ..ir.numerics import fake_quant
from .calibrate import prepare_calib
from .quantize_weights import check_weight_bits, weight_quant, weighted_layers

METHODS = ("hessian", "measured")
ESTIMATORS = ("output", "parameter")
CANDIDATES = (2, 3, 4, 5, 6, 8)
Progress = Callable[[str, int, int], None]      # progress(stage, done, total)
Sensitivity = dict[str, dict[int, float]]        # layer -> bits -> sensitivity


@dataclass(frozen=True)
class SensitivityOptions:
    """How ``sensitivities`` measures; validated when built (``PassError``)."""

    method: str = "hessian"                      # hessian | measured
    candidates: tuple[int, ...] = CANDIDATES
    samples: int = 32                            # calibration samples used (the first ones)
    probes: int = 4                              # Hutchinson probes per chunk (hessian)
    estimator: str = "output"                    # output | parameter (hessian)
    chunk: int = 16                              # samples per torch call (memory vs speed)
    per_channel: bool = True                     # weight quantizer, as in QuantizeOptions
    equalize: bool | None = None                 # as QuantizeOptions.equalize (None: per-tensor weights only)
    bias_correct: bool = True                    # measured: correct each layer's output shift
    seed: int = 0
    threads: int | None = None                   # torch intra-op threads (None: leave as is)

    def __post_init__(self):
        if self.method not in METHODS:
            raise PassError(f"unknown sensitivity method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.estimator not in ESTIMATORS:
            raise PassError(f"unknown Hessian estimator {self.estimator!r} (choose from {', '.join(ESTIMATORS)})")
        cands = tuple(sorted({check_weight_bits(b, " (candidate)") for b in self.candidates}))
        if not cands:
            raise PassError("no candidate bitwidths")
        object.__setattr__(self, "candidates", cands)
        for name in ("samples", "probes", "chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PassError(f"sensitivity option {name} must be a positive int, got {v!r}")


def make_sensitivity_options(options: SensitivityOptions | None = None, **kw) -> SensitivityOptions:
    """``options`` (default ``SensitivityOptions()``) with the fields in ``kw`` replaced."""
    known = {f.name for f in fields(SensitivityOptions)}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise PassError(f"unknown sensitivity option(s) {unknown} (known: {', '.join(sorted(known))})")
    return replace(options or SensitivityOptions(), **kw)


def pipeline_equalizes(equalize: bool | None, per_channel: bool) -> bool:
    """Whether ``quantize`` equalizes with these options (``None``: only with per-tensor weights)."""
    return bool(equalize) or (equalize is None and not per_channel)


def prepare_graph(g: Graph, *, equalize: bool | None = None, per_channel: bool = True) -> Graph:
    """The float graph ``quantize`` will quantize: canonicalized, then equalized (clamped scales) when
    ``pipeline_equalizes(equalize, per_channel)``."""
    from .canonicalize import canonicalize
    g = canonicalize(g)
    if pipeline_equalizes(equalize, per_channel):
        from .equalize import equalize as eq
        g = eq(g, clamp_scales=True)
    return g


def weight_errors(g: Graph, candidates: Sequence[int] = CANDIDATES, *, per_channel: bool = True) -> Sensitivity:
    """``||Q_b(W_l) - W_l||^2`` per layer and width (the pipeline's weight quantizer)."""
    out: Sensitivity = {}
    for n in weighted_layers(g):
        w = _weight(g, n).astype(np.float64)
        out[n.name] = {}
        for b in candidates:
            q = weight_quant(w, b, per_channel=per_channel and w.ndim > 1)
            out[n.name][b] = float(((fake_quant(w, q) - w) ** 2).sum())
    return out


def sensitivities(g: Graph, calib, method: str | None = None, candidates: Sequence[int] | None = None,
                  progress: Progress | None = None, *, options: SensitivityOptions | None = None,
                  prepared: bool = False, **kw) -> Sensitivity:
    """``layer -> bits -> sensitivity`` (module docstring) of every conv2d/linear layer of ``g`` prepared as
    ``quantize`` prepares it (``prepared=True``: ``g`` already is). ``method``, ``candidates`` and ``kw``
    override fields of ``options`` (``SensitivityOptions``); ``progress(stage, done, total)``."""
    if method is not None:
        kw["method"] = method
    if candidates is not None:
        kw["candidates"] = tuple(candidates)
    opts = make_sensitivity_options(options, **kw)
    if not prepared:
        g = prepare_graph(g, equalize=opts.equalize, per_channel=opts.per_channel)
    with _threads(opts.threads):
        if opts.method == "hessian":
            traces = hessian_traces(g, calib, options=opts, progress=progress, prepared=True)
            err = weight_errors(g, opts.candidates, per_channel=opts.per_channel)
            out = {}
            for n in weighted_layers(g):
                numel = _weight(g, n).size
                out[n.name] = {b: 0.5 * traces[n.name] / numel * err[n.name][b] for b in opts.candidates}
            return out
        return _measured(g, calib, opts, progress)


# ---- shared torch plumbing ------------------------------------------------------------------------
class _threads:
    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None:
            import torch
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.old is not None:
            import torch
            torch.set_num_threads(self.old)


def _weight(g: Graph, n: Node) -> np.ndarray:
    w = n.inputs[1]
    if not g.is_const(w) or g.const(w).dtype.kind != "f":
        raise PassError(f"weight %{w} is not a float constant", node=n)
    return g.const(w)


def _owners(g: Graph) -> dict[str, Node]:
    """weight name -> the first layer that reads it."""
    owners: dict[str, Node] = {}
    for n in weighted_layers(g):
        _weight(g, n)
        owners.setdefault(n.inputs[1], n)
    return owners


def _logit_names(g: Graph) -> list[str]:
    """Float graph outputs, each taken at the input of a producing softmax (the logits)."""
    prod = g.producers()
    out = []
    for o in g.outputs:
        if not g.type_of(o).is_float:
            continue
        p = prod.get(o)
        out.append(p.inputs[0] if p is not None and p.op == "softmax" else o)
    if not out:
        raise PassError("the graph has no float output to measure sensitivity on")
    return out


def _samples(g: Graph, calib, opts: SensitivityOptions) -> list[dict[str, np.ndarray]]:
    """Calibration data in chunks of whole batches, at most ``opts.samples`` samples."""
    cs = prepare_calib(g, calib)
    n = min(cs.n, max(cs.batch, opts.samples - opts.samples % cs.batch))
    step = max(cs.batch, opts.chunk - opts.chunk % cs.batch)
    return [{k: v[i:min(i + step, n)] for k, v in cs.arrays.items()} for i in range(0, n, step)]


def _kl(logp_ref, z):
    """Sum over samples (and positions) of KL(p_ref || softmax(z)) along the last axis."""
    import torch
    logq = torch.log_softmax(z, dim=-1)
    return (logp_ref.exp() * (logp_ref - logq)).sum()


# ---- Hessian traces -------------------------------------------------------------------------------
def hessian_traces(g: Graph, calib, *, options: SensitivityOptions | None = None, progress: Progress | None = None,
                   prepared: bool = False, **kw) -> dict[str, float]:
    """Hutchinson estimate of ``Tr(H_l)`` per layer (``H``: Hessian of the mean KL, module docstring)."""
    import torch
    from .torch_eval import TorchGraph
    opts = make_sensitivity_options(options, **kw)
    if not prepared:
        g = prepare_graph(g, equalize=opts.equalize, per_channel=opts.per_channel)
    owners = _owners(g)
    logits = _logit_names(g)
    tg = TorchGraph(g, outputs=logits)
    ws = {w: torch.tensor(np.array(g.const(w), np.float32), requires_grad=True) for w in owners}
    names, params = list(ws), list(ws.values())
    acc = {w: 0.0 for w in ws}
    gen = torch.Generator().manual_seed(opts.seed)
    chunks = _samples(g, calib, opts)
    total, done, n_seen = len(chunks) * opts.probes, 0, 0
    if progress:
        progress("hessian", 0, total)
    for x in chunks:
        zs = list(tg.run(x, ws).values())
        n_seen += next(iter(x.values())).shape[0]
        if opts.estimator == "output":
            ps = [torch.softmax(z.detach(), dim=-1) for z in zs]
            for k in range(opts.probes):
                dot = 0.0
                for z, p in zip(zs, ps):
                    r = torch.randint(0, 2, z.shape, generator=gen).to(z.dtype) * 2 - 1
                    sp = p.sqrt() * r
                    c = sp - p * sp.sum(-1, keepdim=True)
                    dot = dot + (z * c).sum()
                grads = torch.autograd.grad(dot, params, retain_graph=k < opts.probes - 1, allow_unused=True)
                for w, gr in zip(names, grads):
                    acc[w] += float((gr.double() ** 2).sum()) if gr is not None else 0.0
                done += 1
                if progress:
                    progress("hessian", done, total)
        else:
            loss = sum(_kl(torch.log_softmax(z.detach(), -1), z) for z in zs)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            used = [i for i, gr in enumerate(grads) if gr is not None]
            for k in range(opts.probes):
                vs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
                hv = torch.autograd.grad(sum((grads[i] * vs[i]).sum() for i in used), [params[i] for i in used],
                                         retain_graph=k < opts.probes - 1, allow_unused=True)
                for i, h in zip(used, hv):
                    if h is not None:
                        acc[names[i]] += float((vs[i].double() * h.double()).sum())
                done += 1
                if progress:
                    progress("hessian", done, total)
    traces = {n.name: 0.0 for n in weighted_layers(g)}
    for w, n in owners.items():
        traces[n.name] = acc[w] / (opts.probes * n_seen)
    return traces


# ---- measured KL ----------------------------------------------------------------------------------
def _downstream(nodes: Sequence[Node], start: int) -> list[int]:
    """Indices of the nodes after ``start`` that depend on its output."""
    dirty = set(nodes[start].outputs)
    out = []
    for i in range(start + 1, len(nodes)):
        if any(a in dirty for a in nodes[i].inputs):
            dirty.update(nodes[i].outputs)
            out.append(i)
    return out


def _measured(g: Graph, calib, opts: SensitivityOptions, progress: Progress | None) -> Sensitivity:
    import torch
    from .torch_eval import TorchGraph
    owners = _owners(g)
    logits = _logit_names(g)
    tg = TorchGraph(g, outputs=logits)
    index = {n.name: i for i, n in enumerate(tg.nodes)}
    layers = [n for n in owners.values() if n.name in index]      # layers that reach an output
    chunks = _samples(g, calib, opts)
    n_total = sum(next(iter(x.values())).shape[0] for x in chunks)
    plans = {}
    for n in layers:
        later = _downstream(tg.nodes, index[n.name])
        made = {o for i in later for o in tg.nodes[i].outputs}
        need = sorted({a for i in later for a in tg.nodes[i].inputs if a not in made and a != n.name
                       and not g.is_const(a)} | set(n.inputs[:1]))
        plans[n.name] = (later, need, made)
    keep = sorted({v for _, need, _ in plans.values() for v in need} | set(logits))

    # mean layer input over all samples (bias correction) and the quantized weights
    qw, shift = {}, {}
    with torch.no_grad():
        if opts.bias_correct:
            sums: dict[str, torch.Tensor] = {}
            for x in chunks:
                env = tg.run(x, keep=[n.inputs[0] for n in layers])
                for k, v in env.items():
                    sums[k] = sums.get(k, 0) + v.double().sum(0, keepdim=True)
            means = {k: (v / n_total).float() for k, v in sums.items()}
        for n in layers:
            w = _weight(g, n).astype(np.float32)
            for b in opts.candidates:
                q = weight_quant(w, b, per_channel=opts.per_channel and w.ndim > 1)
                wq = torch.from_numpy(np.ascontiguousarray(fake_quant(w, q)))
                qw[n.name, b] = wq
                if opts.bias_correct:
                    dw = wq - torch.from_numpy(w)
                    y = _apply(tg, n, means[n.inputs[0]], dw)
                    dims = [d for d in range(y.ndim) if d != (1 if n.op == "conv2d" else y.ndim - 1)]
                    shift[n.name, b] = y.mean(dim=dims, keepdim=True)[0] if n.op == "conv2d" else \
                        y.mean(dim=dims)
    out = {n.name: {b: 0.0 for b in opts.candidates} for n in weighted_layers(g)}
    total, done = len(chunks) * len(layers) * len(opts.candidates), 0
    if progress:
        progress("measured", 0, total)
    with torch.no_grad():
        for x in chunks:
            base = tg.run(x, keep=keep)
            ref = [torch.log_softmax(base[z], dim=-1) for z in logits]
            for n in layers:
                later, need, _ = plans[n.name]
                for b in opts.candidates:
                    y = tg.run(x, {n.inputs[1]: qw[n.name, b]}, base={k: base[k] for k in need},
                               nodes=[index[n.name]], keep=[n.name])[n.name]
                    if opts.bias_correct:
                        y = y - shift[n.name, b]
                    env = {z: base[z] for z in logits}
                    env[n.name] = y
                    if later:
                        made = [z for z in logits if z in plans[n.name][2]]
                        env.update(tg.run(x, base={**{k: base[k] for k in need}, n.name: y}, nodes=later,
                                          keep=made))
                    out[n.name][b] += float(sum(_kl(r, env[z]) for r, z in zip(ref, logits))) / n_total
                    done += 1
                    if progress:
                        progress("measured", done, total)
    return out


def _apply(tg, n: Node, x, w):
    """The layer's op on ``x`` with weight ``w`` and no bias."""
    fn = tg.fns[[m.name for m in tg.nodes].index(n.name)]
    return fn([x, w])
