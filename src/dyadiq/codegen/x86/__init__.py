# SPDX-License-Identifier: Apache-2.0
"""Hand-scheduled x86 kernels for the integer graph (TVM TE + s_tir schedules), bit-exact.

- ``intrin``: exact dot-product tensor intrinsics (AVX2 ``vpmaddwd`` on int16 pairs; VNNI ``vpdpbusd``).
- ``epilogue``: bias + dyadic requantize (+ residual ``qadd``) fused into the producing kernel.
- ``gemm``: groups-1 convolution (any kernel/stride/padding, im2col in-kernel) and linear, NHWC.
- ``depthwise``: depthwise convolution, NHWC, vectorized over channels.
- ``lower``: ISA selection from the LLVM target, chain detection, emission as Relax ``call_tir``.
- ``pairing``: input-channel orders that make 8-bit weights exact on AVX2 ``vpmaddubsw``.
- ``unsigned``: int8 activations between kernels stored as uint8 ``x + 128`` (the u8 x s8 GEMMs read them
  directly).
"""
