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


def _dims(dims, rank: int) -> tuple[int, ...]:
    """A reduction's ``dim`` argument (None, an int, or a possibly empty list: all dims) as sorted axes."""
    if dims is None or (not isinstance(dims, int) and len(dims) == 0):
        return tuple(range(rank))
    return tuple(sorted({_axis(d, rank) for d in ((dims,) if isinstance(dims, int) else dims)}))


# ---- the op families: importing them runs their @row registrations ---------------------------------
from . import torch_ops_elementwise  # noqa: E402,F401  (elementwise, clamp, binary arithmetic)
from . import torch_ops_linear  # noqa: E402,F401  (convolution, linear, matmul)
from . import torch_ops_norm  # noqa: E402,F401  (normalization, softmax, attention, embedding, index)
from . import torch_ops_pool  # noqa: E402,F401  (pooling and reductions)
from . import torch_ops_movement  # noqa: E402,F401  (identity-like ops and data movement)
from . import torch_ops_coverage  # noqa: E402,F401  (resize, conv_transpose, logic, norms: issue 15)
from . import torch_qdq  # noqa: E402,F401  (QAT fake-quant / PT2E rows, registered on import)
