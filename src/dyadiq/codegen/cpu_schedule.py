# SPDX-License-Identifier: Apache-2.0
"""Schedules for the generic (not hand-written) CPU kernels: TVM leaves a fused elementwise PrimFunc as one
scalar loop nest, so the input quantize of a 224 x 224 image (a division, a round, a clamp per value) ran
at ~2 ns per value. ``Elementwise`` (a ``dlight`` rule) inlines an all-injective PrimFunc into its last
block, fuses the loops and vectorizes them (16 lanes when the extent allows), parallel over chunks when
it is large. Results are unchanged: the same IEEE operations per value, only in vector registers.
``schedule_generic(mod, target)`` applies it (and TVM's CPU reduction rule) to every PrimFunc that is
not already scheduled (hand-written kernels, MetaSchedule results)."""
from __future__ import annotations

CHUNK = 4096          # values per parallel task


def _rule():
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class Elementwise(CPUScheduleRule):
        """Fuse, vectorize and parallelize an all-injective PrimFunc."""

        def apply(self, func, target, _tunable):
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if not infos or any(not b.is_injective() for b in infos):
                return None
            infos = try_inline(sch, infos)
            if len(infos) != 1:
                return None
            loops = sch.get_loops(infos[0].block_rv)
            if not loops:
                return None
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            extent = sch.get(fused).extent
            if not isinstance(extent, tirx.IntImm):
                return None
            n = int(extent.value)
            vec = next((v for v in (16, 8, 4) if n % v == 0), 1)
            if n >= 2 * CHUNK and n % CHUNK == 0 and vec > 1:
                outer, fused = sch.split(fused, [None, CHUNK])
                sch.parallel(outer)
            if vec > 1:
                _, inner = sch.split(fused, [None, vec])
                sch.vectorize(inner)
            return sch
    return Elementwise()


def schedule_generic(mod, target):
    """``mod`` with every unscheduled PrimFunc given the ``Elementwise`` or TVM's CPU ``Reduction`` schedule
    where one applies (others are left as they are)."""
    from tvm.s_tir import dlight as dl
    with target:
        return dl.ApplyDefaultSchedule(_rule(), dl.cpu.Reduction())(mod)
