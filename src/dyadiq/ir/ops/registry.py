# SPDX-License-Identifier: Apache-2.0
"""The op registry: each op declares its arity, its type inference, its interpreter kernel and its traits
in one place.

``infer(types, attrs) -> [TensorType]`` and ``kernel(arrays, attrs) -> [ndarray]``; a kernel computes in
the input's dtype (float ops) or exactly in integers (integer ops). ``register`` rejects duplicate names
and unknown trait values.

Traits (what passes, planners and code generators ask of an op; every op set they use is derived here
with ``ops_with``, never written out as a list of names):

- ``moves_data``: every output element is one of the input elements (reshape, transpose, slice, pad,
  maxpool, concat, ...): it runs unchanged on integer codes.
- ``quant``: how its output QuantType is chosen: ``"own"`` (calibrated), ``"inherit"`` (its data input's),
  ``"shared"`` (concat: one QuantType for its inputs and output where possible).
- ``clamp``: clamps its one non-constant input (relu, clip, minimum/maximum with a constant bound): fused
  into the requantize of the producer before it.
- ``fusable``: an accumulating op whose output can absorb a following clamp chain (conv2d, linear, add, ...).
- ``pointwise``: a unary elementwise function of its input (one output element from one input element):
  integerize lowers it to a lookup table over the input codes.
- ``weight`` / ``bias``: input positions of the weight constant and of the optional bias (layers).
- ``acc_bound`` (integer ops): ``(ranges, consts, attrs) -> int``, the largest ``|accumulator|`` over the
  operands' integer ranges; the integer verifier (``ir.verify_integer``) proves it below the accumulator's
  dtype limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...errors import IRError, VerifyError
from ..types import TensorType

InferFn = Callable[[Sequence[TensorType], dict], list[TensorType]]
KernelFn = Callable[[Sequence[np.ndarray], dict], list[np.ndarray]]
BoundFn = Callable[[Sequence[tuple[int, int]], Sequence[np.ndarray | None], dict], int]
QUANT_RULES = ("own", "inherit", "shared")


@dataclass(frozen=True)
class OpDef:
    """What the compiler knows about one op."""

    name: str
    arity: tuple[int, int]          # (min, max) number of inputs
    infer: InferFn
    kernel: KernelFn
    integer: bool = False           # True for ops of the integer (post-integerize) dialect
    doc: str = ""
    moves_data: bool = False        # traits: see the module docstring
    quant: str = "own"
    clamp: bool = False
    pointwise: bool = False
    fusable: bool = False
    weight: int | None = None
    bias: int | None = None
    acc_bound: BoundFn | None = None
    torch: Callable | None = None   # torch evaluation ``(node, graph) -> fn(tensors)`` (else ir.ops.torch_kernels)

    def __post_init__(self):
        if self.quant not in QUANT_RULES:
            raise IRError(f"op {self.name!r}: quant rule {self.quant!r} is not one of {QUANT_RULES}")
        for pos in (self.weight, self.bias):
            if pos is not None and not 0 <= pos < self.arity[1]:
                raise IRError(f"op {self.name!r}: input position {pos} outside its arity {self.arity}")


OPS: dict[str, OpDef] = {}


def register(name: str, arity: int | tuple[int, int], *, integer: bool = False, doc: str = "", **traits):
    """Decorator over a class-less pair: ``@register("relu", 1, clamp=True)`` on a function returning
    (infer, kernel); ``traits`` are OpDef fields (see the module docstring)."""
    lo_hi = (arity, arity) if isinstance(arity, int) else arity
    unknown = set(traits) - TRAITS
    if unknown:
        raise IRError(f"op {name!r}: unknown trait(s) {sorted(unknown)} (known: {sorted(TRAITS)})")

    def deco(make: Callable[[], tuple[InferFn, KernelFn]]):
        if name in OPS:
            raise IRError(f"op {name!r} registered twice")
        infer, kernel = make()
        OPS[name] = OpDef(name, lo_hi, infer, kernel, integer, doc or (make.__doc__ or "").strip(), **traits)
        return make
    return deco


TRAITS = frozenset({"moves_data", "quant", "clamp", "pointwise", "fusable", "weight", "bias", "acc_bound", "torch"})


def ops_with(**want) -> frozenset[str]:
    """Names of the registered ops whose traits equal ``want`` (``weight=...`` : any position when True)."""
    unknown = set(want) - TRAITS - {"integer"}
    if unknown:
        raise IRError(f"unknown trait(s) {sorted(unknown)}")

    def ok(d: OpDef) -> bool:
        for k, v in want.items():
            have = getattr(d, k)
            if v is True and k in ("weight", "bias", "acc_bound"):
                if have is None:
                    return False
            elif have != v:
                return False
        return True
    return frozenset(n for n, d in OPS.items() if ok(d))


def is_weighted(op: str) -> bool:
    """A layer with a weight input (conv2d, linear; qconv2d, qlinear)."""
    d = OPS.get(op)
    return d is not None and d.weight is not None


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
    except (IRError, KeyError, ValueError, TypeError, IndexError, ArithmeticError) as e:
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
