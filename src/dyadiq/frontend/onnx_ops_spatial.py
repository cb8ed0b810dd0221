# SPDX-License-Identifier: Apache-2.0
"""Resampling, transposed convolution, pixel shuffles and normalizations of the ONNX converter table (issue 15).

- ``Resize`` (opset 10+) / ``Upsample`` (opset 7-9) -> ``resize`` with the full output ``size`` and per-dim
  ``scales``: from ``scales`` ``out = floor(n * scale)``; from ``sizes`` ``scale = out / n`` (with
  ``keep_aspect_ratio_policy`` not_larger / not_smaller: one scale for the ``axes``, ``out = round(n s)``).
- ``ConvTranspose`` -> ``conv_transpose2d`` (1-D lifted to 2-D); ``output_shape`` / ``auto_pad`` set the pads
  from ``total = s (n - 1) + output_padding + (k - 1) d + 1 - out`` (SAME_UPPER: the smaller half first).
- ``DepthToSpace`` (DCR / CRD) and ``SpaceToDepth`` -> ``reshape -> transpose -> reshape``.
- ``InstanceNormalization`` -> ``layernorm`` over the spatial dims (unit affine) ``* scale[c] + bias[c]``;
  ``GroupNormalization`` the same on ``[N, G, C/G * HW]``; ``LpNormalization`` ``x / ||x||_p``;
  ``MeanVarianceNormalization`` ``(x - E x) / (sqrt(E x^2 - (E x)^2) + 1e-9)``; ``RMSNormalization``
  ``x / sqrt(E x^2 + eps) * scale``; ``LRN`` ``x / (bias + alpha * mean_window(x^2))^beta`` (an avgpool over
  the zero-padded channel axis); ``LpPool`` ``(sum_window |x|^p)^(1/p)`` (a depthwise conv with ones).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.ops.coverage import COORDS, NEAREST_MODES, RESIZE_MODES
from .onnx_ops import _axis, _ints, _lift, _unlift, row

POLICIES = ("stretch", "not_larger", "not_smaller")


def _choice(cx, key: str, default: str, allowed) -> str:
    v = cx.attr(key, default)
    if v not in allowed:
        raise cx.fail(f"attribute {key}={v!r} is not supported ({', '.join(allowed)})")
    return v


# ---- Resize / Upsample ----------------------------------------------------------------------------
def _resize(cx, x: str, scales, sizes, *, mode: str, coord: str, nearest_mode: str, roi=None) -> str:
    shape = cx.shape(x)
    rank = len(shape)
    axes = cx.attr("axes")
    axes = tuple(range(rank)) if axes is None else tuple(_axis(cx, int(a), rank) for a in axes)
    full_scale = [1.0] * rank
    size = list(shape)
    if sizes is not None and sizes.size:
        sizes = _ints(sizes)
        if len(sizes) != len(axes):
            raise cx.fail(f"sizes {list(sizes)} need {len(axes)} entries")
        for a, m in zip(axes, sizes):
            size[a], full_scale[a] = int(m), int(m) / shape[a]
        policy = _choice(cx, "keep_aspect_ratio_policy", "stretch", POLICIES)
        if policy != "stretch":
            s = (min if policy == "not_larger" else max)(full_scale[a] for a in axes)
            for a in axes:
                full_scale[a], size[a] = s, int(s * shape[a] + 0.5)
    elif scales is not None and scales.size:
        scales = [float(v) for v in np.asarray(scales, np.float32).reshape(-1)]
        if len(scales) != len(axes):
            raise cx.fail(f"scales {scales} need {len(axes)} entries")
        if any(s <= 0 for s in scales):
            raise cx.fail(f"scales {scales} must be positive")
        for a, s in zip(axes, scales):
            full_scale[a], size[a] = s, int(shape[a] * s)
    else:
        raise cx.fail("needs scales or sizes")
    full_roi = None
    if coord == "tf_crop_and_resize":
        if roi is None or not roi.size:
            raise cx.fail("coordinate_transformation_mode tf_crop_and_resize needs roi")
        roi = [float(v) for v in roi.reshape(-1)]
        if len(roi) != 2 * len(axes):
            raise cx.fail(f"roi {roi} needs {2 * len(axes)} entries")
        full_roi = [0.0] * rank + [1.0] * rank
        for k, a in enumerate(axes):
            full_roi[a], full_roi[a + rank] = roi[k], roi[k + len(axes)]
    if tuple(size) == shape and all(s == 1.0 for s in full_scale) and full_roi is None:
        return cx.op("identity", [x])
    return cx.op("resize", [x], size=tuple(size), scales=tuple(full_scale), mode=mode, coord=coord,
                 nearest_mode=nearest_mode if mode == "nearest" else None,
                 cubic_a=float(cx.attr("cubic_coeff_a", -0.75)) if mode == "cubic" else None,
                 exclude_outside=bool(cx.attr("exclude_outside", 0)) or None,
                 antialias=bool(cx.attr("antialias", 0)) if mode != "nearest" and cx.attr("antialias", 0) else None,
                 roi=tuple(full_roi) if full_roi else None,
                 extrapolation=float(cx.attr("extrapolation_value", 0.0)) if full_roi else None)


@row("Resize", params=(1, 2, 3))
def _resize_row(cx):
    mode = _choice(cx, "mode", "nearest", RESIZE_MODES)
    coord = _choice(cx, "coordinate_transformation_mode", "half_pixel", COORDS)
    nearest = _choice(cx, "nearest_mode", "round_prefer_floor", NEAREST_MODES)
    if mode == "nearest" and cx.attr("antialias", 0):
        raise cx.fail("attribute antialias=1 is not supported with mode 'nearest'")
    if cx.n_inputs == 2:                                    # opset 10: (X, scales)
        return _resize(cx, cx.inp(0), cx.const_input(1, "scales"), None, mode=mode, coord=coord,
                       nearest_mode=nearest)
    return _resize(cx, cx.inp(0), cx.const_input(2, "scales"), cx.const_input(3, "sizes"), mode=mode,
                   coord=coord, nearest_mode=nearest, roi=cx.const_input(1, "roi"))


@row("Upsample", params=(1,))
def _upsample(cx):
    mode = cx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise cx.fail(f"attribute mode={mode!r} is not supported (nearest, linear, bilinear)")
    scales = cx.attr("scales")
    scales = cx.const_input(1, "scales") if scales is None else np.asarray(scales, np.float32)
    return _resize(cx, cx.inp(0), scales, None, mode="nearest" if mode == "nearest" else "linear",
                   coord="asymmetric", nearest_mode="floor")


# ---- ConvTranspose ----------------------------------------------------------------------------------
@row("ConvTranspose")
def _conv_transpose(cx):
    x, w, bias = cx.inp(0), cx.inp(1), cx.inp(2)
    nd = cx.rank(x) - 2
    if nd not in (1, 2):
        raise cx.fail(f"{nd}-D ConvTranspose is not supported (1-D and 2-D only)")
    kernel = tuple(cx.attr("kernel_shape", cx.shape(w)[2:]))
    s = tuple(cx.attr("strides", (1,) * nd))
    d = tuple(cx.attr("dilations", (1,) * nd))
    op = tuple(cx.attr("output_padding", (0,) * nd))
    auto = cx.attr("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise cx.fail(f"attribute auto_pad={auto!r} is not supported")
    n = cx.shape(x)[2:]
    out_shape = cx.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = tuple(out_shape)[-nd:] if out_shape is not None else tuple(v * st for v, st in zip(n, s))
        total = [st * (v - 1) + o + (k - 1) * dl + 1 - m for v, st, o, k, dl, m in zip(n, s, op, kernel, d, out_shape)]
        first = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        p = tuple(first) + tuple(t - f for t, f in zip(total, first))
    elif auto == "VALID":
        p = (0,) * 2 * nd
    else:
        p = tuple(cx.attr("pads", (0,) * 2 * nd))
    if nd == 1:
        s, d, op, p = (1, s[0]), (1, d[0]), (0, op[0]), (0, p[0], 0, p[1])
    x4, lifted = _lift(cx, x, "x")
    w4 = _lift(cx, w, "w")[0] if lifted else w
    ins = [x4, w4] + ([bias] if bias is not None else [])
    y = cx.op("conv_transpose2d", ins, cx.sub("conv_transpose2d") if lifted else None, stride=tuple(s),
              pad=tuple(p), dilation=tuple(d), output_padding=tuple(op), groups=int(cx.attr("group", 1)))
    return _unlift(cx, y) if lifted else y


# ---- pixel shuffles ---------------------------------------------------------------------------------
def _shuffle(cx, x: str, mid, perm, out) -> str:
    y = cx.op("reshape", [x], cx.sub("split"), shape=tuple(mid))
    y = cx.op("transpose", [y], cx.sub("perm"), perm=perm)
    return cx.op("reshape", [y], shape=tuple(out))


@row("DepthToSpace")
def _depth_to_space(cx):
    x, b = cx.inp(0), int(cx.attr("blocksize"))
    n, c, h, w = cx.shape(x)
    mode = _choice(cx, "mode", "DCR", ("DCR", "CRD"))
    if c % (b * b):
        raise cx.fail(f"channels {c} are not a multiple of blocksize^2 = {b * b}")
    if mode == "DCR":
        return _shuffle(cx, x, (n, b, b, c // b // b, h, w), (0, 3, 4, 1, 5, 2), (n, c // b // b, h * b, w * b))
    return _shuffle(cx, x, (n, c // b // b, b, b, h, w), (0, 1, 4, 2, 5, 3), (n, c // b // b, h * b, w * b))


@row("SpaceToDepth")
def _space_to_depth(cx):
    x, b = cx.inp(0), int(cx.attr("blocksize"))
    n, c, h, w = cx.shape(x)
    if h % b or w % b:
        raise cx.fail(f"spatial size {h}x{w} is not a multiple of blocksize {b}")
    perm = (0, 3, 5, 1, 2, 4) if _choice(cx, "mode", "DCR", ("DCR", "CRD")) == "DCR" else (0, 1, 3, 5, 2, 4)
    return _shuffle(cx, x, (n, c, h // b, b, w // b, b), perm, (n, c * b * b, h // b, w // b))


# ---- normalizations ---------------------------------------------------------------------------------
def _unit_layernorm(cx, x: str, axis: int, eps: float, hint: str) -> str:
    sh = cx.shape(x)[axis:]
    dt = cx.np_dtype(x)
    return cx.op("layernorm", [x, cx.const(np.ones(sh, dt), cx.sub("ones")), cx.const(np.zeros(sh, dt), cx.sub("zeros"))],
                 cx.sub(hint), axis=axis, eps=eps)


def _channel_affine(cx, y: str, scale: str, bias: str, rank: int) -> str:
    def per_channel(r, what):
        if cx.is_const(r):
            return cx.const(cx.array(r).reshape((-1,) + (1,) * (rank - 2)), cx.sub(what))
        return cx.op("reshape", [r], cx.sub(what), shape=(cx.shape(r)[0],) + (1,) * (rank - 2))
    y = cx.op("mul", [y, per_channel(scale, "scale")], cx.sub("scaled"))
    return cx.op("add", [y, per_channel(bias, "bias")])


@row("InstanceNormalization")
def _instance_norm(cx):
    """Normalized over every spatial axis: as ``[N, C, H * W ...]`` (one last axis, which the integer
    layernorm needs), then back to the input's shape."""
    x = cx.inp(0)
    sh = cx.shape(x)
    eps = float(cx.attr("epsilon", 1e-5))
    if len(sh) <= 3:
        y = _unit_layernorm(cx, x, 2, eps, "normalized")
    else:
        y = cx.op("reshape", [x], cx.sub("flat"), shape=(sh[0], sh[1], math.prod(sh[2:])))
        y = _unit_layernorm(cx, y, 2, eps, "normalized")
        y = cx.op("reshape", [y], cx.sub("unflat"), shape=sh)
    return _channel_affine(cx, y, cx.inp(1), cx.inp(2), len(sh))


@row("GroupNormalization")
def _group_norm(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    g, c = int(cx.attr("num_groups")), sh[1]
    if c % g:
        raise cx.fail(f"channels {c} are not a multiple of num_groups {g}")
    y = cx.op("reshape", [x], cx.sub("grouped"), shape=(sh[0], g, math.prod(sh[1:]) // g))
    y = _unit_layernorm(cx, y, 2, float(cx.attr("epsilon", 1e-5)), "normalized")
    y = cx.op("reshape", [y], cx.sub("ungrouped"), shape=sh)
    scale, bias = cx.inp(1), cx.inp(2)
    if cx.shape(scale) == (g,) and g != c:                       # opset 18: one scale per group
        if not (cx.is_const(scale) and cx.is_const(bias)):
            raise cx.fail("per-group scale and bias must be constants")
        scale = cx.const(np.repeat(cx.array(scale), c // g), cx.sub("scale_c"))
        bias = cx.const(np.repeat(cx.array(bias), c // g), cx.sub("bias_c"))
    return _channel_affine(cx, y, scale, bias, len(sh))


@row("LpNormalization")
def _lp_norm(cx):
    x = cx.inp(0)
    ax = _axis(cx, int(cx.attr("axis", -1)), cx.rank(x))
    p = int(cx.attr("p", 2))
    if p not in (1, 2):
        raise cx.fail(f"attribute p={p} is not supported (1, 2)")
    if p == 1:
        norm = cx.op("reduce_sum", [cx.op("abs", [x], cx.sub("abs"))], cx.sub("norm"), axes=(ax,), keepdims=True)
    else:
        s = cx.op("reduce_sum", [cx.op("mul", [x, x], cx.sub("sq"))], cx.sub("sumsq"), axes=(ax,), keepdims=True)
        norm = cx.op("sqrt", [s], cx.sub("norm"))
    dt = cx.np_dtype(x)                                         # a zero norm divides by 1 (ONNX gives 0)
    zero = cx.op("equal", [norm, cx.const(np.zeros((), dt), cx.sub("zero"))], cx.sub("is_zero"))
    norm = cx.op("where", [zero, cx.const(np.ones((), dt), cx.sub("one")), norm], cx.sub("safe_norm"))
    return cx.op("div", [x, norm])


@row("MeanVarianceNormalization")
def _mvn(cx):
    x = cx.inp(0)
    axes = tuple(sorted({_axis(cx, int(a), cx.rank(x)) for a in cx.attr("axes", (0, 2, 3))}))
    dt = cx.np_dtype(x)
    mu = cx.op("mean", [x], cx.sub("mean"), axes=axes, keepdims=True)
    ex2 = cx.op("mean", [cx.op("mul", [x, x], cx.sub("sq"))], cx.sub("mean_sq"), axes=axes, keepdims=True)
    var = cx.op("sub", [ex2, cx.op("mul", [mu, mu], cx.sub("mu_sq"))], cx.sub("var"))
    std = cx.op("add", [cx.op("sqrt", [var], cx.sub("std")), cx.const(np.asarray(1e-9, dt), cx.sub("eps"))],
                cx.sub("std_eps"))
    return cx.op("div", [cx.op("sub", [x, mu], cx.sub("centered")), std])


@row("RMSNormalization")
def _rms_norm(cx):
    x, scale = cx.inp(0), cx.inp(1)
    ax = _axis(cx, int(cx.attr("axis", -1)), cx.rank(x))
    dt = cx.np_dtype(x)
    ms = cx.op("mean", [cx.op("mul", [x, x], cx.sub("sq"))], cx.sub("mean_sq"), axes=tuple(range(ax, cx.rank(x))),
               keepdims=True)
    eps = cx.const(np.asarray(float(cx.attr("epsilon", 1e-5)), dt), cx.sub("eps"))
    inv = cx.op("reciprocal", [cx.op("sqrt", [cx.op("add", [ms, eps], cx.sub("ms_eps"))], cx.sub("rms"))],
                cx.sub("inv_rms"))
    return cx.op("mul", [cx.op("mul", [x, inv], cx.sub("normalized")), scale])


@row("LRN")
def _lrn(cx):
    x = cx.inp(0)
    if cx.rank(x) != 4:
        raise cx.fail(f"LRN needs a 4-D input, got {list(cx.shape(x))}")
    n, c, h, w = cx.shape(x)
    size = int(cx.attr("size"))
    alpha, beta, bias = (float(cx.attr(k, v)) for k, v in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    dt = cx.np_dtype(x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = cx.op("reshape", [cx.op("mul", [x, x], cx.sub("sq"))], cx.sub("sq_col"), shape=(n, 1, c, h * w))
    sq = cx.op("pad", [sq], cx.sub("sq_pad"), pads=(0, 0, lo, 0, 0, 0, hi, 0), mode="constant", value=0.0)
    mean = cx.op("avgpool", [sq], cx.sub("window"), kernel=(size, 1), stride=(1, 1), pad=(0, 0, 0, 0))
    mean = cx.op("reshape", [mean], cx.sub("window_nchw"), shape=(n, c, h, w))
    base = cx.op("add", [cx.op("mul", [mean, cx.const(np.asarray(alpha, dt), cx.sub("alpha"))], cx.sub("scaled")),
                         cx.const(np.asarray(bias, dt), cx.sub("bias"))], cx.sub("base"))
    return cx.op("div", [x, cx.op("pow", [base, cx.const(np.asarray(beta, dt), cx.sub("beta"))], cx.sub("denom"))])


@row("LpPool")
def _lp_pool(cx):
    """``(sum over the window of |x|^p)^(1/p)``: the window sum is a depthwise conv with a ones kernel."""
    from .onnx_ops import _window

    x = cx.inp(0)
    if cx.attr("ceil_mode", 0):
        raise cx.fail("attribute ceil_mode=1 is not supported")
    kernel = tuple(cx.attr("kernel_shape"))
    s, pads, d = _window(cx, cx.shape(x)[2:], kernel)
    x4, lifted = _lift(cx, x, "x")
    k = (1, kernel[0]) if lifted else kernel
    p = float(cx.attr("p", 2))
    dt = cx.np_dtype(x)
    c = cx.shape(x4)[1]
    y = cx.op("abs", [x4], cx.sub("abs"))
    if p != 1:
        y = cx.op("pow", [y, cx.const(np.asarray(p, dt), cx.sub("p"))], cx.sub("pow"))
    y = cx.op("conv2d", [y, cx.const(np.ones((c, 1) + k, dt), cx.sub("ones"))], cx.sub("window_sum"),
              stride=s, pad=pads, dilation=d, groups=c)
    if p != 1:
        y = cx.op("pow", [y, cx.const(np.asarray(1 / p, dt), cx.sub("inv_p"))], cx.sub("root") if lifted else None)
    return _unlift(cx, y) if lifted else y
