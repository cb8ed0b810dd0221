# SPDX-License-Identifier: Apache-2.0
"""Normalization, softmax, attention, embedding and index rows of the torch.export op table."""
from __future__ import annotations

import math

import torch

from .torch_ops import Const, Unavailable, _axis, dtype_name, row


# ---- normalization and softmax -----------------------------------------------------------------------
def _ones(cx, shape, fill: float, hint: str) -> Const:
    return Const(torch.full(tuple(shape), fill, dtype=cx.meta.dtype), f"{cx.node.name}.{hint}")


@row("aten._native_batch_norm_legit_functional", "aten._native_batch_norm_legit")
def _batch_stats_norm(cx, a):
    raise cx.error("normalization with batch statistics (training-mode batch_norm or instance_norm) is not "
                   "supported; export the model after model.eval()")


@row("aten.batch_norm", "aten._native_batch_norm_legit_no_training", "aten.native_batch_norm")
def _batch_norm(cx, a):
    if a.get("training"):
        raise cx.error("training-mode batch_norm; export the model after model.eval()")
    x, mean, var = a["input"], a["running_mean"], a["running_var"]
    if mean is None or var is None:
        raise cx.error("batch_norm without running statistics is not supported")
    c = cx.shape(x)[1]
    w = a["weight"] if a["weight"] is not None else _ones(cx, (c,), 1.0, "weight")
    b = a["bias"] if a["bias"] is not None else _ones(cx, (c,), 0.0, "bias")
    y = cx.emit("batchnorm", [x, w, b, mean, var], name=cx.layer(mean), eps=float(a["eps"]))
    if str(cx.node.target.overloadpacket) == "aten.batch_norm":
        return y
    return (y, Unavailable("batch-norm saved statistics"), Unavailable("batch-norm saved statistics"))


@row("aten.layer_norm", "aten.native_layer_norm")
def _layer_norm(cx, a):
    x, ns = a["input"], tuple(a["normalized_shape"])
    w = a["weight"] if a["weight"] is not None else _ones(cx, ns, 1.0, "weight")
    b = a["bias"] if a["bias"] is not None else _ones(cx, ns, 0.0, "bias")
    y = cx.emit("layernorm", [x, w, b], name=cx.layer(w), axis=len(cx.shape(x)) - len(ns), eps=float(a["eps"]))
    if str(cx.node.target.overloadpacket) == "aten.layer_norm":
        return y
    return (y, Unavailable("layer-norm mean"), Unavailable("layer-norm rstd"))


def _check_dtype_arg(cx, a):
    if a.get("dtype") is not None and dtype_name(a["dtype"], cx.node.name) != cx.dtype(a["self"]):
        raise cx.error(f"dtype={a['dtype']} conversion is not supported")


@row("aten.softmax", "aten._softmax")
def _softmax(cx, a):
    _check_dtype_arg(cx, a)
    return cx.emit("softmax", [a["self"]], axis=_axis(a["dim"], len(cx.shape(a["self"]))))


@row("aten.log_softmax", "aten._log_softmax")
def _log_softmax(cx, a):
    _check_dtype_arg(cx, a)
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    m = cx.emit("reduce_max", [x], suffix="max", axes=(ax,), keepdims=True)
    d = cx.emit("sub", [x, m], suffix="shifted")
    e = cx.emit("exp", [d], suffix="exp")
    s = cx.emit("reduce_sum", [e], suffix="sum", axes=(ax,), keepdims=True)
    return cx.emit("sub", [d, cx.emit("log", [s], suffix="log")])


@row("aten.scaled_dot_product_attention")
def _sdpa(cx, a):
    q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
    if a["dropout_p"]:
        raise cx.error("attention dropout is not supported (export in eval mode)")
    qs, ks = cx.shape(q), cx.shape(k)
    if len(qs) < 2 or qs[:-2] != ks[:-2]:
        raise cx.error(f"query {list(qs)} and key {list(ks)} batch dims differ (grouped-query attention?)")
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(qs[-1])
    perm = tuple(range(len(ks) - 2)) + (len(ks) - 1, len(ks) - 2)
    s = cx.emit("matmul", [q, cx.emit("transpose", [k], suffix="kT", perm=perm)], suffix="qk")
    s = cx.emit("mul", [s, cx.operand(float(scale), cx.out_dtype)], suffix="scores")
    if a["is_causal"]:
        if mask is not None:
            raise cx.error("is_causal together with attn_mask is not supported")
        mask = Const(torch.triu(torch.full((qs[-2], ks[-2]), -math.inf), 1), f"{cx.node.name}.causal_mask")
    if mask is not None:
        if isinstance(mask, Const) and mask.tensor.dtype == torch.bool:
            mask = Const(torch.zeros(mask.tensor.shape).masked_fill(~mask.tensor, -math.inf), mask.hint)
        if not isinstance(mask, Const) and cx.dtype(mask) == "i1":       # True: attend
            return cx.emit("matmul", [cx.emit("softmax", [s, mask], suffix="probs", axis=len(qs) - 1), v])
        s = cx.emit("add", [s, cx.operand(mask, cx.out_dtype)], suffix="masked")
    p = cx.emit("softmax", [s], suffix="probs", axis=len(qs) - 1)
    return cx.emit("matmul", [p, v])


@row("aten.embedding")
def _embedding(cx, a):
    return cx.emit("gather", [a["weight"], a["indices"]], name=cx.layer(a["weight"]), axis=0)


@row("aten.index")
def _index(cx, a):
    """``x[..., i0, i1, ...]`` with constant integer index tensors -> one gather of linear indices into the
    indexed dims taken as one (torch's placement: the broadcast index dims replace adjacent indexed dims in
    place, else they come first)."""
    idx = list(a["indices"])
    pos = [i for i, t in enumerate(idx) if t is not None]
    if not pos or not all(isinstance(idx[p], Const) and not idx[p].tensor.dtype.is_floating_point
                          and idx[p].tensor.dtype != torch.bool for p in pos):
        raise cx.error("only indexing with constant integer index tensors is supported")
    x, shape = a["self"], cx.shape(a["self"])
    tensors = [idx[p].tensor.to(torch.int64) for p in pos]
    if pos != list(range(pos[0], pos[0] + len(pos))):            # not adjacent: indexed dims first
        rest = [d for d in range(len(shape)) if d not in pos]
        x = cx.emit("transpose", [x], suffix="index_perm", perm=tuple(pos + rest))
        shape, pos = tuple(shape[d] for d in pos + rest), list(range(len(pos)))
    p0, dims = pos[0], [shape[p] for p in pos]
    if len(pos) == 1:
        flat = tensors[0] % dims[0]
    else:
        tensors = torch.broadcast_tensors(*tensors)
        flat = torch.zeros_like(tensors[0])
        for t, d in zip(tensors, dims):
            flat = flat * d + t % d
        x = cx.reshape(x, shape[:p0] + (math.prod(dims),) + shape[p0 + len(pos):], suffix="index_flat")
    return cx.emit("gather", [x, Const(flat.contiguous(), f"{cx.node.name}.index")], axis=p0)


@row("aten.index_select")
def _index_select(cx, a):
    return cx.emit("gather", [a["self"], a["index"]], axis=_axis(a["dim"], len(cx.shape(a["self"]))))
