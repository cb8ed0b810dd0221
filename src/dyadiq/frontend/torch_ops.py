# SPDX-License-Identifier: Apache-2.0
"""The aten -> dq op table of the torch.export frontend.

``TABLE`` maps an aten op (packet name ``"aten.conv2d"`` or overload name ``"aten.conv2d.padding"``,
or a Python callable such as ``operator.getitem``) to a converter ``fn(cx, a)``: ``a`` holds the op's
arguments by schema name (defaults filled in), with tensors as IR value names (``str``), ``Const``s
(known at import time), Python scalars or tuples of these. A converter emits nodes through ``cx`` and
returns the result the same way. Both the pre-dispatch graph (``conv2d``, ``linear``, ``batch_norm``)
and the core-ATen one (``convolution``, ``addmm``, ``_native_batch_norm_legit_no_training``) are covered.

Rewrites done here: ``addmm(b, x, W.T)`` / ``mm`` / ``matmul`` with a constant 2-D right operand
-> ``linear(x, W, b)``; ``hardtanh``/``relu6``/``clamp`` -> ``clip``; ``rsqrt = reciprocal(sqrt)``;
``log_softmax = (x - m) - log(sum(exp(x - m)))``; ``sdpa = softmax(q kᵀ·scale + mask) v``;
``adaptive_avg_pool2d`` -> ``global_avgpool`` (1x1) or ``avgpool`` (divisible sizes); ``select``,
``split``, ``chunk`` -> ``slice`` (+ ``reshape``); ``expand``/``repeat`` -> ``concat`` of copies;
view-like ops -> ``reshape`` to the shape torch recorded; dropout, clone, same-dtype ``to`` -> nothing.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..errors import FrontendError
from ..ir.builder import GraphBuilder

DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.int8: "i8", torch.uint8: "u8",
          torch.int16: "i16", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}
TORCH_DTYPES = {v: k for k, v in DTYPES.items()}
TORCH_NP = {"f32": np.float32, "f64": np.float64, "i8": np.int8, "u8": np.uint8, "i16": np.int16,
            "i32": np.int32, "i64": np.int64, "i1": np.bool_}


@dataclass(eq=False)
class Const:
    """A tensor known at import time; ``fqn`` when it is a parameter/buffer, ``t_of`` when it is ``t_of.T``."""

    tensor: torch.Tensor
    hint: str
    name: str | None = None
    fqn: bool = False
    t_of: "Const | None" = None


@dataclass(frozen=True)
class Unavailable:
    """A result torch computes but dyadiq does not (pooling indices, saved BN statistics)."""

    what: str


def dtype_name(dt: torch.dtype, where: str) -> str:
    if dt not in DTYPES:
        raise FrontendError(f"{where}: unsupported dtype {dt}")
    return DTYPES[dt]


class Ctx:
    """What a converter sees: the builder, the fx node and helpers that name things after it."""

    def __init__(self, b: GraphBuilder, node):
        self.b, self.node = b, node
        val = node.meta.get("val")
        self.meta = val[0] if isinstance(val, (list, tuple)) and val else val

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.meta.shape)

    @property
    def out_dtype(self) -> str:
        return dtype_name(self.meta.dtype, f"{self.node.target} at node {self.node.name}")

    def error(self, msg: str) -> FrontendError:
        return FrontendError(f"{self.node.target} at node {self.node.name}: {msg}")

    def value(self, v, dtype: str | None = None) -> str:
        """The IR value name of ``v``, adding a constant for a Const or a Python number."""
        if isinstance(v, str):
            return v
        if isinstance(v, Const):
            if v.name is None:
                arr = v.tensor.detach().contiguous().numpy()
                v.name = self.b.const(v.hint, arr)
            return v.name
        if isinstance(v, (bool, int, float)):
            dt = dtype or self.out_dtype
            return self.b.const(f"{self.node.name}.scalar", np.asarray(v, TORCH_NP[dt]))
        if isinstance(v, Unavailable):
            raise self.error(f"uses {v.what}, which dyadiq does not compute")
        raise self.error(f"expected a tensor, got {type(v).__name__}")

    def shape(self, v) -> tuple[int, ...]:
        if isinstance(v, Const):
            return tuple(v.tensor.shape)
        return self.b.type_of(self.value(v)).shape

    def dtype(self, v) -> str:
        if isinstance(v, Const):
            return dtype_name(v.tensor.dtype, f"node {self.node.name}")
        return self.b.type_of(self.value(v)).dtype

    def emit(self, op: str, inputs, *, suffix: str | None = None, name: str | None = None, **attrs) -> str:
        hint = name or (f"{self.node.name}.{suffix}" if suffix else self.node.name)
        return self.b.op(op, [self.value(i) for i in inputs], name=hint, **attrs)

    def layer(self, c) -> str:
        """Name for the op that owns constant ``c``: its module path (``_blocks.0._bn1``) if it is a parameter."""
        c = c.t_of if isinstance(c, Const) and c.t_of is not None else c
        if isinstance(c, Const) and c.fqn and "." in c.hint:
            return c.hint.rsplit(".", 1)[0]
        return self.node.name

    def transposed(self, c: Const) -> str:
        """``c.T`` as an IR constant, reusing the original parameter when ``c`` is itself a transpose."""
        if c.t_of is not None:
            return self.value(c.t_of)
        return self.value(Const(c.tensor.t().contiguous(), f"{c.hint}.T"))

    def operand(self, v, dtype: str) -> str:
        """``v`` as a ``dtype`` operand of an elementwise op (constants are converted, values must match)."""
        if isinstance(v, Const) and self.dtype(v) != dtype:
            v = Const(v.tensor.to(TORCH_DTYPES[dtype]), v.hint)
        if isinstance(v, str) and self.dtype(v) != dtype:
            raise self.error(f"implicit conversion of %{v} from {self.dtype(v)} to {dtype} is not supported")
        return self.value(v, dtype)

    def reshape(self, x, shape, suffix: str | None = None) -> str:
        shape = tuple(int(d) for d in shape)
        if self.shape(x) == shape:
            return self.value(x)
        return self.emit("reshape", [x], suffix=suffix, shape=shape)


Converter = Callable[[Ctx, dict], Any]
TABLE: dict[Any, Converter] = {}
KEEPS_CONST: set[str] = set()   # converters called even when every input is a Const (instead of folding)


def row(*keys: Any, keeps_const: bool = False):
    def deco(fn: Converter) -> Converter:
        for k in keys:
            TABLE[k] = fn
            if keeps_const:
                KEEPS_CONST.add(k)
        return fn
    return deco


def _x(a: dict):
    return a["self"] if "self" in a else a["input"]


def _pair(v) -> tuple[int, int]:
    v = (v,) if isinstance(v, int) else tuple(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _axis(d: int, rank: int) -> int:
    return int(d) % rank if rank else 0


# ---- identity-like, assertions, tuples --------------------------------------------------------------
@row("aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.lift_fresh",
     keeps_const=True)
def _identity(cx, a):
    return _x(a)


@row("aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout", keeps_const=True)
def _dropout(cx, a):
    if a["train"] and a["p"] > 0:
        raise cx.error("dropout in training mode; export the model after model.eval()")
    return a["input"]


@row("aten.to", "aten._to_copy", "aten.type_as", keeps_const=True)
def _to(cx, a):
    x = a["self"]
    if cx.dtype(x) == cx.out_dtype:
        return x
    if isinstance(x, Const):
        return Const(x.tensor.to(cx.meta.dtype), cx.node.name)
    raise cx.error(f"dtype conversion {cx.dtype(x)} -> {cx.out_dtype} is not supported")


@row("aten._assert_tensor_metadata", "aten._assert_async", "aten._assert_scalar", "aten._functional_assert_async",
     "aten.sym_constrain_range", "aten.sym_constrain_range_for_size")
def _assertion(cx, a):
    return None


@row(operator.getitem, keeps_const=True)
def _getitem(cx, a):
    return a["self"][a["index"]]


@row("aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.empty_like")
def _full_like(cx, a):
    fill = {"aten.zeros_like": 0, "aten.ones_like": 1, "aten.empty_like": 0}.get(str(cx.node.target.overloadpacket))
    fill = a["fill_value"] if fill is None else fill
    return Const(torch.full(cx.out_shape, fill, dtype=cx.meta.dtype), cx.node.name)


# ---- elementwise -------------------------------------------------------------------------------------
def _unary(op: str):
    return lambda cx, a: cx.emit(op, [_x(a)])


for _op in ("relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid", "exp", "log", "sqrt", "abs", "neg",
            "erf", "reciprocal"):
    row(f"aten.{_op}")(_unary(_op))


@row("aten.gelu")
def _gelu(cx, a):
    approx = a["approximate"]
    return cx.emit("gelu", [a["self"]], approximate="tanh" if approx == "tanh" else None)


@row("aten.leaky_relu")
def _leaky_relu(cx, a):
    return cx.emit("leaky_relu", [a["self"]], alpha=float(a["negative_slope"]))


@row("aten.rsqrt")
def _rsqrt(cx, a):
    return cx.emit("reciprocal", [cx.emit("sqrt", [a["self"]], suffix="sqrt")])


@row("aten.square")
def _square(cx, a):
    return cx.emit("mul", [a["self"], a["self"]])


def _clamp(cx, x, lo, hi):
    num = (int, float)
    if (lo is None or isinstance(lo, num)) and (hi is None or isinstance(hi, num)):
        if lo is None and hi is None:
            return x
        return cx.emit("clip", [x], min=None if lo is None else float(lo), max=None if hi is None else float(hi))
    dt = cx.out_dtype
    if lo is not None:
        x = cx.emit("maximum", [cx.operand(x, dt), cx.operand(lo, dt)], suffix="min" if hi is not None else None)
    if hi is not None:
        x = cx.emit("minimum", [cx.operand(x, dt), cx.operand(hi, dt)])
    return x


row("aten.clamp", "aten.clip")(lambda cx, a: _clamp(cx, a["self"], a["min"], a["max"]))
row("aten.clamp_min")(lambda cx, a: _clamp(cx, a["self"], a["min"], None))
row("aten.clamp_max")(lambda cx, a: _clamp(cx, a["self"], None, a["max"]))
row("aten.hardtanh")(lambda cx, a: _clamp(cx, a["self"], a["min_val"], a["max_val"]))
row("aten.relu6")(lambda cx, a: _clamp(cx, a["self"], 0.0, 6.0))


@row("aten.prelu", "aten._prelu_kernel")
def _prelu(cx, a):
    """``prelu(x, w) = relu(x) - w * relu(-x)``, ``w`` per channel (dim 1)."""
    x, w = a["self"], a["weight"]
    rank = len(cx.shape(x))
    if isinstance(w, Const) and w.tensor.numel() > 1 and rank > 2:
        w = Const(w.tensor.reshape((-1,) + (1,) * (rank - 2)), w.hint, fqn=w.fqn)
    neg = cx.emit("relu", [cx.emit("neg", [x], suffix="neg")], suffix="relu_neg")
    return cx.emit("sub", [cx.emit("relu", [x], suffix="relu"), cx.emit("mul", [w, neg], suffix="scaled")])


def _scaled(cx, v, alpha):
    """``alpha * v`` for a value, a Const or a number."""
    if alpha == 1:
        return v
    if isinstance(v, (int, float)):
        return v * alpha
    if isinstance(v, Const):
        return Const(v.tensor * alpha, f"{v.hint}.scaled")
    return cx.emit("mul", [cx.operand(v, cx.out_dtype), cx.operand(alpha, cx.out_dtype)], suffix="alpha")


def _binary(op: str, swap: bool = False):
    def convert(cx, a):
        lhs, rhs = a["self"], a["other"] if "other" in a else a["exponent"]
        if a.get("rounding_mode") is not None:
            raise cx.error(f"division with rounding_mode={a['rounding_mode']!r} is not supported")
        rhs = _scaled(cx, rhs, a.get("alpha", 1)) if not swap else rhs
        if swap:                                       # rsub(x, y, alpha) = y - alpha * x
            lhs, rhs = rhs, _scaled(cx, lhs, a.get("alpha", 1))
        dt = cx.out_dtype
        return cx.emit(op, [cx.operand(lhs, dt), cx.operand(rhs, dt)])
    return convert


for _op, _ir in {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "true_divide": "div", "pow": "pow",
                 "maximum": "maximum", "minimum": "minimum"}.items():
    row(f"aten.{_op}")(_binary(_ir))
row("aten.rsub")(_binary("sub", swap=True))


# ---- convolution, linear, matmul ---------------------------------------------------------------------
@row("aten.conv2d", "aten.convolution", "aten.conv1d")
def _conv(cx, a):
    x, w, bias = a["input"], a["weight"], a["bias"]
    if a.get("transposed"):
        raise cx.error("transposed convolution is not supported")
    rank = len(cx.shape(w))
    if rank not in (3, 4):
        raise cx.error(f"only 1-D and 2-D convolutions are supported, got a {rank - 2}-D one")
    one_d = rank == 3
    padding = a["padding"]
    stride, dilation = ((1,) + _pair(a[k])[:1] if one_d else _pair(a[k]) for k in ("stride", "dilation"))
    ksize = cx.shape(w)[2:] if not one_d else (1,) + cx.shape(w)[2:]
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise cx.error(f"padding={padding!r}")
        tot = [d * (k - 1) if padding == "same" else 0 for d, k in zip(dilation, ksize)]
        pad = (tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2)
    else:
        p = (0,) + _pair(padding)[:1] if one_d else _pair(padding)
        pad = (p[0], p[1], p[0], p[1])
    name = cx.layer(w)
    if one_d:
        x = cx.reshape(x, cx.shape(x)[:2] + (1,) + cx.shape(x)[2:], suffix="in4d")
        w = (Const(w.tensor.unsqueeze(2), w.hint, fqn=w.fqn) if isinstance(w, Const)
             else cx.reshape(w, cx.shape(w)[:2] + (1,) + cx.shape(w)[2:], suffix="w4d"))
    y = cx.emit("conv2d", [x, w] + ([bias] if bias is not None else []), name=name,
                stride=stride, pad=pad, dilation=dilation, groups=int(a["groups"]))
    return cx.reshape(y, cx.out_shape, suffix="out") if one_d else y


@row("aten.linear")
def _linear(cx, a):
    w, bias = a["weight"], a["bias"]
    return cx.emit("linear", [a["input"], w] + ([bias] if bias is not None else []), name=cx.layer(w))


def _is_weight(cx, v) -> bool:
    return isinstance(v, Const) and v.tensor.dim() == 2


@row("aten.mm", "aten.matmul", "aten.bmm")
def _matmul(cx, a):
    x, y = a["self"], a["mat2"] if "mat2" in a else a["other"]
    if _is_weight(cx, y):                                   # x @ Wᵀ-stored-as-[in, out] -> linear(x, W)
        return cx.emit("linear", [x, cx.transposed(y)], name=cx.layer(y))
    if len(cx.shape(x)) < 2 or len(cx.shape(y)) < 2:
        raise cx.error("matmul with a 1-D operand is not supported")
    return cx.emit("matmul", [x, y])


@row("aten.addmm")
def _addmm(cx, a):
    bias, x, y, beta, alpha = a["self"], a["mat1"], a["mat2"], a["beta"], a["alpha"]
    n_out = cx.out_shape[-1]
    if (_is_weight(cx, y) and beta == 1 and alpha == 1 and isinstance(bias, Const)
            and bias.tensor.numel() == n_out):                # addmm(b, x, W.T) = linear(x, W, b)
        b1 = bias if bias.tensor.shape == (n_out,) else Const(bias.tensor.reshape(n_out), bias.hint, fqn=bias.fqn)
        return cx.emit("linear", [x, cx.transposed(y), b1], name=cx.layer(y))
    prod = _scaled(cx, cx.emit("matmul", [x, y], suffix="mm"), alpha)
    return cx.emit("add", [prod, cx.operand(_scaled(cx, bias, beta), cx.out_dtype)])


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
        if cx.dtype(mask) == "i1":
            raise cx.error("a boolean attn_mask computed at run time is not supported")
        s = cx.emit("add", [s, cx.operand(mask, cx.out_dtype)], suffix="masked")
    p = cx.emit("softmax", [s], suffix="probs", axis=len(qs) - 1)
    return cx.emit("matmul", [p, v])


@row("aten.embedding")
def _embedding(cx, a):
    return cx.emit("gather", [a["weight"], a["indices"]], name=cx.layer(a["weight"]), axis=0)


@row("aten.index")
def _index(cx, a):
    """``x[:, ..., idx]`` with one constant integer index tensor -> gather."""
    pos = [i for i, t in enumerate(a["indices"]) if t is not None]
    idx = a["indices"][pos[0]] if len(pos) == 1 else None
    if not (isinstance(idx, Const) and not idx.tensor.dtype.is_floating_point and idx.tensor.dtype != torch.bool):
        raise cx.error("only indexing with one constant integer index tensor is supported")
    return cx.emit("gather", [a["self"], idx], axis=pos[0])


@row("aten.index_select")
def _index_select(cx, a):
    return cx.emit("gather", [a["self"], a["index"]], axis=_axis(a["dim"], len(cx.shape(a["self"]))))


# ---- pooling and reductions --------------------------------------------------------------------------
def _reduce(op: str):
    def convert(cx, a):
        _check_dtype_arg(cx, a)
        x = a["self"]
        rank = len(cx.shape(x))
        dims = a.get("dim")
        axes = tuple(range(rank)) if dims is None or (not isinstance(dims, int) and len(dims) == 0) else tuple(
            sorted({_axis(d, rank) for d in ((dims,) if isinstance(dims, int) else dims)}))
        keep = bool(a.get("keepdim", False))
        if op == "mean" and keep and rank >= 3 and axes == tuple(range(2, rank)):
            return cx.emit("global_avgpool", [x])          # mean over all spatial dims, kept
        return cx.emit(op, [x], axes=axes, keepdims=keep)
    return convert


row("aten.mean")(_reduce("mean"))
row("aten.sum")(_reduce("reduce_sum"))
row("aten.amax")(_reduce("reduce_max"))
row("aten.amin")(_reduce("reduce_min"))


def _extreme(kind: str):
    """``max(x)``, ``max(x, dim)`` (values only; the indices are not computed) and ``max(x, y)``."""
    def convert(cx, a):
        if "other" in a:
            return _binary(f"{kind}imum")(cx, a)
        x, rank = a["self"], len(cx.shape(a["self"]))
        if "dim" not in a:
            return cx.emit(f"reduce_{kind}", [x], axes=tuple(range(rank)), keepdims=False)
        y = cx.emit(f"reduce_{kind}", [x], axes=(_axis(a["dim"], rank),), keepdims=bool(a["keepdim"]))
        return (y, Unavailable(f"{kind} indices"))
    return convert


row("aten.max")(_extreme("max"))
row("aten.min")(_extreme("min"))


@row("aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d")
def _adaptive_avg_pool(cx, a):
    x = a["self"]
    shape = cx.shape(x)
    if len(shape) != 4:
        raise cx.error(f"adaptive_avg_pool2d needs a 4-D input, got {list(shape)}")
    h, w = shape[2:]
    oh, ow = (d if o is None else int(o) for o, d in zip(_pair(a["output_size"]), (h, w)))
    if (oh, ow) == (1, 1):
        return cx.emit("global_avgpool", [x])
    if h % oh or w % ow:
        raise cx.error(f"adaptive pooling {h}x{w} -> {oh}x{ow} needs divisible sizes")
    k = (h // oh, w // ow)
    return cx.emit("avgpool", [x], kernel=k, stride=k, pad=(0, 0, 0, 0))


@row("aten.avg_pool2d")
def _avg_pool(cx, a):
    k = _pair(a["kernel_size"])
    s = _pair(a["stride"]) if a["stride"] else k
    p = _pair(a["padding"])
    div = a["divisor_override"]
    if div is not None and not (div == k[0] * k[1] and p == (0, 0) and not a["ceil_mode"]):
        raise cx.error(f"divisor_override={div} is not supported")
    return cx.emit("avgpool", [a["self"]], kernel=k, stride=s, pad=(p[0], p[1], p[0], p[1]),
                   ceil_mode=bool(a["ceil_mode"]), count_include_pad=bool(a["count_include_pad"]))


@row("aten.max_pool2d", "aten.max_pool2d_with_indices")
def _max_pool(cx, a):
    k = _pair(a["kernel_size"])
    s = _pair(a["stride"]) if a["stride"] else k
    p = _pair(a["padding"])
    y = cx.emit("maxpool", [a["self"]], kernel=k, stride=s, pad=(p[0], p[1], p[0], p[1]),
                dilation=_pair(a["dilation"]), ceil_mode=bool(a["ceil_mode"]))
    if str(cx.node.target.overloadpacket) == "aten.max_pool2d":
        return y
    return (y, Unavailable("max-pool indices"))


# ---- data movement -----------------------------------------------------------------------------------
@row("aten.view", "aten.reshape", "aten._unsafe_view", "aten.flatten", "aten.unflatten", "aten.squeeze",
     "aten.unsqueeze", "aten.view_as", "aten.reshape_as", "aten._reshape_alias")
def _reshape(cx, a):
    return cx.reshape(_x(a), cx.out_shape)


def _transpose_to(cx, x, perm):
    perm = tuple(int(p) for p in perm)
    return cx.value(x) if perm == tuple(range(len(perm))) else cx.emit("transpose", [x], perm=perm)


@row("aten.permute")
def _permute(cx, a):
    rank = len(cx.shape(a["self"]))
    return _transpose_to(cx, a["self"], [_axis(d, rank) for d in a["dims"]])


@row("aten.transpose", "aten.t")
def _transpose(cx, a):
    rank = len(cx.shape(a["self"]))
    perm = list(range(rank))
    if rank >= 2:
        d0, d1 = (_axis(a["dim0"], rank), _axis(a["dim1"], rank)) if "dim0" in a else (0, 1)
        perm[d0], perm[d1] = perm[d1], perm[d0]
    return _transpose_to(cx, a["self"], perm)


@row("aten.cat", "aten.concat", "aten.concatenate")
def _cat(cx, a):
    xs = [t for t in a["tensors"] if cx.shape(t) != (0,)]          # legacy empty tensors are skipped
    if len(xs) == 1:
        return xs[0]
    return cx.emit("concat", xs, axis=_axis(a["dim"], len(cx.out_shape)))


@row("aten.stack")
def _stack(cx, a):
    ax = _axis(a["dim"], len(cx.out_shape))
    xs = [cx.reshape(t, cx.shape(t)[:ax] + (1,) + cx.shape(t)[ax:], suffix=f"in{i}")
          for i, t in enumerate(a["tensors"])]
    return xs[0] if len(xs) == 1 else cx.emit("concat", xs, axis=ax)


def _tile(cx, x, reps):
    """Repeat ``x`` ``reps[d]`` times along each dim by concatenating copies."""
    for ax, r in enumerate(reps):
        if r > 1:
            x = cx.emit("concat", [x] * r, suffix=f"tile{ax}", axis=ax)
    return cx.reshape(x, cx.out_shape)


@row("aten.upsample_nearest2d")
def _upsample_nearest(cx, a):
    """Nearest upsampling by integer factors: each pixel repeated ``s_h x s_w`` times."""
    x = a["self"] if "self" in a else a["input"]
    n, c, h, w = cx.shape(x)
    oh, ow = cx.out_shape[2:]
    if oh % h or ow % w:
        raise cx.error(f"nearest upsampling {h}x{w} -> {oh}x{ow} needs integer factors")
    x6 = cx.reshape(x, (n, c, h, 1, w, 1), suffix="split")
    return _tile(cx, x6, (1, 1, 1, oh // h, 1, ow // w))


@row("aten.expand")
def _expand(cx, a):
    out = cx.out_shape
    src = cx.shape(a["self"])
    x = cx.reshape(a["self"], (1,) * (len(out) - len(src)) + src, suffix="unsqueezed")
    return _tile(cx, x, [o if s == 1 else 1 for o, s in zip(out, cx.shape(x))])


@row("aten.repeat")
def _repeat(cx, a):
    reps = tuple(int(r) for r in a["repeats"])
    src = cx.shape(a["self"])
    return _tile(cx, cx.reshape(a["self"], (1,) * (len(reps) - len(src)) + src, suffix="unsqueezed"), reps)


def _slice(cx, x, ax: int, start: int, end: int, step: int = 1, suffix: str | None = None) -> str:
    if (start, end, step) == (0, cx.shape(x)[ax], 1):
        return cx.value(x)
    return cx.emit("slice", [x], suffix=suffix, starts=(start,), ends=(end,), axes=(ax,), steps=(step,))


@row("aten.slice")
def _slice_tensor(cx, a):
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    lo, hi, step = slice(a["start"], a["end"], a["step"]).indices(cx.shape(x)[ax])
    return _slice(cx, x, ax, lo, max(hi, lo), step)


@row("aten.narrow")
def _narrow(cx, a):
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    lo = _axis(a["start"], cx.shape(x)[ax] + 1) if a["start"] < 0 else int(a["start"])
    return _slice(cx, x, ax, lo, lo + int(a["length"]))


@row("aten.select")
def _select(cx, a):
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    i = _axis(a["index"], cx.shape(x)[ax])
    return cx.reshape(_slice(cx, x, ax, i, i + 1, suffix="slice"), cx.out_shape)


@row("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unbind", "aten.tensor_split")
def _split(cx, a):
    """Every piece is a slice at the offsets torch recorded (``meta['val']`` is the list of pieces)."""
    x = a["self"]
    ax = _axis(a["dim"], len(cx.shape(x)))
    outs, lo = [], 0
    for i, piece in enumerate(cx.node.meta["val"]):
        shape = tuple(int(d) for d in piece.shape)
        n = 1 if len(shape) < len(cx.shape(x)) else shape[ax]          # unbind drops the dim
        outs.append(cx.reshape(_slice(cx, x, ax, lo, lo + n, suffix=str(i)), shape, suffix=f"{i}.squeezed"))
        lo += n
    return tuple(outs)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _pad(cx, x, pad, mode: str, value):
    rank = len(cx.shape(x))
    if len(pad) % 2 or len(pad) > 2 * rank:
        raise cx.error(f"pad {list(pad)} does not fit a rank-{rank} tensor")
    lo, hi = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):                     # torch: (last_lo, last_hi, prev_lo, prev_hi, ...)
        lo[rank - 1 - i], hi[rank - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    if min(lo + hi) < 0:
        raise cx.error(f"negative padding {list(pad)} is not supported")
    if mode not in _PAD_MODES:
        raise cx.error(f"padding mode {mode!r} is not supported")
    if not any(lo + hi):
        return x
    return cx.emit("pad", [x], pads=tuple(lo + hi), mode=_PAD_MODES[mode],
                   value=float(value or 0.0) if mode == "constant" else None)


row("aten.pad")(lambda cx, a: _pad(cx, a["self"], a["pad"], a["mode"], a["value"]))
row("aten.constant_pad_nd")(lambda cx, a: _pad(cx, a["self"], a["pad"], "constant", a["value"]))
for _d in (1, 2, 3):
    row(f"aten.reflection_pad{_d}d")(lambda cx, a: _pad(cx, a["self"], a["padding"], "reflect", None))
    row(f"aten.replication_pad{_d}d")(lambda cx, a: _pad(cx, a["self"], a["padding"], "replicate", None))
from . import torch_qdq  # noqa: E402,F401  (QAT fake-quant / PT2E rows, registered on import)
