# SPDX-License-Identifier: Apache-2.0
"""8-bit weights on AVX2's ``vpmaddubsw`` kernels, exactly, by putting input channels in a good order.

``vpmaddubsw`` adds the two products ``u_c w_c + u_c' w_c'`` of a channel pair (``c = 2m, c' = 2m + 1``
within each tap) in int16 and saturates. With ``u`` in [0, 255] the sum stays in int16 for every input iff

    max(w_c, 0) + max(w_c', 0) <= 128   and   max(-w_c, 0) + max(-w_c', 0) <= 128     (every row)

(``255 * 128 = 32640``). Weights in [-64, 64] always pass; per-channel 8-bit rows, which all reach 127,
pass when each large weight is paired with a small one or one of the other sign. In a projection layer
(many inputs, few outputs: EfficientNet's ``_bn2`` convs) an order of the input channels with every
adjacent pair compatible nearly always exists; in an expansion layer (many rows) almost never.

- ``pairable(w4)``: the check above on ``[O, KH, KW, C]`` weights in their stored order.
- ``pair_order(w4)``: a channel order whose adjacent pairs pass (a matching on the compatibility graph:
  greedy, most constrained channel first, then augmenting paths for the channels it left alone; an odd
  ``C`` leaves its last channel with the zero padding), or None.
- ``permute_channels(g)``: for each ``qconv2d`` (groups 1) fed by ``conv -> requantize ->
  [depthwise -> requantize]*`` whose weights do not pass as stored but would in another order, relabels
  that chain's channels: the producing conv's output rows and bias, each requantize's per-channel
  parameters, each depthwise layer's channels and the reader's weight columns, all permuted together.
  Every value keeps its numbers up to the channel order of the chain's internal tensors (none is a graph
  output or has another reader), so the graph computes the same outputs bit for bit.
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Node

PAIR_LIMIT = 128               # 255 * 128 = 32640 <= 32767


def _excess(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per element: does the pair (a, b) break the bound (same-sign parts summing past ``PAIR_LIMIT``)?"""
    return ((np.maximum(a, 0) + np.maximum(b, 0) > PAIR_LIMIT)
            | (np.maximum(-a, 0) + np.maximum(-b, 0) > PAIR_LIMIT))


def pairable(w4: np.ndarray) -> bool:
    """``[O, KH, KW, C]`` integer weights: every stored pair ``(2m, 2m + 1)`` passes (module docstring)."""
    w = np.asarray(w4, np.int64).reshape(-1, w4.shape[-1])
    if w.shape[1] % 2:
        w = np.concatenate([w, np.zeros((w.shape[0], 1), np.int64)], axis=1)
    return not _excess(w[:, 0::2], w[:, 1::2]).any()


def _compatible(rows: np.ndarray) -> np.ndarray:
    """``ok[i, j]``: channels ``i`` and ``j`` (columns of ``rows``) may be paired."""
    c = rows.shape[1]
    ok = np.ones((c, c), bool)
    for part in (np.maximum(rows, 0), np.maximum(-rows, 0)):
        part = part.astype(np.int16)
        for i0 in range(0, c, 32):                     # [rows, 32, C] at a time
            blk = part[:, i0:i0 + 32, None] + part[:, None, :]
            ok[i0:i0 + 32] &= blk.max(axis=0) <= PAIR_LIMIT
    return ok


def _augment(ok: np.ndarray, mate: np.ndarray, s: int) -> bool:
    """Pair the unpaired channel ``s`` along an alternating path ``s - a1 = b1 - a2 = b2 ... - t`` (``=``:
    a current pair, ``-``: a compatible unpaired edge, ``t``: another unpaired channel), found breadth first;
    flips the path's edges in ``mate``. False when no such path exists (blossoms are not searched, so a
    matching this misses can exist; the result is valid either way)."""
    came = {}                                          # b (reached through its old mate a) -> (a, previous b)
    seen = {s}
    frontier = [s]
    while frontier:
        nxt = []
        for u in frontier:
            for a in np.flatnonzero(ok[u]):
                a = int(a)
                if a in seen:
                    continue
                if mate[a] < 0:                        # t: flip the path back to s
                    x, y = u, a
                    while True:
                        old = came.get(x)
                        mate[x], mate[y] = y, x
                        if x == s:
                            return True
                        y, x = old
                b = int(mate[a])
                if b in seen:
                    continue
                seen.update((a, b))
                came[b] = (a, u)
                nxt.append(b)
        frontier = nxt
    return False


def pair_order(w4: np.ndarray) -> np.ndarray | None:
    """A permutation of the ``C`` input channels of ``[O, KH, KW, C]`` weights whose adjacent pairs pass."""
    rows = np.asarray(w4, np.int64).reshape(-1, w4.shape[-1])
    c = rows.shape[1]
    ok = _compatible(rows)
    np.fill_diagonal(ok, False)
    deg = ok.sum(axis=1)
    mate = np.full(c, -1, np.int64)
    for i in np.argsort(deg, kind="stable"):               # greedy: the most constrained channel first ...
        if mate[i] >= 0:
            continue
        cand = np.flatnonzero(ok[i] & (mate < 0))
        if cand.size:
            j = int(cand[np.argmin(deg[cand])])             # ... with the least flexible partner
            mate[i], mate[j] = j, i
    for s in range(c):                                     # then augmenting paths for the channels left alone
        if mate[s] < 0 and (mate < 0).sum() > c % 2:
            _augment(ok, mate, s)
    single = np.flatnonzero(mate < 0)
    if single.size > c % 2:                                # only an odd C's last slot pairs with padding
        return None
    order = [x for i in range(c) if mate[i] > i for x in (i, int(mate[i]))]
    return np.array(order + single.tolist(), np.int64)


def _per_channel_axis(a: np.ndarray, c: int, rank: int) -> int | None:
    """The axis of a requantize parameter (broadcast against a rank-``rank`` NCHW tensor) that holds the
    ``c`` channels; -1 when it is one value for all; None when neither."""
    if a.size == 1:
        return -1
    shape = (1,) * (rank - a.ndim) + a.shape
    if a.ndim > rank or shape[1] != c or a.size != c:
        return None
    return a.ndim - (rank - 1)


def _chain(g: Graph, reader: Node, prod: dict, cons: dict, outs: set) -> list[Node] | None:
    """The nodes ``producer conv, requantize, [depthwise, requantize]*`` feeding ``reader``, or None."""
    chain: list[Node] = []
    v = reader.inputs[0]
    while True:
        if v in outs or len(cons.get(v, [])) != 1 or v not in prod:
            return None
        n = prod[v]
        chain.append(n)
        if n.op == "requantize":
            v = n.inputs[0]
        elif n.op == "qconv2d" and int(n.attr("groups", 1)) == 1:
            return chain[::-1] if len(chain) >= 2 else None
        elif (n.op == "qconv2d" and g.is_const(n.inputs[1]) and g.const(n.inputs[1]).shape[1] == 1
              and int(n.attr("groups", 1)) == g.const(n.inputs[1]).shape[0]):
            v = n.inputs[0]                                  # depthwise: its input's channels too
        else:
            return None


def _permuted_constants(g: Graph, chain: list[Node], reader: Node, perm: np.ndarray, cons: dict) -> dict | None:
    """Constant name -> permuted array for ``chain`` and ``reader`` (None when a constant is shared or a
    parameter is not per-channel)."""
    c = perm.size
    new: dict[str, np.ndarray] = {}

    def put(name: str, arr: np.ndarray) -> bool:
        if len(cons.get(name, [])) != 1 or name in new:
            return False
        new[name] = np.ascontiguousarray(arr)
        return True
    for n in chain:
        if not all(g.is_const(i) for i in n.inputs[1:]):
            return None
        if n.op == "requantize":
            rank = g.type_of(n.name).rank
            for i in n.inputs[1:]:
                a = g.const(i)
                ax = _per_channel_axis(a, c, rank)
                if ax is None or (ax >= 0 and not put(i, np.take(a, perm, axis=ax))):
                    return None
        else:                                              # conv rows (weights [O, ...] and bias [O])
            for i in n.inputs[1:]:
                if g.const(i).shape[0] != c or not put(i, g.const(i)[perm]):
                    return None
    w = g.const(reader.inputs[1])
    return new if put(reader.inputs[1], w[:, perm]) else None


def permute_channels(g: Graph) -> Graph:
    """``g`` with the channels of the chains that make a reader's 8-bit weights pairable relabelled."""
    prod, cons, outs = g.producers(), g.consumers(), set(g.outputs)
    consts = dict(g.constants)
    changed = False
    for reader in g.nodes:
        if reader.op != "qconv2d" or int(reader.attr("groups", 1)) != 1 or not g.is_const(reader.inputs[1]):
            continue
        w4 = np.asarray(g.const(reader.inputs[1]), np.int64).transpose(0, 2, 3, 1)
        if w4.shape[-1] < 4 or pairable(w4):
            continue
        perm = pair_order(w4)
        chain = _chain(g, reader, prod, cons, outs) if perm is not None else None
        new = _permuted_constants(g, chain, reader, perm, cons) if chain else None
        if new is None or any(k in consts and consts[k] is not g.constants[k] for k in new):
            continue
        consts.update(new)
        changed = True
    return g.replace(constants=consts) if changed else g
