# SPDX-License-Identifier: Apache-2.0
"""Schedules for the generic (not hand-written) CPU kernels: TVM leaves a fused elementwise PrimFunc as one
scalar loop nest, so the input quantize of a 224 x 224 image (a division, a round, a clamp per value) ran
at ~2 ns per value. ``Elementwise`` (a ``dlight`` rule) inlines an all-injective PrimFunc of at most
``MAX_BLOCKS`` blocks into its last block, vectorizes the innermost axis (one zmm of the widest element type)
and runs the fused outer loops in parallel chunks when it is large. Results are unchanged: the same IEEE operations per value, only in vector registers.
``schedule_generic(mod, target)`` applies it (and TVM's CPU reduction rule) to every PrimFunc that is
not already scheduled (hand-written kernels, MetaSchedule results)."""
from __future__ import annotations

CHUNK = 4096          # values per parallel task
MAX_BLOCKS = 8        # longer injective chains keep TVM's loops (inlining may copy shared values)


def _rule():
    import tvm
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
            if len(infos) > MAX_BLOCKS:
                return None
            infos = try_inline(sch, infos)
            if len(infos) != 1 or len(sch.mod["main"].script()) > 4 * len(func.script()) + 20000:
                return None       # inlining copies a value read more than once (an integer Newton iteration)
            loops = sch.get_loops(infos[0].block_rv)
            if not loops:
                return None
            extents = [sch.get(lp).extent for lp in loops]
            if not all(isinstance(e, tirx.IntImm) for e in extents):
                return None
            n = 1
            for e in extents:
                n *= int(e.value)
            # lanes: one zmm of the widest element (float64 math in 16 lanes was scalarized, then LLVM
            # vectorized the outer loop with gathers)
            blk = sch.get(infos[0].block_rv)
            widest = max(tvm.DataType(r.source.dtype).bits for r in [*blk.reads, *blk.writes])
            lanes = [v for v in (16, 8, 4) if v * widest <= 512] or [4]
            last = int(extents[-1].value)
            vec = next((v for v in lanes if last % v == 0), 1)
            if vec > 1:        # vector lanes along the innermost axis: contiguous, no division in the index
                outer, inner = sch.split(loops[-1], [None, vec])
                rest = sch.fuse(*loops[:-1], outer) if len(loops) > 1 else outer
                sch.vectorize(inner)
            else:
                n16 = next((v for v in lanes if n % v == 0), 1)
                rest = sch.fuse(*loops) if len(loops) > 1 else loops[0]
                if n16 > 1:
                    rest, inner = sch.split(rest, [None, n16])
                    sch.vectorize(inner)
                vec = n16
            tasks = n // vec
            per = max(1, CHUNK // vec)
            if n >= 2 * CHUNK:
                chunks = next((c for c in range(per, 0, -1) if tasks % c == 0), 1)
                if tasks // chunks >= 2:
                    outer, _ = sch.split(rest, [None, chunks])
                    sch.parallel(outer)
            return sch
    return Elementwise()


def schedule_generic(mod, target):
    """``mod`` with every unscheduled PrimFunc given the ``Elementwise`` or TVM's CPU ``Reduction`` schedule
    where one applies (others are left as they are)."""
    from tvm.s_tir import dlight as dl
    with target:
        return dl.ApplyDefaultSchedule(_rule(), dl.cpu.Reduction())(mod)
