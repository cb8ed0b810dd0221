# SPDX-License-Identifier: Apache-2.0
"""Weight quantization: input 1 of every ``conv2d`` / ``linear`` gets a QuantType and is put on its grid.

Symmetric (the contract's default), per output channel (axis 0) or per tensor, ``b`` in 2..8 bits:

    scale_c = max|w_c| / (2^(b-1) - 1),    zp = 0,    w_c <- scale_c * round_half_even(w_c / scale_c)

Asymmetric (``symmetric=False``): ``scale_c = (max(w_c, 0) - min(w_c, 0)) / (2^b - 1)``,
``zp_c = qmin - round(min(w_c, 0) / scale_c)``. Scales are rounded to float32. A channel whose
scale is below ``2^-16`` of the layer's largest (e.g. all zero, or a BatchNorm-folded dead channel)
gets that floor instead: a vanishing scale would overflow the int32 bias ``b / (s_in s_w)`` and the
requantize shift; its codes just get small. The float array is replaced by its on-grid value
(``dequantize(quantize(w)) == w``), so simulated and integer mode see the same weights; weights that
already carry a QuantType (imported) keep it and are put on its grid too. Biases carry no QuantType but
are put on the grid integerize rounds them to, ``s_x s_w`` (when the layer input has its QuantType).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import PassError
from ..ir.graph import Graph, Node, Value
from ..ir.numerics import fake_quant
from ..ir.ops.registry import ops_with
from ..ir.types import QuantType, int_range

WEIGHTED = ops_with(weight=True, integer=False)      # conv2d, linear
SCALE_FLOOR = 2.0 ** -16          # a channel scale below this fraction of the layer's largest: a dead channel


def weighted_layers(g: Graph) -> list[Node]:
    """The ``conv2d`` / ``linear`` nodes, in graph order."""
    return [n for n in g.nodes if n.op in WEIGHTED]


def check_weight_bits(bits: int, where: str = "") -> int:
    """``bits`` if it is an int in 2..8, else PassError."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise PassError(f"weight bits must be 2..8, got {bits!r}{where}")
    return int(bits)


def weight_quant(w: np.ndarray, bits: int, *, per_channel: bool = True, symmetric: bool = True) -> QuantType:
    """The weight QuantType of ``w`` (per channel along axis 0 when ``per_channel``)."""
    bits = check_weight_bits(bits)
    flat = np.asarray(w, np.float64).reshape(w.shape[0] if per_channel else 1, -1)
    qmin, qmax = int_range(bits, True)
    if symmetric:
        scale = np.abs(flat).max(axis=1) / qmax
    else:
        lo, hi = np.minimum(flat.min(axis=1), 0.0), np.maximum(flat.max(axis=1), 0.0)
        scale = (hi - lo) / (qmax - qmin)
    top = scale.max()
    # dead channels (e.g. BatchNorm-folded, weights ~1e-6 of the layer's) take the layer's largest scale:
    # their weights round to 0 and their integer bias b / (s_x s_w) stays as small as the other channels'
    scale = np.where(scale < top * SCALE_FLOOR, top, scale) if top > 0 else np.full_like(scale, 1.0 / qmax)
    scale = scale.astype(np.float32).astype(np.float64)
    zp = np.zeros(scale.shape, np.int64) if symmetric else np.clip(qmin - np.rint(lo / scale), qmin, qmax)
    return QuantType.make(bits, True, scale, zp, 0 if per_channel else None)


def quantize_weights(g: Graph, *, bits: int | Mapping[str, int] = 8, per_channel: bool = True,
                     symmetric: bool = True, snap: bool = True) -> Graph:
    """Quantize every conv2d/linear weight (``bits``: one width, or layer name -> width, default 8).

    ``snap=False`` only sets the QuantTypes and leaves the float weights off-grid, for a pass that still
    needs them (``bias_correct`` rounds them itself); ``snap_weights`` finishes the job.
    """
    layers = weighted_layers(g)
    if isinstance(bits, Mapping):
        names = {n.name for n in layers}
        unknown = sorted(set(bits) - names)
        if unknown:
            raise PassError(f"weight bits given for unknown layer(s) {unknown} "
                            f"(conv2d/linear layers: {', '.join(n.name for n in layers)})")
        per_layer = {n.name: check_weight_bits(bits.get(n.name, 8), f" for layer %{n.name}") for n in layers}
    else:
        b = check_weight_bits(bits)
        per_layer = {n.name: b for n in layers}
    chosen: dict[str, tuple[int, Node]] = {}
    for n in layers:
        w = n.inputs[1]
        if not g.is_const(w):
            raise PassError(f"weight %{w} is not a constant", node=n)
        if w in chosen and chosen[w][0] != per_layer[n.name]:
            raise PassError(f"weight %{w} is shared with %{chosen[w][1].name} at "
                            f"{chosen[w][0]} bits but asked for {per_layer[n.name]} here", node=n)
        chosen[w] = (per_layer[n.name], n)
    values = dict(g.values)
    for w, (b, n) in chosen.items():
        if g.quant_of(w) is not None:          # already quantized (imported): keep
            continue
        arr = g.const(w)
        if arr.dtype.kind != "f":
            raise PassError(f"weight %{w} is {arr.dtype}, not float", node=n)
        values[w] = Value(w, values[w].type,
                          weight_quant(arr, b, per_channel=per_channel and arr.ndim > 1, symmetric=symmetric))
    out = g if values == dict(g.values) else g.replace(values=values)
    return snap_weights(out) if snap else out


def snap_weights(g: Graph) -> Graph:
    """Put quantized weights on their grid and conv/linear biases on their int32 grid; ``g`` if all are.

    A bias ``b`` of a layer whose input ``x`` and weight carry QuantTypes becomes
    ``s_x s_w * round(b / (s_x s_w))``: what integerize computes, so simulated and integer mode (and
    onnxruntime, which quantizes QDQ biases the same way) agree.
    """
    snapped = {}
    for k, arr in g.constants.items():
        q = g.quant_of(k)
        if q is not None and arr.dtype.kind == "f":
            w = fake_quant(arr, q)
            if not np.array_equal(w, arr):
                snapped[k] = w
    readers = g.consumers()
    for n in weighted_layers(g):
        if len(n.inputs) < 3:
            continue
        x, w, b = n.inputs
        qx, qw = g.quant_of(x), g.quant_of(w)
        if (qx is None or qx.per_channel or qw is None or not g.is_const(b) or g.quant_of(b) is not None
                or len(readers.get(b, [])) != 1 or g.const(b).dtype.kind != "f"):
            continue
        step = qx.scale[0] * np.broadcast_to(np.asarray(qw.scale, np.float64), g.const(b).shape)
        k = np.rint(g.const(b).astype(np.float64) / step)
        if np.all(np.abs(k) < 2 ** 31):
            on_grid = (k * step).astype(g.const(b).dtype)
            if not np.array_equal(on_grid, g.const(b)):
                snapped[b] = on_grid
    return g.replace(constants={**g.constants, **snapped}) if snapped else g
