# SPDX-License-Identifier: Apache-2.0
"""Exact x86 dot-product tensor intrinsics for TVM (registered once, on first use).

- ``dq_pmaddwd_8x2`` (AVX2): ``C[i] += sum_{k<2} i32(A[k]) * i32(B[i, k])`` for ``i < 8`` with int16
  ``A`` (one pair, broadcast as an int32) and ``B`` ([8, 2] int16): one ``vpmaddwd`` + ``vpaddd``.
  Exact: each pair sum is at most ``2 * 2^15 * 2^15 = 2^31`` only when all four operands are -2^15;
  dyadiq's operands are ``x - x_zp`` in [-255, 255] and weights in [-128, 127].
- ``dq_pmaddwd_8x2_w8``: the same with int8 ``B`` (half the memory traffic, for layers that read each weight
  for few pixels), sign-extended in the register (``vpmovsxbw``) before the ``vpmaddwd``: the same products.
- ``dq_vnni_8x4`` (AVX-512 VNNI + VL, or AVX-VNNI): ``C[i] += sum_{k<4} i32(A[k]) * i32(B[i, k])`` with
  uint8 ``A`` and int8 ``B`` ([8, 4]): one 256-bit ``vpdpbusd`` (no saturation: the non-``s`` form).
- ``dq_vnni_16x4`` (AVX-512 VNNI): the same on 16 lanes (``B`` [16, 4]), one 512-bit ``vpdpbusd``.

- ``dq_pmaddubsw_8x4`` (AVX2, pairable weights): the same contract as ``dq_vnni_8x4`` (uint8 ``A``, int8
  ``B`` [8, 4]) as ``vpmaddubsw`` (u8 x s8 -> int16 pair sums, SATURATING) + ``vpmaddwd`` with ones (int16
  pairs -> int32) + ``vpaddd``. Exact only when no pair sum leaves int16: ``a0 b0 + a1 b1`` lies in
  ``[-255 (b0- + b1-), 255 (b0+ + b1+)]``, inside int16 when both same-sign sums are at most 128 (always for
  weights in [-64, 64]). Callers must check ``pairing.pairable`` at compile time; other weights keep
  ``dq_pmaddwd_8x2``.
- ``dq_*_lanes_u8_N`` (depthwise): ``C[i] += A[i] * B[i]`` for ``i < N``, uint8 ``A``, int16 ``B``: both are
  zero-extended into int32 lanes (``vpmovzxbd`` from memory for ``A``), so the int16-pair multiply-add of the
  two seen as int16 pairs is ``lo(A) * B + 0 * 0 = A * B``: ``vpdpwssds`` (AVX-512 VNNI zmm, or ymm with
  AVX-VNNI / AVX-512 VNNI + VL), or ``vpmaddwd`` + ``vpaddd`` (AVX2). The saturating form is used because
  LLVM's machine combiner splits the non-saturating ``vpdpwssd`` of a long accumulator chain back into
  ``vpmaddwd`` + ``vpaddd`` (twice the vector instructions); it equals the exact sum whenever no partial sum
  leaves int32, which the caller proves (``255 * sum |w| < 2^31`` bounds every partial sum).
- ``dq_vnni_rows_16`` (depthwise, AVX-512 VNNI + VBMI): ``C[i] += sum_{r<4} A[r, 0, i] * B[i, r]`` for
  ``i < 16``: four rows of 16 uint8 channels (``A``: one column of a ``[rows, columns, channels]`` region)
  interleaved into the lanes by one ``vpermb`` whose index is an operand ``P`` (``interleave_index``; LLVM
  rewrites a constant-index ``vpermb`` into eleven unpack/insert instructions), then one zmm ``vpdpbusd``
  with the int8 ``B`` ([16, 4]: four kernel rows of each channel), non-saturating, exact when the sum fits
  int32.
- ``dq_hi32_mul_N`` (epilogue, any AVX2/AVX-512 host): ``R[i] = i32((i64(A[i]) * i64(M[i]) + RB[i]) >> 32)``
  for ``i < N`` (8 or 16) with int32 ``A`` and ``M``, int64 ``RB``: the even lanes of ``A`` and ``M`` (seen as
  int64 pairs, sign-extended in place) and the odd lanes (the pairs' high halves) each take one ``vpmuldq``,
  the two high words are merged by one permute or blend. Exact (the same 64-bit sums); LLVM's code for the
  lane-wise form widened each half to int64 and narrowed back (``vpmovzxdq``, ``vextracti64x4``,
  ``vpmovqd``, ``vinserti64x4``): 11 instructions per zmm where this takes 6.
The accumulator ``C`` is a small buffer allocated per micro-kernel (stack, registers after unrolling).
"""
from __future__ import annotations

PMADDWD = "dq_pmaddwd_8x2"
PMADDWD_W8 = "dq_pmaddwd_8x2_w8"
VNNI = "dq_vnni_8x4"
VNNI512 = "dq_vnni_16x4"
LANEWISE = {"avx2": "dq_pmaddwd_lanes_u8_8", "vnni": "dq_vpdpwssds_lanes_u8_8", "vnni512": "dq_vpdpwssds_lanes_u8_16"}
PMADDUBSW = "dq_pmaddubsw_8x4"
HI32 = {8: "dq_hi32_mul_8", 16: "dq_hi32_mul_16"}
ROWS_DOT = {16: "dq_vnni_rows_16"}
_done: set[str] = set()


def register(name: str) -> str:
    """Register the intrinsic ``name`` (idempotent) and return it."""
    if name in _done:
        return name
    from tvm.s_tir import TensorIntrin
    desc, impl = {PMADDWD: _pmaddwd, PMADDWD_W8: lambda: _pmaddwd("int8"), VNNI: _vnni,
                   VNNI512: lambda: _vnni(16), PMADDUBSW: _pmaddubsw,
                   LANEWISE["avx2"]: lambda: _lanewise(8, False), LANEWISE["vnni"]: lambda: _lanewise(8, True),
                   LANEWISE["vnni512"]: lambda: _lanewise(16, True),
                   HI32[8]: lambda: _hi32(8), HI32[16]: lambda: _hi32(16),
                   ROWS_DOT[16]: lambda: _rows_dot(16)}[name]()
    TensorIntrin.register(name, desc, impl, override=True)
    _done.add(name)
    return name


def _dot_desc(a_dtype: str, b_dtype: str, k: int, n: int = 8):
    """Semantics shared by the intrinsics: ``C[i] += sum_k A[k] * B[i, k]`` in int32, ``n`` lanes."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((k,), a_dtype, offset_factor=1), B: T.Buffer((n, k), b_dtype, offset_factor=1),
             C: T.Buffer((n,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:n], A[0:k], B[0:n, 0:k])
            T.writes(C[0:n])
            for i in T.serial(0, n):
                for j in T.serial(0, k):
                    with T.sblock("update"):
                        vi, vj = T.axis.remap("SR", [i, j])
                        C[vi] = C[vi] + T.cast(A[vj], "int32") * T.cast(B[vi, vj], "int32")
    return desc


def _pmaddwd(b_dtype: str = "int16"):
    """``vpmaddwd`` on an int16 pair of ``A`` and ``B`` rows stored as ``b_dtype`` (int8 rows are
    sign-extended to int16 in the register: ``vpmovsxbw``)."""
    from tvm.script import tirx as T

    desc = _dot_desc("int16", b_dtype, 2)

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), "int16", offset_factor=1), B: T.Buffer((8, 2), b_dtype, offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8),
                              dtype="int16x16"),
                T.cast(B.vload([0, 0], dtype=f"{b_dtype}x16"), "int16x16"), dtype="int32x8")
    return desc, impl


def _vnni(n: int = 8):
    """``vpdpbusd`` on ``n`` = 8 (ymm) or 16 (zmm) lanes."""
    from tvm.script import tirx as T

    desc = _dot_desc("uint8", "int8", 4, n)
    llvm = f"llvm.x86.avx512.vpdpbusd.{32 * n}"

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((n, 4), "int8", offset_factor=1),
             C: T.Buffer((n,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:n], A[0:4], B[0:n, 0:4])
            T.writes(C[0:n])
            C[T.ramp(T.int32(0), 1, n)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm), C.vload([0], dtype=f"int32x{n}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), n),
                              dtype=f"int8x{4 * n}"),
                B.vload([0, 0], dtype=f"int8x{4 * n}"), dtype=f"int32x{n}")
    return desc, impl


def _pmaddubsw():
    from tvm.script import tirx as T
    desc = _dot_desc("uint8", "int8", 4)

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((8, 4), "int8", offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8),
                                  dtype="int8x32"),
                    B.vload([0, 0], dtype="int8x32"), dtype="int16x16"),
                T.broadcast(T.int16(1), 16), dtype="int32x8")
    return desc, impl


def _lanewise(n: int, vnni: bool):
    """``C[i] += A[i] * B[i]`` on ``n`` int32 lanes (``A`` uint8, ``B`` int16)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((n,), "uint8", offset_factor=1), B: T.Buffer((n,), "int16", offset_factor=1),
             C: T.Buffer((n,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:n], A[0:n], B[0:n])
            T.writes(C[0:n])
            for i in T.serial(0, n):
                with T.sblock("update"):
                    vi = T.axis.remap("S", [i])
                    C[vi] = C[vi] + T.cast(A[vi], "int32") * T.cast(B[vi], "int32")

    llvm = f"llvm.x86.avx512.vpdpwssds.{32 * n}" if vnni else "llvm.x86.avx2.pmadd.wd"

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((n,), "uint8", offset_factor=1), B: T.Buffer((n,), "int16", offset_factor=1),
             C: T.Buffer((n,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:n], A[0:n], B[0:n])
            T.writes(C[0:n])
            # both operands zero-extended into int32 lanes: the pair product is lo(a) * lo(b) + 0 * 0
            a = T.reinterpret(T.cast(A.vload([0], dtype=f"uint8x{n}"), f"uint32x{n}"), dtype=f"int16x{2 * n}")
            b = T.reinterpret(T.cast(T.reinterpret(B.vload([0], dtype=f"int16x{n}"), dtype=f"uint16x{n}"),
                                     f"uint32x{n}"), dtype=f"int16x{2 * n}")
            if vnni:
                C[T.ramp(T.int32(0), 1, n)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(llvm), C.vload([0], dtype=f"int32x{n}"), a, b, dtype=f"int32x{n}")
            else:
                C[T.ramp(T.int32(0), 1, n)] = C.vload([0], dtype=f"int32x{n}") + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(llvm), a, b, dtype=f"int32x{n}")
    return desc, impl


def _rows_dot(n: int):
    """``C[i] += sum_r A[r, 0, i] * B[i, r] (+ (P[i, r] & 0))``: ``A`` is four rows of ``n`` uint8 channels
    (one column of an NHWC region, any strides: four loads, three inserts), interleaved into the lanes by
    one ``vpermb`` with the index ``P`` (``interleave_index``; read from memory, so LLVM keeps the
    ``vpermb``: it rewrites a constant-index one into eleven unpack/insert instructions), then one zmm
    ``vpdpbusd`` (``n`` = 16)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, p: T.handle, b: T.handle, c: T.handle) -> None:
        s0, s1 = T.int32(), T.int32()
        A = T.match_buffer(a, (4, 1, n), "uint8", strides=[s0, s1, 1], offset_factor=1)
        P = T.match_buffer(p, (n, 4), "uint8", offset_factor=1)
        B = T.match_buffer(b, (n, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (n,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:n], A[0:4, 0:1, 0:n], B[0:n, 0:4], P[0:n, 0:4])
            T.writes(C[0:n])
            for i in T.serial(0, n):
                for r in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vr = T.axis.remap("SR", [i, r])
                        C[vi] = C[vi] + (T.cast(A[vr, 0, vi], "int32") * T.cast(B[vi, vr], "int32")
                                         + T.cast(T.bitwise_and(P[vi, vr], T.uint8(0)), "int32"))

    w = 4 * n
    dot = f"llvm.x86.avx512.vpdpbusd.{32 * n}"
    perm = f"llvm.x86.avx512.permvar.qi.{8 * w}"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, p: T.handle, b: T.handle, c: T.handle) -> None:
        s0, s1 = T.int32(), T.int32()
        A = T.match_buffer(a, (4, 1, n), "uint8", strides=[s0, s1, 1], offset_factor=1)
        P = T.match_buffer(p, (n, 4), "uint8", offset_factor=1)
        B = T.match_buffer(b, (n, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (n,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:n], A[0:4, 0:1, 0:n], B[0:n, 0:4], P[0:n, 0:4])
            T.writes(C[0:n])
            C[T.ramp(T.int32(0), 1, n)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(dot), C.vload([0], dtype=f"int32x{n}"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(perm),
                    T.reinterpret(T.Shuffle([A.vload([r, 0, 0], dtype=f"uint8x{n}") for r in range(4)],
                                            list(range(w))), dtype=f"int8x{w}"),
                    T.reinterpret(P.vload([0, 0], dtype=f"uint8x{w}"), dtype=f"int8x{w}"), dtype=f"int8x{w}"),
                B.vload([0, 0], dtype=f"int8x{w}"), dtype=f"int32x{n}")
    return desc, impl


def interleave_index(n: int):
    """The ``P`` operand of ``dq_vnni_rows_16``: ``[n, 4]`` uint8 with ``P[c, r] = r * n + c``."""
    import numpy as np
    return (np.arange(4)[None, :] * n + np.arange(n)[:, None]).astype(np.uint8)


def _hi32(n: int):
    """``R[i] = i32((i64(A[i]) * i64(M[i]) + RB[i]) >> 32)`` on ``n`` lanes, even and odd lanes apart."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((n,), "int32", offset_factor=1), M: T.Buffer((n,), "int32", offset_factor=1),
             RB: T.Buffer((n,), "int64", offset_factor=1), R: T.Buffer((n,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(A[0:n], M[0:n], RB[0:n])
            T.writes(R[0:n])
            for i in T.serial(0, n):
                with T.sblock("hi32"):
                    vi = T.axis.remap("S", [i])
                    R[vi] = T.Cast("int32", T.shift_right(T.Cast("int64", A[vi]) * T.Cast("int64", M[vi]) + RB[vi],
                                                          T.int64(32)))

    h = n // 2

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((n,), "int32", offset_factor=1), M: T.Buffer((n,), "int32", offset_factor=1),
             RB: T.Buffer((n,), "int64", offset_factor=1), R: T.Buffer((n,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(A[0:n], M[0:n], RB[0:n])
            T.writes(R[0:n])
            # one expression: TVMScript turns each assignment into a vector let, which TVM allocates
            R[T.ramp(T.int32(0), 1, n)] = T.reinterpret(T.bitwise_or(
                T.bitwise_and(T.shift_right(
                    T.shift_right(T.shift_left(T.reinterpret(A.vload([0], dtype=f"int32x{n}"), dtype=f"int64x{h}"),
                                               T.broadcast(T.int64(32), h)), T.broadcast(T.int64(32), h))
                    * T.shift_right(T.shift_left(T.reinterpret(M.vload([0], dtype=f"int32x{n}"), dtype=f"int64x{h}"),
                                                 T.broadcast(T.int64(32), h)), T.broadcast(T.int64(32), h))
                    + T.Shuffle([RB.vload([0], dtype=f"int64x{h}"), RB.vload([h], dtype=f"int64x{h}")],
                                [2 * j for j in range(h)]), T.broadcast(T.int64(32), h)),
                    T.broadcast(T.int64(0xFFFFFFFF), h)),
                T.bitwise_and(
                    T.shift_right(T.reinterpret(A.vload([0], dtype=f"int32x{n}"), dtype=f"int64x{h}"),
                                  T.broadcast(T.int64(32), h))
                    * T.shift_right(T.reinterpret(M.vload([0], dtype=f"int32x{n}"), dtype=f"int64x{h}"),
                                    T.broadcast(T.int64(32), h))
                    + T.Shuffle([RB.vload([0], dtype=f"int64x{h}"), RB.vload([h], dtype=f"int64x{h}")],
                                [2 * j + 1 for j in range(h)]),
                    T.broadcast(T.int64(-(1 << 32)), h))), dtype=f"int32x{n}")
    return desc, impl
