# SPDX-License-Identifier: Apache-2.0
"""The op registry: each op declares its arity, its type inference and its interpreter kernel in one place.

``infer(types, attrs) -> [TensorType]`` and ``kernel(arrays, attrs) -> [ndarray]``; a kernel computes in
the input's dtype (float ops) or exactly in integers (integer ops). ``register`` rejects duplicate names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...errors import IRError, VerifyError
from ..types import TensorType

InferFn = Callable[[Sequence[TensorType], dict], list[TensorType]]
KernelFn = Callable[[Sequence[np.ndarray], dict], list[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    """What the compiler knows about one op."""

    name: str
    arity: tuple[int, int]          # (min, max) number of inputs
    infer: InferFn
    kernel: KernelFn
    integer: bool = False           # True for ops of the integer (post-integerize) dialect
    doc: str = ""


OPS: dict[str, OpDef] = {}


def register(name: str, arity: int | tuple[int, int], *, integer: bool = False, doc: str = ""):
    """Decorator over a class-less pair: ``@register("relu", 1)`` on a function returning (infer, kernel)."""
    lo_hi = (arity, arity) if isinstance(arity, int) else arity

    def deco(make: Callable[[], tuple[InferFn, KernelFn]]):
        if name in OPS:
            raise IRError(f"op {name!r} registered twice")
        infer, kernel = make()
        OPS[name] = OpDef(name, lo_hi, infer, kernel, integer, doc or (make.__doc__ or "").strip())
        return make
    return deco


def op_def(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise IRError(f"unknown op {name!r}") from None


def infer_types(g, n) -> list[TensorType]:
    """Output types of node ``n`` in graph ``g`` (raises VerifyError naming the node)."""
    d = OPS.get(n.op)
    if d is None:
        raise VerifyError(f"unknown op {n.op!r}", node=n)
    lo, hi = d.arity
    if not lo <= len(n.inputs) <= hi:
        raise VerifyError(f"takes {lo}..{hi} inputs, got {len(n.inputs)}", node=n)
    try:
        return d.infer([g.type_of(i) for i in n.inputs], n.attr_dict)
    except (IRError, KeyError, ValueError, TypeError, IndexError) as e:
        raise VerifyError(f"type inference failed: {e}", node=n) from None


# ---- shared helpers for infer functions ---------------------------------------------------------
def same_dtype(types: Sequence[TensorType]) -> str:
    dts = {t.dtype for t in types}
    if len(dts) != 1:
        raise IRError(f"operands have different dtypes {sorted(dts)}")
    return types[0].dtype


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise IRError(f"shapes {list(shapes)} do not broadcast") from None


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise IRError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0
