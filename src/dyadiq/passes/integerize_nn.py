# SPDX-License-Identifier: Apache-2.0
"""Integer lowerings of the transformer ops (rows of ``integerize.LOWERINGS``; ops in ``ir/ops/integer_nn.py``).

- ``softmax(x)`` -> ``qsoftmax``: ``mult = round(s_x log2(e) 2^28)`` turns code differences into base-2
  exponents; ``out_mult = round(2^R / s_y)`` with the largest ``R <= 24`` whose products stay below 2^62.
- ``layernorm(x, gamma, beta)`` over the last axis -> ``qlayernorm`` with ``frac = 16`` fraction bits of the
  normalized value, ``pre`` (<= 16) extra bits of the variance while ``D (D span)^2 2^(2 pre) < 2^61``,
  ``eps_q = round(D^2 eps / s_x^2 2^(2 pre))``, ``g = round(gamma / s_y 2^(shift - 16))`` with ``|g| ~ 2^24``
  and ``b = round(beta / s_y 2^shift)``.
- ``div(a, b)`` of two activations -> ``qdiv`` with ``mult / 2^shift ~ s_a / (s_b s_y)``.
- ``gather(table, ids)`` of a constant float table at integer ids (``embedding``) -> ``qembed`` of the table
  quantized with the output's QuantType: exactly what simulated mode computes.
Integer graph inputs (token ids) carry no QuantType: integerize passes them through unchanged.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node
from ..ir.numerics import quantize
from ..ir.ops.integer_nn import EXP_BITS, exp_coeffs
from ..ir.types import DTYPES, QuantType, int_dtype

SOFTMAX_FRAC = 28
LN_FRAC = 16


def _qkw(q: QuantType) -> dict:
    lo, hi = q.qrange
    return {"qmin": lo, "qmax": hi, "dtype": int_dtype(max(q.bits, 8), q.signed), "out_zp": q.zero_point[0]}


def _per_tensor(q: QuantType, n: Node, what: str) -> None:
    if q.per_channel:
        raise PassError(f"{what} needs a per-tensor quantized operand", node=n)


def softmax_attrs(s_x: float, qo: QuantType, length: int, node: Node | None = None) -> dict:
    """``qsoftmax`` attributes for input scale ``s_x``, output QuantType ``qo`` and ``length`` along the axis."""
    mult = int(round(s_x * math.log2(math.e) * 2.0**SOFTMAX_FRAC))
    if not 1 <= mult < 2**40:
        raise PassError(f"softmax input scale {s_x:.3g} is outside the integer exponent range", node=node)
    room = 61 - (EXP_BITS + 1)
    r = min(24, room - math.ceil(math.log2(1.0 / qo.scale[0] + 1)), room - math.ceil(math.log2(length + 1)))
    if r < 0:
        raise PassError(f"softmax output scale {qo.scale[0]:.3g} is too fine for int64 normalization", node=node)
    c = dict(zip(("c0", "c1", "c2", "c3"), exp_coeffs()))
    return dict(mult=mult, frac=SOFTMAX_FRAC, out_mult=int(round(2.0**r / qo.scale[0])), out_shift=r, **c, **_qkw(qo))


def softmax(low, n: Node, chain: list[Node]) -> None:
    """softmax -> qsoftmax (see the module docstring)."""
    x, qx = low.act(n.inputs[0], n)
    qo = low.quant(n.name, n)
    _per_tensor(qx, n, "softmax")
    _per_tensor(qo, n, "softmax")
    t = low.g.type_of(n.inputs[0])
    axis = n.attr("axis", -1) % t.rank
    attrs = softmax_attrs(qx.scale[0], qo, t.shape[axis], n)
    ins = [x]
    if len(n.inputs) == 2:                               # keep mask: an exact integer value (see integerize.exact)
        ins.append(low.exact_operand(n.inputs[1], n))
        attrs["qmin_in"] = qx.qrange[0]
    y = low.b.op("qsoftmax", ins, n.name, quant=qo, axis=axis, **attrs)
    low.bind(n.name, y, qo)


def divide_attrs(ratio: float, qo: QuantType, node: Node | None = None) -> dict:
    """``qdiv`` attributes for the real ratio ``s_a / (s_b s_y)``: ``mult / 2^shift`` with about 30
    significant bits of it (``shift`` in 0..40)."""
    if not 0 < ratio < 2.0**40:
        raise PassError(f"division scale ratio {ratio:.3g} has no int64 fixed point", node=node)
    shift = min(40, max(0, 30 - math.floor(math.log2(ratio))))
    return dict(mult=int(round(ratio * 2.0**shift)), shift=shift, **_qkw(qo))


def check_layernorm(g: Graph, n: Node) -> str | None:
    t = g.type_of(n.inputs[0])
    if n.attr("axis", -1) % t.rank != t.rank - 1:
        return "integer layernorm normalizes over the last axis only"
    for i in n.inputs[1:]:
        if not g.is_const(i):
            return f"layernorm gamma/beta %{i} is computed at run time; integerize needs a constant"
    return None


def layernorm_attrs(qx: QuantType, qo: QuantType, gamma, beta, eps: float, dim: int,
                    node: Node | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(g, b, attrs)`` of ``qlayernorm`` (see the module docstring)."""
    lo, hi = qx.qrange
    sq = dim * (dim * (hi - lo)) ** 2
    pre = max(0, min(16, (61 - sq.bit_length()) // 2))
    gamma = np.asarray(gamma, np.float64).reshape(-1)
    beta = np.asarray(beta, np.float64).reshape(-1)
    so = qo.scale[0]
    gmax = float(np.abs(gamma).max(initial=0.0)) / so
    shift = LN_FRAC + (24 - math.ceil(math.log2(gmax)) if gmax > 0 else 0)
    if not 1 <= shift <= 62:
        raise PassError(f"layernorm gamma / output scale {gmax:.3g} has no int64 fixed point", node=node)
    g = np.rint(gamma / so * 2.0**(shift - LN_FRAC)).astype(np.int64)
    bf = beta / so * 2.0**shift
    if np.abs(bf).max(initial=0.0) >= 2.0**61:
        raise PassError("layernorm beta / output scale exceeds int64", node=node)
    eps_q = int(min(round(dim * dim * float(eps) / qx.scale[0] ** 2 * 4.0**pre), 2**61))
    return g, np.rint(bf).astype(np.int64), dict(pre=pre, frac=LN_FRAC, eps_q=eps_q, shift=shift, **_qkw(qo))


def layernorm(low, n: Node, chain: list[Node]) -> None:
    """layernorm -> qlayernorm (see the module docstring)."""
    x, qx = low.act(n.inputs[0], n)
    qo = low.quant(n.name, n)
    _per_tensor(qx, n, "layernorm")
    _per_tensor(qo, n, "layernorm")
    g, b, attrs = layernorm_attrs(qx, qo, low.g.const(n.inputs[1]), low.g.const(n.inputs[2]),
                                  n.attr("eps", 1e-5), low.g.type_of(n.inputs[0]).shape[-1], n)
    ins = [x, low.b.const(f"{n.name}.g", g), low.b.const(f"{n.name}.b", b)]
    low.bind(n.name, low.b.op("qlayernorm", ins, n.name, quant=qo, **attrs), qo)


def check_embed(g: Graph, n: Node) -> str | None:
    if not g.is_const(n.inputs[0]):
        return "gather of a run-time table has no integer lowering (only constant tables at integer ids)"
    if g.is_const(n.inputs[1]) or g.type_of(n.inputs[1]).is_float:
        return "gather needs run-time integer ids (constant gathers are folded by the frontend)"
    if n.attr("axis", 0) % g.type_of(n.inputs[0]).rank != 0:
        return "integer gather selects rows (axis 0) only"
    return None


def embed(low, n: Node, chain: list[Node]) -> None:
    """gather(table, ids) -> qembed(ids, quantize(table))."""
    qo = low.quant(n.name, n)
    _per_tensor(qo, n, "embedding")
    ids = low.env.get(n.inputs[1], (None, None))[0]
    if ids is None:
        raise PassError(f"ids %{n.inputs[1]} were not lowered", node=n)
    table = quantize(np.asarray(low.g.const(n.inputs[0])), qo).astype(DTYPES[_qkw(qo)["dtype"]])
    y = low.b.op("qembed", [ids, low.b.const(f"{n.name}.table", table)], n.name, quant=qo)
    low.bind(n.name, y, qo)


def with_embed(rewrite, check):
    """The ``gather`` row: constant tables at run-time ids by ``embed``, everything else by ``rewrite``."""
    def is_embed(g: Graph, n: Node) -> bool:
        return g.is_const(n.inputs[0]) and not g.is_const(n.inputs[1])
    return (lambda low, n, c: embed(low, n, c) if is_embed(low.g, n) else rewrite(low, n, c),
            lambda g, n: check_embed(g, n) if is_embed(g, n) else check(g, n))
