# SPDX-License-Identifier: Apache-2.0
"""Text builder for TOSA v1.0 in MLIR's generic form: SSA tensors, constants (splat or little-endian
hex), shape operands, and the elementwise helpers the lowering in ``codegen.tosa`` uses (TOSA binary
ops need equal ranks; ``tosa.clamp`` takes i8/i16 only, so int32 clamps are ``maximum``/``minimum``)."""
from __future__ import annotations

import numpy as np

NCHW_TO_NHWC, NHWC_TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
DTYPE_NP = {"i8": np.int8, "i16": np.int16, "i32": np.int32}

def ttype(shape, et: str) -> str:
    return f"tensor<{'x'.join(str(int(d)) for d in shape)}{'x' if len(shape) else ''}{et}>"


def dense(a: np.ndarray, et: str) -> str:
    """A ``dense<...>`` attribute: a splat, else little-endian hex of the element type's bytes."""
    a = np.asarray(a)
    t = ttype(a.shape, et)
    flat = a.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return f"dense<{int(flat[0])}> : {t}"
    raw = np.ascontiguousarray(a.astype(DTYPE_NP[et]).astype(np.dtype(DTYPE_NP[et]).newbyteorder("<")))
    return f'dense<"0x{raw.tobytes().hex().upper()}"> : {t}'


class Tensor:
    """An SSA value of the module: name, shape (as stored), element type, NHWC flag (rank 4)."""

    def __init__(self, ssa: str, shape, et: str, nhwc: bool = False):
        self.ssa, self.shape, self.et, self.nhwc = ssa, tuple(int(d) for d in shape), et, nhwc

    @property
    def type(self) -> str:
        return ttype(self.shape, self.et)

class Builder:
    """Appends generic-form TOSA ops to ``lines``; every method returns the result ``Tensor``."""

    def __init__(self):
        self.lines: list[str] = []
        self.count = 0

    # ---- building blocks -----------------------------------------------------------------------
    def op(self, name: str, ins: list, shape, et: str, props: str = "", nhwc: bool = False,
           rtype: str | None = None) -> Tensor:
        r = Tensor(f"%{self.count}", shape, et, nhwc)
        self.count += 1
        p = f" <{{{props}}}>" if props else ""
        args = ", ".join(i.ssa for i in ins)
        types = ", ".join(i.type for i in ins)
        self.lines.append(f'    {r.ssa} = "tosa.{name}"({args}){p} : ({types}) -> {rtype or r.type}')
        return r

    def const(self, a: np.ndarray, et: str) -> Tensor:
        a = np.asarray(a)
        return self.op("const", [], a.shape, et, f"values = {dense(a, et)}")

    def shape_const(self, vals) -> Tensor:
        vals = [int(v) for v in vals]
        t = _Shape(f"%{self.count}", len(vals))
        self.count += 1
        body = f"dense<[{', '.join(map(str, vals))}]>" if vals else "dense<>"
        self.lines.append(f'    {t.ssa} = "tosa.const_shape"() <{{values = {body} : tensor<{len(vals)}xindex>}}> : '
                          f'() -> {t.type}')
        return t

    def zp(self, v: int, et: str) -> Tensor:
        return self.const(np.asarray([v]), et)

    def reshape(self, x: Tensor, shape, nhwc: bool = False) -> Tensor:
        if tuple(shape) == x.shape:
            return Tensor(x.ssa, x.shape, x.et, nhwc)
        return self.op("reshape", [x, self.shape_const(shape)], shape, x.et, nhwc=nhwc)

    def transpose(self, x: Tensor, perm, nhwc: bool = False) -> Tensor:
        if tuple(perm) == tuple(range(len(perm))):
            return Tensor(x.ssa, x.shape, x.et, nhwc)
        shape = [x.shape[p] for p in perm]
        return self.op("transpose", [x], shape, x.et, f"perms = array<i32: {', '.join(map(str, perm))}>", nhwc)

    def cast(self, x: Tensor, et: str) -> Tensor:
        return x if x.et == et else self.op("cast", [x], x.shape, et, nhwc=x.nhwc)

    def binary(self, name: str, a: Tensor, b: Tensor) -> Tensor:
        shape = np.broadcast_shapes(a.shape, b.shape)
        return self.op(name, [a, b], shape, a.et, nhwc=a.nhwc or b.nhwc)

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        shape = np.broadcast_shapes(a.shape, b.shape)
        return self.op("mul", [a, b, self.zp(0, "i8")], shape, a.et, nhwc=a.nhwc or b.nhwc)

    def scalar(self, x: Tensor, v: int) -> Tensor:
        """A rank-matching broadcast constant (TOSA binary ops need equal ranks)."""
        return self.const(np.full((1,) * len(x.shape), v), x.et)

    def clamp(self, x: Tensor, lo, hi) -> Tensor:
        """``min(max(x, lo), hi)``: one ``tosa.clamp`` for scalar bounds, else maximum/minimum."""
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        dmin, dmax = -(1 << (_bits(x.et) - 1)), (1 << (_bits(x.et) - 1)) - 1
        scalar = np.all(lo == lo.reshape(-1)[0]) and np.all(hi == hi.reshape(-1)[0])
        if scalar and x.et != "i32":                   # tosa.clamp takes i8 / i16 only (TOSA profiles)
            lo_v, hi_v = max(int(lo.reshape(-1)[0]), dmin), min(int(hi.reshape(-1)[0]), dmax)
            if (lo_v, hi_v) == (dmin, dmax):
                return x
            return self.op("clamp", [x], x.shape, x.et, f"max_val = {hi_v} : {x.et}, min_val = {lo_v} : {x.et}",
                           x.nhwc)
        if scalar:
            lo, hi = lo.reshape(-1)[:1], hi.reshape(-1)[:1]
        x = self.binary("maximum", x, self.const(self.chan(np.clip(lo, dmin, dmax), x), x.et))
        return self.binary("minimum", x, self.const(self.chan(np.clip(hi, dmin, dmax), x), x.et))

    def chan(self, a: np.ndarray, x: Tensor) -> np.ndarray:
        """A constant broadcastable to the graph-layout tensor, in ``x``'s stored layout and rank."""
        a = np.asarray(a)
        a = a.reshape((1,) * (len(x.shape) - a.ndim) + a.shape)
        if x.nhwc and a.ndim == 4:
            a = a.transpose(NCHW_TO_NHWC)
        return a


class _Shape:
    """A ``!tosa.shape<n>`` SSA value."""

    def __init__(self, ssa: str, n: int):
        self.ssa, self.shape, self.et, self.nhwc = ssa, (n,), "index", False
        self.type = f"!tosa.shape<{n}>"


def _bits(et: str) -> int:
    return int(et[1:])
