# SPDX-License-Identifier: Apache-2.0
"""Export a quantized float graph (docs/numerics.md) as an ONNX QDQ model that onnxruntime runs.

- integers are stored unsigned by default (``unsigned=True``): a signed code ``q`` becomes ``q + 128``
  with zero point ``z + 128`` (``+ 32768`` for 16-bit), which dequantizes to the same floats.
  onnxruntime's x86 u8s8/s8s8 kernels (``VPMADDUBSW``) saturate int16 pair sums on full-range int8
  weights and miss the simulated result by tens of steps; its u8u8 kernels do not;
- every value with an activation QuantType ``(s, z)`` is followed by ``QuantizeLinear`` ->
  ``DequantizeLinear``; widths below the 8/16-bit container add ``Clip(s (qmin - z), s (qmax - z))``
  after the dequantize (exactly the clamp to ``[qmin, qmax]``, as the grid values are float32-exact);
- a constant with a QuantType (the conv/linear weights) is stored as integers (int8 / uint8, or
  16-bit) plus ``DequantizeLinear`` (``axis`` for per-channel); other constants stay float, except
  a conv/linear bias, stored as the QDQ format has it: int32 ``round(b / (s_x s_w))`` +
  ``DequantizeLinear`` (``int_bias=False``: float). ``quantize`` already puts biases on that grid, so
  this is exact; onnxruntime would otherwise round a float bias so itself when it fuses the layer;
- every float op becomes its ONNX op (opset 21): ``linear`` is ``Gemm(transB=1)`` on 2-D inputs, else
  ``MatMul(x, Transpose(w)) + b``; ``silu`` is ``x * Sigmoid(x)``.
So onnxruntime computes what ``interp.run(q, x, mode="simulated")`` computes, up to float rounding.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import CodegenError
from ..ir.graph import Graph, Node
from ..ir.numerics import quantize
from ..ir.ops import op_def
from ..ir.ops.registry import is_weighted
from ..ir.types import QuantType, TensorType

OPSET = 21
IR_VERSION = 10


def _onnx():
    import onnx
    return onnx


def elem_type(dtype: str) -> int:
    """The ONNX element type of a dyadiq dtype."""
    T = _onnx().TensorProto
    table = {"f32": T.FLOAT, "f64": T.DOUBLE, "i4": T.INT8, "u4": T.UINT8, "i8": T.INT8, "u8": T.UINT8,
             "i16": T.INT16, "u16": T.UINT16, "i32": T.INT32, "i64": T.INT64, "i1": T.BOOL}
    return table[dtype]


def _storage(q: QuantType, unsigned: bool) -> tuple[np.dtype, int]:
    """(container dtype, code offset) of ``q``: signed codes move to uint by ``+2^(c-1)`` when ``unsigned``."""
    for c in (8, 16):
        if q.bits <= c:
            if q.signed and unsigned:
                return np.dtype(f"uint{c}"), 1 << (c - 1)
            return np.dtype(f"{'int' if q.signed else 'uint'}{c}"), 0
    raise CodegenError(f"{q.bits}-bit values have no ONNX QuantizeLinear type")


class _Export:
    """Nodes and initializers of the ONNX graph being built."""

    def __init__(self, g: Graph, unsigned: bool):
        self.g, self.unsigned = g, unsigned
        self.nodes, self.inits = [], []
        self.names: set[str] = set(g.values)

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.names:
            name, k = f"{hint}_{k}", k + 1
        self.names.add(name)
        return name

    def node(self, op: str, ins: list[str], hint: str, out: str | None = None, **attrs) -> str:
        out = out or self.fresh(hint)
        self.nodes.append(_onnx().helper.make_node(op, ins, [out], name=self.fresh(f"{out}__{op}"), **attrs))
        return out

    def init(self, hint: str, arr: np.ndarray, name: str | None = None) -> str:
        name = name or self.fresh(hint)
        self.inits.append(_onnx().numpy_helper.from_array(np.asarray(arr), name))
        return name

    def i64(self, hint: str, vals) -> str:
        return self.init(hint, np.asarray(vals, np.int64))

    def f32(self, hint: str, v: float) -> str:
        return self.init(hint, np.asarray(v, np.float32))

    def qparams(self, base: str, q: QuantType) -> tuple[str, str]:
        dt, off = _storage(q, self.unsigned)
        shape = (len(q.scale),) if q.per_channel else ()
        s = self.init(f"{base}__scale", np.asarray(q.scale, np.float32).reshape(shape))
        z = self.init(f"{base}__zp", (np.asarray(q.zero_point, np.int64) + off).astype(dt).reshape(shape))
        return s, z

    def dequant(self, src: str, q: QuantType, base: str, out: str | None, clamp: bool = True) -> str:
        """``DequantizeLinear`` (+ ``Clip`` for widths below the container's) of integer tensor ``src``."""
        s, z = self.qparams(base, q)
        axis = {"axis": q.axis} if q.per_channel else {}
        narrow = clamp and q.bits not in (8, 16)
        dq = self.node("DequantizeLinear", [src, s, z], f"{base}__dq", None if narrow else out, **axis)
        if not narrow:
            return dq
        if q.per_channel:
            raise CodegenError(f"per-channel {q.bits}-bit activation %{base} cannot be exported")
        lo, hi = q.qrange
        sc, zp = np.float32(q.scale[0]), q.zero_point[0]
        return self.node("Clip", [dq, self.f32(f"{base}__lo", np.float32(lo - zp) * sc),
                                  self.f32(f"{base}__hi", np.float32(hi - zp) * sc)], base, out)

    def qdq(self, src: str, q: QuantType, base: str, out: str | None = None) -> str:
        s, z = self.qparams(base, q)
        axis = {"axis": q.axis} if q.per_channel else {}
        qv = self.node("QuantizeLinear", [src, s, z], f"{base}__q", **axis)
        return self.dequant(qv, q, base, out)


def _hw(n: Node) -> dict:
    out = {"strides": list(n.attr("stride", (1, 1))), "pads": list(n.attr("pad", (0, 0, 0, 0)))}
    if tuple(n.attr("dilation", (1, 1))) != (1, 1):     # onnxruntime's QLinearAveragePool rejects the attribute
        out["dilations"] = list(n.attr("dilation"))
    return out


def _conv(e: _Export, n: Node, ins: list[str], out: str) -> str:
    kh, kw = e.g.type_of(n.inputs[1]).shape[2:]
    return e.node("Conv", ins, out, out, kernel_shape=[kh, kw], group=int(n.attr("groups", 1)), **_hw(n))


def _linear(e: _Export, n: Node, ins: list[str], out: str) -> str:
    if e.g.type_of(n.inputs[0]).rank == 2:
        return e.node("Gemm", ins, out, out, transB=1)
    wt = e.node("Transpose", [ins[1]], f"{n.inputs[1]}__t", perm=[1, 0])
    if len(ins) == 2:
        return e.node("MatMul", [ins[0], wt], out, out)
    mm = e.node("MatMul", [ins[0], wt], f"{out}__mm")
    return e.node("Add", [mm, ins[2]], out, out)


def _pool(op: str):
    def emit(e: _Export, n: Node, ins: list[str], out: str) -> str:
        attrs = {"kernel_shape": list(n.attr("kernel")), "ceil_mode": int(bool(n.attr("ceil_mode", False))), **_hw(n)}
        if op == "AveragePool":
            attrs["count_include_pad"] = int(bool(n.attr("count_include_pad", False)))
        return e.node(op, ins, out, out, **attrs)
    return emit


def _reduce(op: str):
    def emit(e: _Export, n: Node, ins: list[str], out: str) -> str:
        axes = n.attr("axes")
        extra = [e.i64(f"{out}__axes", list(axes))] if axes is not None else []
        return e.node(op, ins + extra, out, out, keepdims=int(bool(n.attr("keepdims", True))))
    return emit


def _clip(e: _Export, n: Node, ins: list[str], out: str) -> str:
    lo, hi = n.attr("min", -math.inf), n.attr("max", math.inf)
    bounds = [e.f32(f"{out}__{k}", v) if math.isfinite(v) else "" for k, v in (("min", lo), ("max", hi))]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return e.node("Clip", ins + bounds, out, out)


def _slice(e: _Export, n: Node, ins: list[str], out: str) -> str:
    shape = e.g.type_of(n.inputs[0]).shape
    starts, ends, axes, steps = [], [], [], []
    for ax, st, en, sp in zip(n.attr("axes", tuple(range(len(n.attr("starts"))))), n.attr("starts"),
                              n.attr("ends"), n.attr("steps", (1,) * len(n.attr("starts")))):
        dim = shape[ax % len(shape)]
        lo, hi, _ = slice(st, en, sp).indices(dim)     # resolved like the interpreter (numpy rules)
        starts.append(lo)
        ends.append(hi if hi >= 0 else -(dim + 1))     # -(dim+1): through index 0 for a negative step
        axes.append(ax % len(shape))
        steps.append(sp)
    return e.node("Slice", ins + [e.i64(f"{out}__starts", starts), e.i64(f"{out}__ends", ends),
                                  e.i64(f"{out}__axes", axes), e.i64(f"{out}__steps", steps)], out, out)


def _pad(e: _Export, n: Node, ins: list[str], out: str) -> str:
    mode = n.attr("mode", "constant")
    extra = [e.i64(f"{out}__pads", list(n.attr("pads")))]
    if mode == "constant":
        extra.append(e.init(f"{out}__value", np.asarray(n.attr("value", 0.0), e.g.type_of(n.name).np_dtype)))
    return e.node("Pad", ins + extra, out, out, mode=mode)


def _silu(e: _Export, n: Node, ins: list[str], out: str) -> str:
    sg = e.node("Sigmoid", ins, f"{out}__sigmoid")
    return e.node("Mul", [ins[0], sg], out, out)


def _simple(op: str, **fixed):
    def emit(e: _Export, n: Node, ins: list[str], out: str) -> str:
        return e.node(op, ins, out, out, **fixed)
    return emit


def _with(op: str, **names: tuple[str, object]):
    """ONNX ``op`` with attributes copied from ours: ``onnx_name=(our_name, default)``."""
    def emit(e: _Export, n: Node, ins: list[str], out: str) -> str:
        return e.node(op, ins, out, out, **{k: n.attr(a, d) for k, (a, d) in names.items()})
    return emit


EMIT: dict[str, Callable[[_Export, Node, list[str], str], str]] = {
    "conv2d": _conv, "linear": _linear, "matmul": _simple("MatMul"),
    **{k: _simple(v) for k, v in {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow",
                                  "maximum": "Max", "minimum": "Min", "identity": "Identity", "neg": "Neg",
                                  "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
                                  "reciprocal": "Reciprocal", "erf": "Erf", "relu": "Relu",
                                  "sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "HardSwish",
                                  "global_avgpool": "GlobalAveragePool"}.items()},
    "leaky_relu": _with("LeakyRelu", alpha=("alpha", 0.01)),
    "hardsigmoid": _with("HardSigmoid", alpha=("alpha", 1.0 / 6.0), beta=("beta", 0.5)),
    "gelu": _with("Gelu", approximate=("approximate", "none")),
    "clip": _clip, "silu": _silu,
    "batchnorm": _with("BatchNormalization", epsilon=("eps", 1e-5)),
    "layernorm": _with("LayerNormalization", axis=("axis", -1), epsilon=("eps", 1e-5)),
    "softmax": _with("Softmax", axis=("axis", -1)),
    "avgpool": _pool("AveragePool"), "maxpool": _pool("MaxPool"),
    "mean": _reduce("ReduceMean"), "reduce_sum": _reduce("ReduceSum"),
    "reduce_max": _reduce("ReduceMax"), "reduce_min": _reduce("ReduceMin"),
    "reshape": lambda e, n, ins, out: e.node("Reshape", ins + [e.i64(f"{out}__shape", list(n.attr("shape")))],
                                             out, out),
    "transpose": _with("Transpose", perm=("perm", None)),
    "concat": _with("Concat", axis=("axis", 0)),
    "slice": _slice, "pad": _pad, "gather": _with("Gather", axis=("axis", 0)),
}


def _int_bias(e: _Export, n: Node) -> str | None:
    """int32 bias at scale ``s_x * s_w`` + DequantizeLinear, or None (bias left float) when not possible."""
    g = e.g
    x, w, b = n.inputs
    qx, qw = g.quant_of(x), g.quant_of(w)
    if not g.is_const(b) or g.quant_of(b) is not None or qx is None or qx.per_channel or qw is None \
            or any(z != 0 for z in qw.zero_point):
        return None
    scale = (np.float64(qx.scale[0]) * np.asarray(qw.scale, np.float64)).astype(np.float32)
    scale = np.broadcast_to(scale, g.const(b).shape)
    codes = np.rint(g.const(b).astype(np.float64) / scale.astype(np.float64))
    if not np.all(np.abs(codes) < 2 ** 31 - 1):
        return None
    s = e.init(f"{b}__{n.name}__scale", scale)
    z = e.init(f"{b}__{n.name}__zp", np.zeros(scale.shape, np.int32))
    codes = e.init(f"{b}__{n.name}__int", codes.astype(np.int32))
    return e.node("DequantizeLinear", [codes, s, z], f"{b}__{n.name}__dq", axis=0)


def _value_info(name: str, t: TensorType):
    return _onnx().helper.make_tensor_value_info(name, elem_type(t.dtype), list(t.shape))


def to_onnx_qdq(q: Graph, *, unsigned: bool = True, int_bias: bool = True):
    """The quantized graph ``q`` as an ONNX QDQ ``ModelProto`` (opset 21); see the module docstring."""
    onnx = _onnx()
    g = q
    for n in g.nodes:
        if op_def(n.op).integer:
            raise CodegenError("export the quantized float graph, not the integerized one", node=n)
        if n.op not in EMIT:
            raise CodegenError(f"op {n.op!r} has no ONNX QDQ export", node=n)
        if len(n.outputs) != 1:
            raise CodegenError("multi-output ops are not exported", node=n)
    e = _Export(g, unsigned)
    ref: dict[str, str] = {}                       # our value -> ONNX tensor holding its (fake-quant) value
    for name in g.inputs:
        qt = g.quant_of(name)
        ref[name] = e.qdq(name, qt, name) if qt is not None and g.type_of(name).is_float else name

    def use(name: str) -> str:                     # constants are emitted where first read
        if name not in ref:
            arr, qt = g.const(name), g.quant_of(name)
            if qt is not None and arr.dtype.kind == "f":
                dt, off = _storage(qt, unsigned)
                codes = e.init(f"{name}__int", (quantize(arr, qt) + off).astype(dt))
                ref[name] = e.dequant(codes, qt, name, name, clamp=False)    # codes already in range
            else:
                ref[name] = e.init(name, arr.astype(g.type_of(name).np_dtype, copy=False), name=name)
        return ref[name]

    for n in g.nodes:
        out = n.outputs[0]
        qt = g.quant_of(out)
        quantized = qt is not None and g.type_of(out).is_float
        bias = _int_bias(e, n) if int_bias and is_weighted(n.op) and len(n.inputs) == 3 else None
        ins = [bias if k == 2 and bias else use(i) if g.is_const(i) else ref[i] for k, i in enumerate(n.inputs)]
        raw = EMIT[n.op](e, n, ins, e.fresh(f"{out}__f") if quantized else out)
        ref[out] = e.qdq(raw, qt, out, out) if quantized else raw
    outputs = []
    for name in g.outputs:
        if ref[name] != name:                      # a graph input passed straight through
            ref[name] = e.node("Identity", [ref[name]], f"{name}__out")
        outputs.append(_value_info(ref[name], g.type_of(name)))
    graph = onnx.helper.make_graph(e.nodes, g.name, [_value_info(i, g.type_of(i)) for i in g.inputs],
                                   outputs, e.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="dyadiq", ir_version=IR_VERSION)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise CodegenError(f"exported ONNX model is invalid: {err}") from None
    return model


def save_onnx_qdq(q: Graph, path) -> None:
    """Write ``to_onnx_qdq(q)`` to ``path`` (through a temporary file: never half-written)."""
    from ..ir.serialize import atomic_write
    atomic_write(path, to_onnx_qdq(q).SerializeToString())
