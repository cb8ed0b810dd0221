# SPDX-License-Identifier: Apache-2.0
"""The ONNX converter table: ``CONVERTERS[op_type](cx) -> ref | [refs]`` (one per ONNX output).

Adding an op (e.g. QuantizeLinear for QDQ models) is adding one ``@row("OpType")`` function. A converter
emits dyadiq ops with ``cx.op`` (folded when all inputs are constants) and returns a ref per output it
supports; an unsupported output that the model reads is an error. Notable mappings:

- ``Conv`` -> ``conv2d`` (1-D lifted to 2-D); pads ``[t, l, b, r]`` from ``pads`` or ``auto_pad``:
  SAME pads ``total = max(0, (ceil(n/s) - 1) s + (k - 1) d + 1 - n)``, the odd pixel at the end
  (SAME_UPPER) or the start (SAME_LOWER).
- ``Gemm`` with a constant ``B`` -> ``linear(x, alpha * op(B)^T, beta * C)``; ``MatMul(x, const W)`` ->
  ``linear(x, W^T)``; otherwise ``matmul`` (+ ``mul`` / ``add``).
- ``Flatten`` / ``Reshape`` / ``Squeeze`` / ``Unsqueeze`` -> ``reshape`` with a fully resolved shape;
  ``Split`` -> one ``slice`` per output; ``Max`` / ``Min`` / ``Sum`` / ``Mean`` (variadic) -> chains.
- Shape, Size, ConstantOfShape, Range, Cast, Expand of constants are evaluated with numpy.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .onnx import NodeContext

Converter = Callable[[NodeContext], "str | list[str | None]"]
CONVERTERS: dict[str, Converter] = {}
PARAMS: dict[str, tuple[int, ...]] = {}     # op type -> inputs that must be constants (shapes, axes, pads...)


def row(*op_types: str, params: tuple[int, ...] = ()):
    """Register a converter for ONNX op types whose inputs ``params`` must be known at import time."""
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS[t] = fn
            PARAMS[t] = params
        return fn
    return deco


def _ints(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(a).reshape(-1))


def _axis(cx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise cx.fail(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


# ---- elementwise --------------------------------------------------------------------------------
UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Neg": "neg", "Abs": "abs",
         "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "HardSwish": "hardswish"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow"}


@row(*UNARY)
def _unary(cx):
    return cx.op(UNARY[cx.node.op_type], [cx.inp(0)])


@row("Identity")
def _identity(cx):
    return cx.inp(0)


@row(*BINARY)
def _binary(cx):
    a, b = cx.inp(0), cx.inp(1)
    if cx.np_dtype(a) != cx.np_dtype(b) and cx.is_const(b):   # Pow(float x, int y): y in x's dtype
        y = cx.array(b).astype(cx.np_dtype(a))
        if not np.array_equal(y, cx.array(b)):
            raise cx.fail(f"exponent of dtype {cx.np_dtype(b)} is not exact in {cx.np_dtype(a)}")
        b = cx.const(y, cx.sub("exponent"))
    return cx.op(BINARY[cx.node.op_type], [a, b])


@row("Max", "Min", "Sum", "Mean")
def _variadic(cx):
    kind = cx.node.op_type
    op = {"Max": "maximum", "Min": "minimum"}.get(kind, "add")
    refs = cx.inputs()
    acc = refs[0]
    for k, r in enumerate(refs[1:], 1):
        last = k == len(refs) - 1 and kind != "Mean"
        acc = cx.op(op, [acc, r], None if last else cx.sub(f"{op}{k}"))
    if kind == "Mean":
        n = cx.const(np.asarray(len(refs), cx.np_dtype(acc)), cx.sub("count"))
        return cx.op("div", [acc, n])
    return acc


@row("Clip", params=(1, 2))
def _clip(cx):
    x = cx.inp(0)
    lo, hi = cx.const_input(1, "min"), cx.const_input(2, "max")
    lo, hi = cx.attr("min", lo), cx.attr("max", hi)          # opset < 11 style attributes, if present
    dt = cx.np_dtype(x)
    if dt.kind in "iu":                                         # the kernel's +-inf defaults are float
        info = np.iinfo(dt)
        lo, hi = (info.min if lo is None else lo), (info.max if hi is None else hi)
    val = lambda v: None if v is None else np.asarray(v).item()  # noqa: E731
    return cx.op("clip", [x], min=val(lo), max=val(hi))


@row("LeakyRelu")
def _leaky_relu(cx):
    return cx.op("leaky_relu", [cx.inp(0)], alpha=float(cx.attr("alpha", 0.01)))


@row("HardSigmoid")
def _hardsigmoid(cx):
    return cx.op("hardsigmoid", [cx.inp(0)], alpha=float(cx.attr("alpha", 0.2)), beta=float(cx.attr("beta", 0.5)))


@row("Gelu")
def _gelu(cx):
    return cx.op("gelu", [cx.inp(0)], approximate=cx.attr("approximate", "none"))


@row("Dropout", params=(1, 2))
def _dropout(cx):
    x = cx.inp(0)
    training, ratio = cx.const_input(2, "training_mode"), cx.const_input(1, "ratio")
    if training is not None and bool(training) and (ratio is None or float(ratio) != 0):
        raise cx.fail("training-mode Dropout is not supported (inference only)")
    mask = cx.const(np.ones(cx.shape(x), np.bool_), cx.out(1)) if cx.used(1) else None
    return [x, mask]                       # inference: identity, nothing dropped


# ---- convolution, pooling, normalization ------------------------------------------------------------
def _window(cx, spatial: tuple[int, ...], kernel: tuple[int, ...]):
    """(stride, pad (t, l, b, r), dilation) of a 2-D window from ONNX attributes and auto_pad."""
    nd = len(spatial)
    s = tuple(cx.attr("strides", (1,) * nd))
    d = tuple(cx.attr("dilations", (1,) * nd))
    auto = cx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = tuple(cx.attr("pads", (0,) * 2 * nd))
    elif auto == "VALID":
        p = (0,) * 2 * nd
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        lo, hi = [], []
        for n, k, st, dl in zip(spatial, kernel, s, d):
            total = max(0, (-(-n // st) - 1) * st + (k - 1) * dl + 1 - n)
            small = total // 2
            lo.append(small if auto == "SAME_UPPER" else total - small)
            hi.append(total - lo[-1])
        p = tuple(lo + hi)
    else:
        raise cx.fail(f"auto_pad {auto!r} is not supported")
    if nd == 1:                                   # lift 1-D to 2-D with a height of 1
        return (1, s[0]), (0, p[0], 0, p[1]), (1, d[0])
    return s, p, d


def _lift(cx, x: str, what: str) -> tuple[str, bool]:
    """Reshape an [N, C, L] operand to [N, C, 1, L]; 3-D windows are out of scope."""
    r = cx.rank(x)
    if r == 3:
        sh = cx.shape(x)
        return cx.op("reshape", [x], cx.sub(f"{what}2d"), shape=sh[:2] + (1,) + sh[2:]), True
    if r != 4:
        raise cx.fail(f"{r - 2}-D {cx.node.op_type} is not supported (1-D and 2-D only)")
    return x, False


def _unlift(cx, y: str) -> str:
    sh = cx.shape(y)
    return cx.op("reshape", [y], shape=sh[:2] + sh[3:])


@row("Conv")
def _conv(cx):
    x, w, bias = cx.inp(0), cx.inp(1), cx.inp(2)
    kernel = tuple(cx.attr("kernel_shape", cx.shape(w)[2:]))
    s, p, d = _window(cx, cx.shape(x)[2:], kernel)
    x4, lifted = _lift(cx, x, "x")
    w4 = _lift(cx, w, "w")[0] if lifted else w
    ins = [x4, w4] + ([bias] if bias is not None else [])
    y = cx.op("conv2d", ins, cx.sub("conv2d") if lifted else None,
              stride=s, pad=p, dilation=d, groups=int(cx.attr("group", 1)))
    return _unlift(cx, y) if lifted else y


def _pool(cx, op: str, **extra):
    x = cx.inp(0)
    if cx.attr("kernel_shape") is None:
        raise cx.fail("kernel_shape is required")
    kernel = tuple(cx.attr("kernel_shape"))
    s, p, d = _window(cx, cx.shape(x)[2:], kernel)
    x4, lifted = _lift(cx, x, "x")
    k = (1, kernel[0]) if lifted else kernel
    y = cx.op(op, [x4], cx.sub(op) if lifted else None, kernel=k, stride=s, pad=p, dilation=d,
              ceil_mode=bool(cx.attr("ceil_mode", 0)), **extra)
    return _unlift(cx, y) if lifted else y


@row("MaxPool")
def _maxpool(cx):
    return [_pool(cx, "maxpool")]            # the Indices output is unsupported


@row("AveragePool")
def _avgpool(cx):
    return _pool(cx, "avgpool", count_include_pad=bool(cx.attr("count_include_pad", 0)))


@row("GlobalAveragePool")
def _global_avgpool(cx):
    return cx.op("global_avgpool", [cx.inp(0)])


@row("GlobalMaxPool")
def _global_maxpool(cx):
    x = cx.inp(0)
    return cx.op("reduce_max", [x], axes=tuple(range(2, cx.rank(x))), keepdims=True)


@row("BatchNormalization")
def _batchnorm(cx):
    if cx.attr("training_mode", 0):
        raise cx.fail("training-mode BatchNormalization is not supported (inference only)")
    return [cx.op("batchnorm", [cx.inp(i) for i in range(5)], eps=float(cx.attr("epsilon", 1e-5)))]


@row("LayerNormalization")
def _layernorm(cx):
    x = cx.inp(0)
    axis = _axis(cx, int(cx.attr("axis", -1)), cx.rank(x))
    norm_shape = cx.shape(x)[axis:]
    params = []
    for i, what, fill in ((1, "scale", 1), (2, "bias", 0)):
        r = cx.inp(i)
        if r is None:
            r = cx.const(np.full(norm_shape, fill, cx.np_dtype(x)), cx.sub(what))
        elif cx.shape(r) != norm_shape:
            if not cx.is_const(r):
                raise cx.fail(f"{what} of shape {list(cx.shape(r))} must be {list(norm_shape)} or a constant")
            r = cx.const(np.broadcast_to(cx.array(r), norm_shape).copy(), cx.sub(what))
        params.append(r)
    eps = float(cx.attr("epsilon", 1e-5))
    y = cx.op("layernorm", [x] + params, axis=axis, eps=eps)
    if not (cx.used(1) or cx.used(2)):
        return [y]
    axes = tuple(range(axis, cx.rank(x)))                     # Mean, InvStdDev = 1 / sqrt(var + eps)
    mu = cx.op("mean", [x], cx.out(1) if cx.used(1) else cx.sub("mean"), axes=axes, keepdims=True)
    if not cx.used(2):
        return [y, mu]
    d = cx.op("sub", [x, mu], cx.sub("centered"))
    var = cx.op("mean", [cx.op("mul", [d, d], cx.sub("sq"))], cx.sub("var"), axes=axes, keepdims=True)
    std = cx.op("sqrt", [cx.op("add", [var, cx.const(np.asarray(eps, cx.np_dtype(x)), cx.sub("eps"))],
                               cx.sub("var_eps"))], cx.sub("std"))
    return [y, mu, cx.op("reciprocal", [std], cx.out(2))]


@row("Softmax")
def _softmax(cx):
    x = cx.inp(0)
    return cx.op("softmax", [x], axis=_axis(cx, int(cx.attr("axis", -1)), cx.rank(x)))


REDUCE = {"ReduceMean": "mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min"}


@row(*REDUCE, params=(1,))
def _reduce(cx):
    x = cx.inp(0)
    axes = cx.attr("axes")
    if axes is None:
        axes = cx.const_input(1, "axes")
    axes = () if axes is None else _ints(axes)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return x
        axes = tuple(range(cx.rank(x)))
    axes = tuple(sorted({_axis(cx, a, cx.rank(x)) for a in axes}))
    return cx.op(REDUCE[cx.node.op_type], [x], axes=axes, keepdims=bool(cx.attr("keepdims", 1)))


# ---- linear algebra -------------------------------------------------------------------------------
@row("Gemm")
def _gemm(cx):
    a, b, c = cx.inp(0), cx.inp(1), cx.inp(2)
    alpha, beta = float(cx.attr("alpha", 1.0)), float(cx.attr("beta", 1.0))
    if cx.attr("transA", 0):
        a = cx.op("transpose", [a], cx.sub("a_t"), perm=(1, 0))
    dt = cx.np_dtype(a)
    final = lambda hint: None if c is None else cx.sub(hint)  # noqa: E731  (the product is the result?)
    if cx.is_const(b) and not cx.is_const(a):                 # linear(x, W [out, in], bias)
        w = b
        if not cx.attr("transB", 0) or alpha != 1:
            wa = cx.array(b) if cx.attr("transB", 0) else cx.array(b).T
            w = cx.const(np.ascontiguousarray(wa * dt.type(alpha) if alpha != 1 else wa), cx.hint(b))
        n = cx.shape(w)[0]
        if c is None or (cx.is_const(c) and cx.shape(c) in ((), (1,), (n,), (1, n))):
            ins = [a, w]
            if c is not None and (cx.shape(c) != (n,) or beta != 1):
                bias = np.broadcast_to(cx.array(c), (1, n)).reshape(n).astype(dt)
                c = cx.const(bias * dt.type(beta) if beta != 1 else bias.copy(), cx.hint(c))
            return cx.op("linear", ins + ([c] if c is not None else []))
        y = cx.op("linear", [a, w], cx.sub("linear"))
    else:
        if cx.attr("transB", 0):
            b = cx.op("transpose", [b], cx.sub("b_t"), perm=(1, 0))
        if alpha == 1:
            y = cx.op("matmul", [a, b], final("matmul"))
        else:
            y = cx.op("matmul", [a, b], cx.sub("matmul"))
            y = cx.op("mul", [y, cx.const(np.asarray(alpha, dt), cx.sub("alpha"))], final("scaled"))
        if c is None:
            return y
    if beta != 1:
        c = cx.op("mul", [c, cx.const(np.asarray(beta, dt), cx.sub("beta"))], cx.sub("c_scaled"))
    return cx.op("add", [y, c])


@row("MatMul")
def _matmul(cx):
    a, b = cx.inp(0), cx.inp(1)
    if cx.is_const(b) and not cx.is_const(a) and cx.rank(b) == 2:
        return cx.op("linear", [a, cx.const(np.ascontiguousarray(cx.array(b).T), cx.hint(b))])
    ra, rb = cx.rank(a), cx.rank(b)
    if ra >= 2 and rb >= 2:
        return cx.op("matmul", [a, b])
    a2 = cx.op("reshape", [a], cx.sub("a2d"), shape=(1,) + cx.shape(a)) if ra == 1 else a
    b2 = cx.op("reshape", [b], cx.sub("b2d"), shape=cx.shape(b) + (1,)) if rb == 1 else b
    y = cx.op("matmul", [a2, b2], cx.sub("matmul"))
    sh = list(cx.shape(y))
    if rb == 1:
        del sh[-1]
    if ra == 1:
        del sh[-2 if rb != 1 else -1]
    return cx.op("reshape", [y], shape=tuple(sh))


# ---- data movement ----------------------------------------------------------------------------------
def _reshape_to(cx, x: str, shape) -> str:
    shape = tuple(int(d) for d in shape)
    return x if shape == cx.shape(x) else cx.op("reshape", [x], shape=shape)


@row("Reshape", params=(1,))
def _reshape(cx):
    x, spec = cx.inp(0), _ints(cx.const_input(1, "shape"))
    src, allowzero = cx.shape(x), cx.attr("allowzero", 0)
    shape = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(spec)]
    if shape.count(-1) > 1:
        raise cx.fail(f"shape {list(spec)} has more than one -1")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        total = math.prod(src)
        if known == 0 or total % known:
            raise cx.fail(f"cannot reshape {list(src)} to {list(spec)}")
        shape[shape.index(-1)] = total // known
    return _reshape_to(cx, x, shape)


@row("Flatten")
def _flatten(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    axis = int(cx.attr("axis", 1))
    axis = axis + len(sh) if axis < 0 else axis
    return _reshape_to(cx, x, (math.prod(sh[:axis]), math.prod(sh[axis:])))


@row("Squeeze", params=(1,))
def _squeeze(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    axes = cx.attr("axes")
    if axes is None:
        axes = cx.const_input(1, "axes")
    if axes is None:
        drop = {i for i, d in enumerate(sh) if d == 1}
    else:
        drop = {_axis(cx, a, len(sh)) for a in _ints(axes)}
        if any(sh[a] != 1 for a in drop):
            raise cx.fail(f"cannot squeeze axes {sorted(drop)} of shape {list(sh)}")
    return _reshape_to(cx, x, [d for i, d in enumerate(sh) if i not in drop])


@row("Unsqueeze", params=(1,))
def _unsqueeze(cx):
    x = cx.inp(0)
    axes = cx.attr("axes")
    axes = _ints(cx.const_input(1, "axes") if axes is None else axes)
    rank = cx.rank(x) + len(axes)
    ins = {_axis(cx, a, rank) for a in axes}
    if len(ins) != len(axes):
        raise cx.fail(f"repeated axes {list(axes)}")
    it = iter(cx.shape(x))
    return _reshape_to(cx, x, [1 if i in ins else next(it) for i in range(rank)])


@row("Transpose")
def _transpose(cx):
    x = cx.inp(0)
    perm = cx.attr("perm")
    perm = tuple(range(cx.rank(x)))[::-1] if perm is None else tuple(int(p) for p in perm)
    return cx.op("transpose", [x], perm=perm)


@row("Concat")
def _concat(cx):
    refs = cx.inputs()
    return cx.op("concat", refs, axis=_axis(cx, int(cx.attr("axis")), cx.rank(refs[0])))


def _slice(cx, x: str, starts, ends, axes, steps, name=None) -> str:
    """A ``slice`` with ONNX (= Python) clamping; bounds clamped to [-(n+1), n+1] (same meaning)."""
    sh = cx.shape(x)
    ax = [_axis(cx, a, len(sh)) for a in axes]
    if len(set(ax)) != len(ax):
        raise cx.fail(f"repeated slice axes {list(axes)}")
    if any(s == 0 for s in steps):
        raise cx.fail("slice step 0")
    clamp = lambda v, n: int(min(max(int(v), -n - 1), n + 1))  # noqa: E731
    return cx.op("slice", [x], name, starts=tuple(clamp(s, sh[a]) for s, a in zip(starts, ax)),
                 ends=tuple(clamp(e, sh[a]) for e, a in zip(ends, ax)), axes=tuple(ax),
                 steps=tuple(int(s) for s in steps))


@row("Slice", params=(1, 2, 3, 4))
def _slice_row(cx):
    x = cx.inp(0)
    starts, ends = _ints(cx.const_input(1, "starts")), _ints(cx.const_input(2, "ends"))
    axes, steps = cx.const_input(3, "axes"), cx.const_input(4, "steps")
    axes = tuple(range(len(starts))) if axes is None else _ints(axes)
    steps = (1,) * len(starts) if steps is None else _ints(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise cx.fail("starts, ends, axes and steps differ in length")
    return _slice(cx, x, starts, ends, axes, steps)


@row("Split", params=(1,))
def _split(cx):
    x = cx.inp(0)
    sh = cx.shape(x)
    axis = _axis(cx, int(cx.attr("axis", 0)), len(sh))
    n_out, dim = len(cx.node.output), sh[axis]
    sizes = cx.attr("split")
    if sizes is None:
        sizes = cx.const_input(1, "split")
    if sizes is not None:
        sizes = _ints(sizes)
    elif cx.attr("num_outputs") is not None:
        chunk = -(-dim // int(cx.attr("num_outputs")))
        sizes = tuple(min(chunk, max(0, dim - k * chunk)) for k in range(int(cx.attr("num_outputs"))))
    elif dim % n_out == 0:
        sizes = (dim // n_out,) * n_out
    else:
        raise cx.fail(f"dim {dim} does not split evenly into {n_out} outputs")
    if len(sizes) != n_out or sum(sizes) != dim:
        raise cx.fail(f"split sizes {list(sizes)} do not cover dim {dim} with {n_out} outputs")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [_slice(cx, x, (offsets[k],), (offsets[k + 1],), (axis,), (1,), cx.out(k)) for k in range(n_out)]


@row("Gather")
def _gather(cx):
    x, idx = cx.inp(0), cx.inp(1)
    axis = _axis(cx, int(cx.attr("axis", 0)), cx.rank(x))
    if cx.is_const(idx):
        i = cx.array(idx).astype(np.int64)
        n = cx.shape(x)[axis]
        if np.any((i < -n) | (i >= n)):
            raise cx.fail(f"gather indices out of range for dim {n}")
        idx = cx.const(np.where(i < 0, i + n, i), cx.sub("indices"))
    return cx.op("gather", [x, idx], axis=axis)


@row("Pad", params=(1, 2, 3))
def _pad(cx):
    x = cx.inp(0)
    rank = cx.rank(x)
    pads = _ints(cx.const_input(1, "pads"))
    value = cx.const_input(2, "constant_value")
    axes = cx.const_input(3, "axes")
    mode = cx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise cx.fail(f"pad mode {mode!r} is not supported (constant, reflect, edge)")
    axes = tuple(range(rank)) if axes is None else tuple(_axis(cx, a, rank) for a in _ints(axes))
    if len(pads) != 2 * len(axes):
        raise cx.fail(f"pads {list(pads)} need {2 * len(axes)} entries")
    full = [0] * (2 * rank)
    for k, a in enumerate(axes):
        full[a], full[a + rank] = pads[k], pads[k + len(axes)]
    value = 0 if value is None or value.size == 0 else value.reshape(-1)[0].item()
    y = x
    if any(p > 0 for p in full):
        grow = tuple(max(p, 0) for p in full)
        y = cx.op("pad", [x], cx.sub("pad") if min(full) < 0 else None, pads=grow, mode=mode,
                  value=value if mode == "constant" else None)
    if min(full) < 0:                                       # negative pads crop
        sh = cx.shape(y)
        return _slice(cx, y, [-min(full[a], 0) for a in range(rank)],
                      [sh[a] + min(full[a + rank], 0) for a in range(rank)], range(rank), (1,) * rank)
    return y


@row("Expand", params=(1,))
def _expand(cx):
    x = cx.inp(0)
    target = _ints(cx.const_input(1, "shape"))
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(cx.shape(x), target))
    except ValueError:
        raise cx.fail(f"cannot expand {list(cx.shape(x))} to {list(target)}") from None
    if cx.is_const(x):
        return cx.const(np.broadcast_to(cx.array(x), out).copy())
    if out == cx.shape(x):
        return x
    return cx.op("mul", [x, cx.const(np.ones(target, cx.np_dtype(x)), cx.sub("ones"))])   # x * 1 broadcasts


# ---- constants and shape arithmetic (evaluated at import time) ----------------------------------------
@row("Constant")
def _constant(cx):
    a = cx.attrs
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return cx.const(np.asarray(a[key], dtype))
    if "value" in a:
        return cx.const(a["value"])
    raise cx.fail(f"constant attribute {', '.join(a) or '(none)'} is not supported")


def _onnx_np_dtype(cx, to: int) -> np.dtype:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, TypeError, ValueError):
        raise cx.fail(f"element type {to} is not supported") from None


def _cast_to(cx, x: str, dt: np.dtype) -> str:
    if cx.is_const(x):
        return cx.const(cx.array(x).astype(dt))
    if cx.np_dtype(x) == dt:
        return x
    raise cx.fail(f"casting a run-time {cx.np_dtype(x)} tensor to {dt} is not supported (only constants)")


@row("Cast")
def _cast(cx):
    return _cast_to(cx, cx.inp(0), _onnx_np_dtype(cx, int(cx.attr("to"))))


@row("CastLike")
def _cast_like(cx):
    return _cast_to(cx, cx.inp(0), cx.np_dtype(cx.inp(1)))


@row("Shape")
def _shape(cx):
    sh = np.asarray(cx.shape(cx.inp(0)), np.int64)
    start, end = int(cx.attr("start", 0)), cx.attr("end")
    return cx.const(sh[start:None if end is None else int(end)])


@row("Size")
def _size(cx):
    return cx.const(np.asarray(math.prod(cx.shape(cx.inp(0))), np.int64))


@row("ConstantOfShape", params=(0,))
def _constant_of_shape(cx):
    shape = _ints(cx.const_input(0, "shape"))
    value = cx.attr("value", np.zeros(1, np.float32))
    return cx.const(np.full(shape, value.reshape(-1)[0], value.dtype))


@row("Range", params=(0, 1, 2))
def _range(cx):
    start, limit, delta = (cx.const_input(i, n) for i, n in enumerate(("start", "limit", "delta")))
    n = max(int(math.ceil((limit.item() - start.item()) / delta.item())), 0)
    return cx.const((start + np.arange(n, dtype=np.float64 if start.dtype.kind == "f" else np.int64)
                     * delta).astype(start.dtype))
from . import onnx_qdq  # noqa: E402,F401  (QDQ / QOperator rows, registered on import)
