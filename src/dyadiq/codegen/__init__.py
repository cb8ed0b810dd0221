# SPDX-License-Identifier: Apache-2.0
"""Code generators: an integer Graph (``passes.integerize``) -> a target's program.

- ``tvm``: ``to_relax(ig)`` -> TVM Relax ``IRModule`` (CPU via ``targets.cpu``), bit-exact with the
  integer interpreter; sub-byte weights stored packed. Imports TVM only when called.
- ``x86``: hand-scheduled conv/linear kernels with fused requantize (+ residual add) on NHWC activations
  (AVX2 ``vpmaddwd`` or VNNI ``vpdpbusd``), used by ``to_relax(ig, isa=...)``.
"""
