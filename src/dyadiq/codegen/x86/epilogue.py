# SPDX-License-Identifier: Apache-2.0
"""The fused epilogue of a fast conv kernel: bias, dyadic requantize, optional residual ``qadd``.

Per output channel ``o`` with the raw accumulator ``acc = sum((x - x_zp) * w)``:

    v = acc + (b[o] - in_zp)
    y = clamp(((v * m[o] + 2^(s[o]-1)) >> s[o]) + out_zp, lo[o], hi[o])

When every ``s >= 32`` the shift is done as ``hi32(v * m + 2^(s-1)) >> (s - 32)`` (floor division
composes), so only one signed 32x32->64 product per value is needed (``vpmuldq``); channels with
``s < 32`` shift ``acc`` left by ``32 - s`` first when that provably fits int32 (``Epilogue.args``).
With a residual ``qadd`` (``y`` is its ``a`` or ``b`` operand, ``r`` the other):

    z = clamp((((y - y_zp) * y_m + (r - r_zp) * r_m + 2^(shift-1)) >> shift) + z_zp, qmin, qmax)

exactly as the interpreter's ``requantize`` and ``qadd`` kernels (one rounding each).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Node

TVM_INT = {"i8": "int8", "u8": "uint8", "i16": "int16", "u16": "uint16", "i32": "int32"}


@dataclass(frozen=True)
class Residual:
    """A fused ``qadd`` (``mine`` = attrs of the conv's operand, ``other`` = the skip operand's)."""
    name: str            # the skip value
    y_zp: int
    y_m: int
    r_zp: int
    r_m: int
    shift: int
    out_zp: int
    qmin: int
    qmax: int
    dtype: str


@dataclass
class Epilogue:
    """Per-channel requantize parameters (numpy) and the output dtype."""
    bias: np.ndarray         # int64 [O]: b - in_zp
    m: np.ndarray            # int64 [O]
    s: np.ndarray            # int64 [O]
    lo: np.ndarray           # int64 [O]
    hi: np.ndarray           # int64 [O]
    out_zp: int
    dtype: str               # requantize output dtype (dyadiq name)
    residual: Residual | None = None

    def padded(self, n: int) -> "Epilogue":
        """The same epilogue with its per-channel arrays repeated from the last channel up to ``n`` (a kernel
        computing whole vectors of padded channels then takes the same ``args`` mode; padded channels are
        never written)."""
        pad = lambda a: np.pad(a, (0, n - a.size), mode="edge")    # noqa: E731
        return Epilogue(pad(self.bias), pad(self.m), pad(self.s), pad(self.lo), pad(self.hi), self.out_zp,
                        self.dtype, self.residual)

    @property
    def out_dtype(self) -> str:
        return self.residual.dtype if self.residual else self.dtype

    def args(self, acc_bound: float) -> tuple[list[np.ndarray], str]:
        """(constant arrays passed to the kernel, shift mode) for raw accumulators ``|acc| <= acc_bound``.

        ``"hi"``: every ``s >= 32``; ``"hiz"``: the same with ``out_zp`` folded into ``rb`` (``(h >> sh) + zp
        == (h + (zp << sh)) >> sh`` for floor shifts: ``rb + (zp << s)``), when the 64-bit sum provably
        stays in int64; ``"pre"``: some ``s < 32`` and ``|v| * 2^(32-s) < 2^31``, so ``acc`` is
        first shifted left by ``t = 32 - s`` (numerator and denominator times ``2^t``: exact) and the
        high word is used again; ``"wide"``: a 64-bit shift by ``s``."""
        m, s = self.m, self.s
        t = np.maximum(0, 32 - s)
        v_max = acc_bound + float(np.abs(self.bias).max(initial=0))
        mode = "hi" if not t.any() else "pre" if v_max * 2.0 ** int(t.max()) < 2**31 - 1 else "wide"
        if mode == "wide":
            t = np.zeros_like(s)
        rb = ((self.bias * m) << t) + (np.int64(1) << (s + t - 1))     # |.| < 2^62 + 2^61: no overflow
        if mode == "hi":
            rbz = rb.astype(object) + (self.out_zp << s.astype(object))
            top = acc_bound * float(np.abs(m).max(initial=0)) + float(max((abs(int(v)) for v in rbz), default=0))
            if top < 2.0**62:        # the sum fits int64, so its high word (h + (zp << sh)) fits int32
                mode, rb = "hiz", rbz.astype(np.int64)
        sh = (s + t - 32).astype(np.int32) if mode != "wide" else s.astype(np.int64)
        arrs = [m.astype(np.int32), rb.astype(np.int64), sh, self.lo.astype(np.int32), self.hi.astype(np.int32)]
        if mode == "pre":
            arrs.insert(0, t.astype(np.int32))
        return arrs, mode


def _const(g: Graph, n: Node, i: int) -> np.ndarray | None:
    return np.asarray(g.const(n.inputs[i]), np.int64) if g.is_const(n.inputs[i]) else None


def _per_channel(a: np.ndarray | None, o: int, axis: int, rank: int) -> np.ndarray | None:
    """``a`` (numpy-broadcast against a rank-``rank`` tensor) as a length-``o`` vector along ``axis``, or
    None when it varies along another axis or is not a constant."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.size == 1:
        return np.full(o, a.reshape(-1)[0], np.int64)
    if a.ndim > rank:
        return None
    shape = (1,) * (rank - a.ndim) + a.shape
    if shape[axis % rank] != o or a.size != o:
        return None
    return a.reshape(-1).astype(np.int64)


def make_epilogue(g: Graph, conv: Node, rq: Node, add: Node | None, o: int, axis: int) -> Epilogue | None:
    """The epilogue of ``conv -> rq [-> add]`` (``o`` output channels on ``axis`` of the acc), or None
    when a parameter is not per-channel."""
    if rq.attr("dtype") not in TVM_INT or (add is not None and add.attr("dtype") not in TVM_INT):
        return None
    rank = g.type_of(conv.name).rank
    bias = np.zeros(o, np.int64)
    if len(conv.inputs) == 3:                 # the op's bias is one value per output channel
        b = _const(g, conv, 2)
        if b is None or b.size != o:
            return None
        bias += b.reshape(-1)
    bias -= int(rq.attr("in_zp", 0))
    m, s = (_per_channel(_const(g, rq, i), o, axis, rank) for i in (1, 2))
    lo = np.full(o, int(rq.attr("qmin")), np.int64)
    hi = np.full(o, int(rq.attr("qmax")), np.int64)
    if len(rq.inputs) >= 4:
        c = _per_channel(_const(g, rq, 3), o, axis, rank)
        lo = None if c is None else np.maximum(lo, c)
    if len(rq.inputs) == 5:
        c = _per_channel(_const(g, rq, 4), o, axis, rank)
        hi = None if c is None else np.minimum(hi, c)
    if any(v is None for v in (m, s, lo, hi)) or np.any(s < 1) or np.any(s > 62):
        return None
    res = None
    if add is not None:
        mine = "a" if add.inputs[0] == rq.name else "b"
        other = "b" if mine == "a" else "a"
        res = Residual(add.inputs[1] if mine == "a" else add.inputs[0], int(add.attr(f"{mine}_zp")),
                       int(add.attr(f"{mine}_m")), int(add.attr(f"{other}_zp")), int(add.attr(f"{other}_m")),
                       int(add.attr("shift")), int(add.attr("out_zp")), int(add.attr("qmin")),
                       int(add.attr("qmax")), add.attr("dtype"))
    return Epilogue(bias, m, s, lo, hi, int(rq.attr("out_zp", 0)), rq.attr("dtype"), res)


def te_epilogue(ep: Epilogue, mode: str, split: bool = False):
    """(placeholders, f(acc_i32, o, skip_value_or_None) -> output expr) for ``ep`` in shift ``mode``
    (``Epilogue.args``); with ``split`` (``"hi"``/``"hiz"`` modes only), (placeholders, high(acc_i32, o) -> int32,
    rest(high_value, o, skip) -> output expr): ``high`` is the 64-bit product's high word, computed by its
    own stage so that it can be tensorized (``intrin.HI32``).

    ``acc`` must be the raw accumulator as an exact int32 (callers prove ``|acc| < 2^31``); then
    ``v * m + 2^(s-1) == acc * m + rb`` with ``rb = (b - in_zp) * m + 2^(s-1)``: one ``vpmuldq``."""
    from tvm import te, tirx
    o_ = ep.m.size
    pre = te.placeholder((o_,), "int32", name="pre") if mode == "pre" else None
    m = te.placeholder((o_,), "int32", name="mult")
    rb = te.placeholder((o_,), "int64", name="rb")
    sh = te.placeholder((o_,), "int64" if mode == "wide" else "int32", name="shift")
    lo = te.placeholder((o_,), "int32", name="lo")
    hi = te.placeholder((o_,), "int32", name="hi")
    i64 = lambda v: tirx.const(int(v), "int64")     # noqa: E731
    i32 = lambda v: tirx.const(int(v), "int32")     # noqa: E731

    def high(acc, o):
        """The high word of ``acc * m + rb`` (``"hi"`` mode: ``intrin.HI32``'s expression)."""
        return ((acc.astype("int64") * m[o].astype("int64") + rb[o]) >> i64(32)).astype("int32")

    # a clamp bound shared by every channel is a constant (LLVM then saturates in the narrowing store)
    lo_of = (lambda o: i32(ep.lo[0])) if np.all(ep.lo == ep.lo[0]) else (lambda o: lo[o])    # noqa: E731
    hi_of = (lambda o: i32(ep.hi[0])) if np.all(ep.hi == ep.hi[0]) else (lambda o: hi[o])    # noqa: E731
    zp = 0 if mode == "hiz" else ep.out_zp

    def rest(h, o, skip):
        """The epilogue after ``high`` (``"hi"``/``"hiz"`` modes)."""
        return finish(tirx.max(tirx.min((h >> sh[o]) + i32(zp), hi_of(o)), lo_of(o)), skip)

    def f(acc, o, skip):
        if pre is not None:
            acc = acc << pre[o]
        if mode != "wide":
            return rest(high(acc, o), o, skip)
        y = ((acc.astype("int64") * m[o].astype("int64") + rb[o]) >> sh[o]) + i64(ep.out_zp)
        y = tirx.max(tirx.min(y, hi_of(o).astype("int64")), lo_of(o).astype("int64")).astype("int32")
        return finish(y, skip)

    def finish(y, skip):
        r = ep.residual
        if r is None:
            return y.astype(TVM_INT[ep.dtype])
        z = (y - i32(r.y_zp)).astype("int64") * i64(r.y_m) + (skip.astype("int32") - i32(r.r_zp)).astype(
            "int64") * i64(r.r_m) + i64(1 << (r.shift - 1))
        z = (z >> i64(r.shift)).astype("int32") + i32(r.out_zp)
        return tirx.max(tirx.min(z, i32(r.qmax)), i32(r.qmin)).astype(TVM_INT[r.dtype])
    params = [p for p in (pre, m, rb, sh, lo, hi) if p is not None]
    if split:
        assert mode in ("hi", "hiz")
        return params, high, rest
    return params, f
