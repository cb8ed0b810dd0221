# SPDX-License-Identifier: Apache-2.0
"""torch.export rows for pre-quantized models: QAT fake-quant and PT2E quantize/dequantize.

- ``aten.fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine`` (``.tensor_qparams``,
  ``_cachemask`` variants; the mask output is not computed) -> ``fake_quant``;
- ``quantized_decomposed.quantize_per_tensor`` / ``quantize_per_channel`` -> ``quantize_linear``,
  ``dequantize_per_tensor`` / ``dequantize_per_channel`` -> ``dequantize_linear`` (``.default``, ``.tensor``,
  ``.tensor2``), the PT2E ``convert_pt2e`` forms.
Both keep constant operands as nodes (a weight stays ``fake_quant`` / ``dequantize_linear`` of a
constant, not a folded array) so ``fold_fake_quant`` can read its grid. ``[quant_min, quant_max]`` picks the
narrowest integer type holding it (``[-8, 7]`` in an int8 tensor is 4-bit); a narrower range is kept as
the op's ``qmin`` / ``qmax``. Scales are rounded to float32, as torch computes with them.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import IRError
from ..ir.ops.fake_quant import quant_type
from ..ir.types import int_range
from .torch_ops import DTYPES, Const, Unavailable, row


def _scalar(cx, v, what: str):
    if isinstance(v, Const):
        if v.tensor.numel() != 1:
            raise cx.error(f"{what} must hold one value, got shape {list(v.tensor.shape)}")
        return v.tensor.item()
    if isinstance(v, str):
        raise cx.error(f"{what} is computed at run time; it must be a constant")
    return v


def _vector(cx, v, what: str) -> np.ndarray:
    if isinstance(v, Const):
        return v.tensor.detach().double().reshape(-1).numpy()
    if isinstance(v, str):
        raise cx.error(f"{what} is computed at run time; it must be a constant")
    return np.asarray([v], np.float64)


def qattrs(cx, x, scale, zp, qmin, qmax, axis=None) -> dict:
    """Validated attributes of a quantization op on ``x``: narrowest type of ``[qmin, qmax]``."""
    qmin, qmax = int(_scalar(cx, qmin, "quant_min")), int(_scalar(cx, qmax, "quant_max"))
    if qmin >= qmax:
        raise cx.error(f"quant_min {qmin} >= quant_max {qmax}")
    signed = qmin < 0
    bits = next((b for b in range(2, 33) if int_range(b, signed)[0] <= qmin and qmax <= int_range(b, signed)[1]),
                None)
    if bits is None:
        raise cx.error(f"range [{qmin}, {qmax}] does not fit 32 bits")
    s = _vector(cx, scale, "scale").astype(np.float32).astype(np.float64)
    z = np.zeros(1) if zp is None else _vector(cx, zp, "zero_point")
    if np.any(z != np.rint(z)):
        raise cx.error(f"zero point {z[z != np.rint(z)][0]} is not an integer")
    if z.size not in (1, s.size):
        raise cx.error(f"{z.size} zero points for {s.size} scales")
    z = np.broadcast_to(z, s.shape)
    a = {"bits": bits, "signed": signed, "scale": tuple(float(v) for v in s),
         "zero_point": tuple(int(v) for v in z)}
    if (qmin, qmax) != int_range(bits, signed):
        a["qmin"], a["qmax"] = qmin, qmax
    if axis is not None:
        a["axis"] = int(axis) % len(cx.shape(x))
    try:
        quant_type(a, cx.shape(x))
    except IRError as e:
        raise cx.error(str(e)) from None
    return a


@row("aten.fake_quantize_per_tensor_affine", "aten.fake_quantize_per_tensor_affine_cachemask", keeps_const=True)
def _fq_tensor(cx, a):
    y = cx.emit("fake_quant", [a["self"]], **qattrs(cx, a["self"], a["scale"], a["zero_point"],
                                                        a["quant_min"], a["quant_max"]))
    return (y, Unavailable("fake-quant mask")) if "cachemask" in str(cx.node.target) else y


@row("aten._fake_quantize_per_tensor_affine_cachemask_tensor_qparams", keeps_const=True)
def _fq_tensor_enabled(cx, a):
    y = a["self"]
    if _scalar(cx, a["fake_quant_enabled"], "fake_quant_enabled"):
        y = cx.emit("fake_quant", [y], **qattrs(cx, y, a["scale"], a["zero_point"], a["quant_min"], a["quant_max"]))
    return y, Unavailable("fake-quant mask")


@row("aten.fake_quantize_per_channel_affine", "aten.fake_quantize_per_channel_affine_cachemask", keeps_const=True)
def _fq_channel(cx, a):
    y = cx.emit("fake_quant", [a["self"]], **qattrs(cx, a["self"], a["scale"], a["zero_point"], a["quant_min"],
                                                        a["quant_max"], a["axis"]))
    return (y, Unavailable("fake-quant mask")) if "cachemask" in str(cx.node.target) else y


def _dtype_attr(cx, a, q: dict) -> dict:
    dt = a["dtype"]
    if dt not in DTYPES or dt.is_floating_point:
        raise cx.error(f"quantized dtype {dt} is not supported")
    return {**q, "dtype": DTYPES[dt]}


@row("quantized_decomposed.quantize_per_tensor")
def _q_tensor(cx, a):
    q = qattrs(cx, a["input"], a["scale"], a["zero_point"], a["quant_min"], a["quant_max"])
    return cx.emit("quantize_linear", [a["input"]], **_dtype_attr(cx, a, q))


@row("quantized_decomposed.quantize_per_channel")
def _q_channel(cx, a):
    q = qattrs(cx, a["input"], a["scales"], a["zero_points"], a["quant_min"], a["quant_max"], a["axis"])
    return cx.emit("quantize_linear", [a["input"]], **_dtype_attr(cx, a, q))


def _dq(cx, a, q: dict) -> str:
    if a.get("out_dtype") not in (None, torch.float32):
        raise cx.error(f"out_dtype {a['out_dtype']} is not supported (float32 only)")
    return cx.emit("dequantize_linear", [a["input"]], **q)


@row("quantized_decomposed.dequantize_per_tensor", keeps_const=True)
def _dq_tensor(cx, a):
    return _dq(cx, a, qattrs(cx, a["input"], a["scale"], a["zero_point"], a["quant_min"], a["quant_max"]))


@row("quantized_decomposed.dequantize_per_channel", keeps_const=True)
def _dq_channel(cx, a):
    return _dq(cx, a, qattrs(cx, a["input"], a["scales"], a["zero_points"], a["quant_min"], a["quant_max"],
                             a["axis"]))
