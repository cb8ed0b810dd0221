# SPDX-License-Identifier: Apache-2.0
"""SmoothQuant (Xiao et al. 2023) for LayerNorm -> linear: move per-channel activation range into weights.

For each ``layernorm`` read by ``linear`` nodes (constant weights ``W_j [out, D]``, each read once), with
``a_c = max |y_c|`` over the calibration samples and ``w_c = max_j max_o |W_j[o, c]|``:

    s_c = clip(a_c^alpha / w_c^(1 - alpha), 1e-5, 1e5),   gamma' = gamma / s,  beta' = beta / s,  W_j' = W_j * s

``linear(y / s, W * s) = linear(y, W)`` exactly in real arithmetic, so the float graph computes the same
function while every LayerNorm output channel spans ``a_c / s_c`` (balanced with the weights): per-tensor
8-bit activations lose less to the outlier channels of a BERT. When the LayerNorm has other readers too
(post-norm BERT: the residual add), the linears read a clone ``<ln>.smooth`` with ``gamma'``, ``beta'``
and the other readers keep the original (which can then have its own, e.g. 16-bit, QuantType).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, Value


def smooth_quant(g: Graph, samples: list[dict[str, np.ndarray]], alpha: float = 0.5) -> Graph:
    """Scale LayerNorm output channels into the following linears' weights (``g`` when none applies)."""
    from ..interp.run import run_all
    consumers = g.consumers()
    uses: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    targets = []
    for n in g.nodes:
        if n.op != "layernorm" or not all(g.is_const(i) for i in n.inputs[1:]):
            continue
        lins = [c for c in consumers.get(n.name, []) if c.op == "linear" and c.inputs[0] == n.name
                and g.is_const(c.inputs[1]) and uses[c.inputs[1]] == 1]
        if lins:
            targets.append((n, lins))
    if not targets:
        return g
    amax = {n.name: 0.0 for n, _ in targets}
    for x in samples:
        env = run_all(g, x, "float")
        for n, _ in targets:
            v = np.abs(np.asarray(env[n.name], np.float64))
            amax[n.name] = np.maximum(amax[n.name], v.reshape(-1, v.shape[-1]).max(axis=0))
    consts, values = dict(g.constants), dict(g.values)
    clones: dict[str, Node] = {}
    rename: dict[str, str] = {}                       # linear name -> the LayerNorm output it reads now
    for n, lins in targets:
        w = np.max([np.abs(np.asarray(g.const(c.inputs[1]), np.float64)).max(axis=0) for c in lins], axis=0)
        s = np.clip(np.maximum(amax[n.name], 1e-8) ** alpha / np.maximum(w, 1e-8) ** (1 - alpha), 1e-5, 1e5)
        for c in lins:
            wn = c.inputs[1]
            consts[wn] = (np.asarray(g.const(wn), np.float64) * s[None, :]).astype(g.const(wn).dtype)
        shared = len(lins) < len(consumers[n.name]) or n.name in g.outputs
        params = []
        for i in n.inputs[1:]:
            name = f"{i}.smooth" if shared else i
            consts[name] = (np.asarray(g.const(i), np.float64) / s).astype(g.const(i).dtype)
            values[name] = Value(name, g.type_of(i), None)
            params.append(name)
        if shared:
            out = f"{n.name}.smooth"
            clones[n.name] = Node.make("layernorm", [n.inputs[0], *params], out, **n.attr_dict)
            values[out] = Value(out, g.type_of(n.name), None)
            rename.update({c.name: out for c in lins})
    nodes = []
    for n in g.nodes:
        if n.name in rename:
            n = Node.make(n.op, [rename[n.name], *n.inputs[1:]], n.outputs, **n.attr_dict)
        nodes.append(n)
        if n.name in clones:
            nodes.append(clones[n.name])
    return g.replace(constants=consts, values=values, nodes=tuple(nodes))
