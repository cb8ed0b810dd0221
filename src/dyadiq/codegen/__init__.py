# SPDX-License-Identifier: Apache-2.0
"""Code generators: an integer Graph (``passes.integerize``) -> a target's program.

- ``tvm``: ``to_relax(ig)`` -> TVM Relax ``IRModule`` (CPU via ``targets.cpu``), bit-exact with the
  integer interpreter; sub-byte weights stored packed. Imports TVM only when called.
"""
