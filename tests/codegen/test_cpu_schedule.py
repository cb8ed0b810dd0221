# SPDX-License-Identifier: Apache-2.0
"""codegen.cpu_schedule: generic elementwise kernels come out vectorized (and parallel when large);
functions it cannot schedule are left as they were. Bit-exactness of the scheduled code is covered by every
cpu-target test (the input quantize of each model runs through it)."""
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax, tirx  # noqa: E402

from dyadiq.codegen.cpu_schedule import CHUNK, schedule_generic  # noqa: E402
from dyadiq.targets.cpu import make_target  # noqa: E402


def loop_kinds(func) -> set[str]:
    """The loop kinds in ``func``'s TVMScript (``parallel``, ``vectorized``, ``serial``)."""
    text = func.script()
    return {k for k in ("parallel", "vectorized", "serial") if f"T.{k}(" in text}


def lowered(shape):
    """A fused quantize-like chain (divide, round, clip, cast) on a float tensor of ``shape``, legalized."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.round(relax.op.divide(x, relax.const(0.02, "float32"))))
            z = bb.emit_output(relax.op.astype(relax.op.clip(y, -128, 127), "int8"))
        bb.emit_func_output(z)
    Mod = bb.get()
    mod = relax.transform.LegalizeOps()(Mod)
    mod = relax.transform.AnnotateTIROpPattern()(mod)
    mod = relax.transform.FuseOps()(mod)
    return relax.transform.FuseTIR()(mod)


def prim_funcs(mod):
    return [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]


def test_a_fused_elementwise_chain_becomes_one_vectorized_loop():
    (func,) = prim_funcs(schedule_generic(lowered((1, 3, 8, 8)), make_target()))
    kinds = loop_kinds(func)
    assert "vectorized" in kinds and "parallel" not in kinds


def test_a_large_elementwise_kernel_also_runs_in_parallel_chunks():
    (func,) = prim_funcs(schedule_generic(lowered((1, 3, 224, 224)), make_target()))
    assert 3 * 224 * 224 % CHUNK != 0 or "parallel" in loop_kinds(func)
    (func,) = prim_funcs(schedule_generic(lowered((1, 4, 64, 64)), make_target()))
    kinds = loop_kinds(func)
    assert "parallel" in kinds and "vectorized" in kinds


def test_an_extent_with_no_vector_width_is_left_scalar():
    (func,) = prim_funcs(schedule_generic(lowered((1, 3, 5, 7)), make_target()))
    assert "vectorized" not in loop_kinds(func)


def test_a_chain_that_reads_each_value_twice_is_not_inlined_into_one_huge_expression():
    """Inlining y -> y * y + y twelve times would copy the input 2^12 times (an integer Newton iteration in
    a layer norm did this, and LLVM never finished); such a function keeps TVM's default loops."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 64), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for _ in range(12):
                y = bb.emit(relax.op.add(relax.op.multiply(y, y), y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(mod)))
    (func,) = prim_funcs(schedule_generic(mod, make_target()))
    assert "vectorized" not in loop_kinds(func) and len(func.script()) < 50000
