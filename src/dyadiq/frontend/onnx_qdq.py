# SPDX-License-Identifier: Apache-2.0
"""ONNX rows for pre-quantized models: QDQ (``QuantizeLinear`` / ``DequantizeLinear``) and QOperator.

- ``QuantizeLinear`` -> ``quantize_linear``, ``DequantizeLinear`` -> ``dequantize_linear``, also of a
  constant (a weight or an int32 bias: not folded, so ``fold_fake_quant`` sees the codes; int4 / uint4
  initializers become ``i4`` / ``u4`` constants in 8-bit containers). Per-tensor (one scale) or
  per-axis (``axis``); int8/uint8, int16/uint16, int4/uint4 (opset 21), int32 (biases, DQ only); the
  ``com.microsoft`` versions too. Scales and zero points must be constants; ``block_size`` is refused.
- QOperator nodes expand to ``DequantizeLinear -> float op -> QuantizeLinear``:
  ``QLinearConv``, ``QLinearMatMul``, ``com.microsoft.QGemm`` (int32 bias ``C`` at scale
  ``alpha s_a s_b``; a float output when ``y_scale`` is absent), ``com.microsoft.QLinearAdd`` / ``Mul`` /
  ``Concat`` / ``GlobalAveragePool`` / ``Sigmoid`` / ``LeakyRelu``; ``ConvInteger`` / ``MatMulInteger``
  become the float op on operands dequantized at scale 1 (a float tensor holding the int32 result).
Malformed parameters (scale <= 0 or not finite, zero point outside the integer type, a per-axis length
that is not the axis length) are a FrontendError naming the node.
"""
from __future__ import annotations

import numpy as np

from ..errors import IRError
from ..ir.ops.fake_quant import quant_type, quantize_codes
from .onnx import NodeContext
from .onnx_ops import _lift, _unlift, _window, row

# numpy / dyadiq dtype name -> (bits, signed)
KINDS = {"int4": (4, True), "uint4": (4, False), "int8": (8, True), "uint8": (8, False),
         "int16": (16, True), "uint16": (16, False), "int32": (32, True),
         "i4": (4, True), "u4": (4, False), "i8": (8, True), "u8": (8, False),
         "i16": (16, True), "u16": (16, False), "i32": (32, True)}


def _kind(cx: NodeContext, ref: str, what: str) -> tuple[int, bool]:
    """(bits, signed) of an integer operand (a constant's numpy dtype, or a value's dyadiq dtype)."""
    name = np.dtype(cx.array(ref).dtype).name if cx.is_const(ref) else cx.imp.b.type_of(ref).dtype
    if name not in KINDS:
        raise cx.fail(f"{what} has element type {name}; expected int4/uint4/int8/uint8/int16/uint16/int32")
    return KINDS[name]


def _q_kind(cx: NodeContext, zp_ref: str | None) -> tuple[int, bool]:
    """The integer type a QuantizeLinear produces: its zero point's, else ``output_dtype``, else uint8."""
    if zp_ref is not None:
        return _kind(cx, zp_ref, "the zero point")
    to = int(cx.attr("output_dtype", 0))
    if not to:
        return 8, False
    import onnx
    kind = KINDS.get(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to)).name)
    if kind is None:
        raise cx.fail(f"output_dtype {onnx.TensorProto.DataType.Name(to)} is not an integer type dyadiq reads")
    return kind


def qparams(cx: NodeContext, x: str, s_idx: int, z_idx: int, kind: tuple[int, bool], *,
            axis: int | None = None, scale=None) -> dict:
    """Validated attributes of a quantization op on ``x`` from inputs ``s_idx`` (scale), ``z_idx`` (zero point).

    ``axis`` is used for per-axis parameters (default: the node's ``axis`` attribute, else 1).
    """
    if cx.attr("block_size", 0):
        raise cx.fail("blocked quantization (block_size) is not supported")
    s = np.asarray(cx.const_input(s_idx, "scale") if scale is None else scale)
    if s.dtype.kind != "f":
        raise cx.fail(f"scale has element type {s.dtype}; expected a float type")
    if s.ndim > 1:
        raise cx.fail("scale must be a scalar or a 1-D tensor (blocked quantization is not supported)")
    s = s.astype(np.float64).reshape(-1)
    z = cx.const_input(z_idx, "zero point") if z_idx is not None else None
    z = np.zeros(1, np.int64) if z is None else np.asarray(z).astype(np.int64).reshape(-1)
    a = {"bits": kind[0], "signed": kind[1], "scale": tuple(float(v) for v in s),
         "zero_point": tuple(int(v) for v in (np.repeat(z, s.size) if z.size == 1 else z))}
    if s.size > 1:
        rank = cx.rank(x)
        ax = int(cx.attr("axis", 1) if axis is None else axis)
        if not -rank <= ax < rank:
            raise cx.fail(f"axis {ax} out of range for rank {rank}")
        a["axis"] = ax % rank
    try:                                      # lengths, positive scales, zero points in range
        quant_type(a, cx.shape(x))
    except IRError as e:
        raise cx.fail(str(e)) from None
    return a


def dequantize(cx: NodeContext, x: str, a: dict, name: str | None = None) -> str:
    """``dequantize_linear(x)``, kept as a node also for a constant ``x`` (weights, int32 biases)."""
    imp = cx.imp
    if cx.is_const(x):      # emitted directly: cx.op would fold it and lose the quantization grid
        arr = np.asarray(cx.array(x))
        if arr.dtype.name in ("int4", "uint4"):       # ml_dtypes: held in an 8-bit container
            dt = "i4" if arr.dtype.name == "int4" else "u4"
            ref = imp.b.const(cx.hint(x), arr.astype(np.int8 if dt == "i4" else np.uint8), dtype=dt)
        else:
            ref = imp.value(x)
        return imp.b.op("dequantize_linear", [ref], name or cx.out(), **a)
    return cx.op("dequantize_linear", [x], name, **a)


def quantize(cx: NodeContext, x: str, a: dict, name: str | None = None) -> str:
    """``quantize_linear(x)``; a constant is quantized now (codes in the zero point's numpy dtype)."""
    if cx.is_const(x):
        zp = cx.const_input(2, "zero point") if cx.node.op_type == "QuantizeLinear" else None
        codes = quantize_codes(cx.array(x), a)
        dt = zp.dtype if zp is not None else np.dtype(f"{'' if a['signed'] else 'u'}int{max(a['bits'], 8)}")
        return cx.const(codes.astype(dt), name or cx.out())
    return cx.op("quantize_linear", [x], name, **a)


# ---- QDQ ---------------------------------------------------------------------------------------------
@row("QuantizeLinear", "com.microsoft.QuantizeLinear", params=(1, 2))
def _quantize_linear(cx):
    x = cx.inp(0)
    if cx.np_dtype(x).kind != "f":
        raise cx.fail(f"input has element type {cx.np_dtype(x)}; expected a float type")
    return quantize(cx, x, qparams(cx, x, 1, 2, _q_kind(cx, cx.inp(2))))


@row("DequantizeLinear", "com.microsoft.DequantizeLinear", params=(1, 2))
def _dequantize_linear(cx):
    x = cx.inp(0)
    return dequantize(cx, x, qparams(cx, x, 1, 2, _kind(cx, x, "the input")))


# ---- QOperator -------------------------------------------------------------------------------------------
def _dq_input(cx, i: int, axis: int | None = None) -> str:
    """Dequantize input ``i`` with the scale / zero point at ``i + 1``, ``i + 2``."""
    x = cx.inp(i)
    return dequantize(cx, x, qparams(cx, x, i + 1, i + 2, _kind(cx, x, f"input {i}"), axis=axis),
                      cx.sub(f"dq{i}"))


def _q_output(cx, y: str, s_idx: int, z_idx: int) -> str:
    return quantize(cx, y, qparams(cx, y, s_idx, z_idx, _q_kind(cx, cx.inp(z_idx)), axis=1))


def _bias(cx, i: int, scale: np.ndarray) -> str | None:
    """An int32 bias at ``scale`` (per output channel), dequantized like an ORT QDQ bias."""
    b = cx.inp(i)
    if b is None:
        return None
    if not cx.is_const(b):
        raise cx.fail("the int32 bias must be a constant")
    n = cx.shape(b)[-1] if cx.rank(b) else 1
    s = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (n,)).astype(np.float64)
    a = {"bits": 32, "signed": True, "scale": tuple(float(v) for v in s), "zero_point": (0,) * n}
    if n > 1:
        a["axis"] = cx.rank(b) - 1
    else:
        a["scale"], a["zero_point"] = a["scale"][:1], (0,)
    try:
        quant_type(a, cx.shape(b))
    except IRError as e:
        raise cx.fail(f"bias: {e}") from None
    return dequantize(cx, b, a, cx.sub("bias"))


def _conv2d(cx, x: str, w: str, bias: str | None, name: str) -> str:
    kernel = tuple(cx.attr("kernel_shape", cx.shape(w)[2:]))
    s, p, d = _window(cx, cx.shape(x)[2:], kernel)
    x4, lifted = _lift(cx, x, "x")
    w4 = _lift(cx, w, "w")[0] if lifted else w
    y = cx.op("conv2d", [x4, w4] + ([bias] if bias is not None else []), name,
              stride=s, pad=p, dilation=d, groups=int(cx.attr("group", 1)))
    return _unlift(cx, y) if lifted else y


@row("QLinearConv", params=(1, 2, 4, 5, 6, 7, 8))
def _qlinear_conv(cx):
    x, w = _dq_input(cx, 0), _dq_input(cx, 3, axis=0)
    sx, sw = cx.const_input(1, "x_scale"), cx.const_input(4, "w_scale")
    bias = _bias(cx, 8, np.float32(sx).reshape(-1) * np.asarray(sw, np.float32).reshape(-1))
    return _q_output(cx, _conv2d(cx, x, w, bias, cx.sub("conv")), 6, 7)


def _unit_scale(cx, zp_idx: int) -> np.ndarray:
    """Scale 1 for each zero point of input ``zp_idx`` (ConvInteger / MatMulInteger: real = q - zp)."""
    z = cx.const_input(zp_idx, "zero point")
    return np.ones(1 if z is None else max(z.size, 1), np.float32)


@row("ConvInteger", params=(2, 3))
def _conv_integer(cx):
    x, w = cx.inp(0), cx.inp(1)
    xf = dequantize(cx, x, qparams(cx, x, None, 2, _kind(cx, x, "x"), scale=_unit_scale(cx, 2)), cx.sub("dq_x"))
    wf = dequantize(cx, w, qparams(cx, w, None, 3, _kind(cx, w, "w"), axis=0, scale=_unit_scale(cx, 3)),
                    cx.sub("dq_w"))
    return _conv2d(cx, xf, wf, None, None)


def _matmul(cx, a: str, b: str, name: str | None) -> str:
    if cx.rank(a) < 2 or cx.rank(b) < 2:
        raise cx.fail("1-D matmul operands are not supported here")
    return cx.op("matmul", [a, b], name)


@row("QLinearMatMul", params=(1, 2, 4, 5, 6, 7))
def _qlinear_matmul(cx):
    a, b = _dq_input(cx, 0, axis=-2), _dq_input(cx, 3, axis=-1)
    return _q_output(cx, _matmul(cx, a, b, cx.sub("matmul")), 6, 7)


@row("MatMulInteger", params=(2, 3))
def _matmul_integer(cx):
    a, b = cx.inp(0), cx.inp(1)
    af = dequantize(cx, a, qparams(cx, a, None, 2, _kind(cx, a, "A"), axis=-2, scale=_unit_scale(cx, 2)),
                    cx.sub("dq_a"))
    bf = dequantize(cx, b, qparams(cx, b, None, 3, _kind(cx, b, "B"), axis=-1, scale=_unit_scale(cx, 3)),
                    cx.sub("dq_b"))
    return _matmul(cx, af, bf, None)


@row("com.microsoft.QGemm", params=(1, 2, 4, 5, 6, 7, 8))
def _qgemm(cx):
    if cx.attr("transA", 0):
        raise cx.fail("transA=1 is not supported")
    trans_b = bool(cx.attr("transB", 0))
    a, b = _dq_input(cx, 0), _dq_input(cx, 3, axis=0 if trans_b else 1)
    alpha = float(cx.attr("alpha", 1.0))
    if trans_b:
        b = cx.op("transpose", [b], cx.sub("b_t"), perm=(1, 0))
    quantized = cx.inp(7) is not None
    y = _matmul(cx, a, b, cx.sub("matmul"))
    if alpha != 1.0:
        y = cx.op("mul", [y, cx.const(np.asarray(alpha, np.float32), cx.sub("alpha"))], cx.sub("scaled"))
    sa, sb = cx.const_input(1, "a_scale"), cx.const_input(4, "b_scale")
    bias = _bias(cx, 6, np.float32(alpha) * np.float32(sa).reshape(-1) * np.asarray(sb, np.float32).reshape(-1))
    if bias is not None:
        y = cx.op("add", [y, bias], cx.sub("gemm") if quantized else None)
    return _q_output(cx, y, 7, 8) if quantized else y


def _binary(op: str):
    def convert(cx):
        a, b = _dq_input(cx, 0), _dq_input(cx, 3)
        return _q_output(cx, cx.op(op, [a, b], cx.sub(op)), 6, 7)
    return convert


row("com.microsoft.QLinearAdd", params=(1, 2, 4, 5, 6, 7))(_binary("add"))
row("com.microsoft.QLinearMul", params=(1, 2, 4, 5, 6, 7))(_binary("mul"))


@row("com.microsoft.QLinearConcat")
def _qlinear_concat(cx):
    if (cx.n_inputs - 2) % 3 or cx.n_inputs < 5:
        raise cx.fail("expects Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) triples")
    xs = [_dq_input(cx, i) for i in range(2, cx.n_inputs, 3)]
    axis = int(cx.attr("axis"))
    rank = cx.rank(xs[0])
    if not -rank <= axis < rank:
        raise cx.fail(f"axis {axis} out of range for rank {rank}")
    return _q_output(cx, cx.op("concat", xs, cx.sub("concat"), axis=axis % rank), 0, 1)


@row("com.microsoft.QLinearGlobalAveragePool", params=(1, 2, 3, 4))
def _qlinear_gap(cx):
    if cx.attr("channels_last", 0):
        raise cx.fail("channels_last=1 is not supported")
    return _q_output(cx, cx.op("global_avgpool", [_dq_input(cx, 0)], cx.sub("pool")), 3, 4)


def _unary(op: str, **attrs):
    def convert(cx):
        extra = {k: float(cx.attr(k, v)) for k, v in attrs.items()}
        return _q_output(cx, cx.op(op, [_dq_input(cx, 0)], cx.sub(op), **extra), 3, 4)
    return convert


row("com.microsoft.QLinearSigmoid", params=(1, 2, 3, 4))(_unary("sigmoid"))
row("com.microsoft.QLinearLeakyRelu", params=(1, 2, 3, 4))(_unary("leaky_relu", alpha=0.01))
