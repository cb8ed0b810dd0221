# SPDX-License-Identifier: Apache-2.0
"""Integer graph -> scheduled TVM module for CUDA, and the same scheduled TIR for the CPU.

``schedule(ig, target)``: ``codegen.tvm.to_relax(ig)`` (generic Relax ops, bit-exact), fused
(``LegalizeOps``, ``FuseOps``, ``FuseTIR``: the dyadic requantize / qadd / clamp / cast after a conv
or matmul land in that kernel's epilogue; depthwise convs are grouped ``conv2d``s, their own kernels),
then dlight's default GPU rules (``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``,
``Fallback``) bind loops to blocks and threads. No FoldConstant: packed sub-8-bit weights stay packed
and are unpacked by a kernel.

``serial_twin(mod)``: the scheduled module with every ``T.thread_binding`` loop turned into a serial
loop (the TVMScript of each PrimFunc, rewritten and parsed back). In TIR a thread-bound loop means
the same as the serial loop over the same range, and nothing else changes (same blocks, same integer
expressions, same buffers), so building the twin for LLVM and comparing it with the interpreter checks
the arithmetic of every CUDA kernel on a machine without a GPU: only the thread mapping differs.

``nvcc(source, arch, dir)``: the CUDA C source TVM generates (``inspect_source``) compiled with the
``nvcc`` on the machine into a fatbin (SASS for ``arch`` + PTX), keeping the PTX. TVM's own build does
not compile the source where there is no GPU (toolchain notes §15).

Tensor cores: dlight's ``Matmul`` rule would tensorize int8 GEMMs with M, N, K > 64 for sm_70+
(``MatmulInt8Tensorization``, wmma), but in TVM 0.27 that schedule fails to build
(``InjectSoftwarePipeline``: "fragment_info" check, seen on EfficientNet-Lite0's 1x1 convs) and its
``wmma`` intrinsics have no serial CPU twin; so the rules are shown a pre-tensor-core arch (``sm_61``)
while code is generated for the real one. Instruction use (``kernel_report``): dlight's rules write no
``dp4a`` or tensor-core intrinsic for int8; the kernels multiply-add int8 values into int32. In the kernels of dlight's ``Matmul`` rule
(1x1 convs, linears: four consecutive int8 reduction terms per thread) nvcc's optimizer forms ``dp4a``
itself; depthwise and k x k conv kernels have none and no kernel uses ``mma``. The report counts both
per kernel in the PTX, so the manifest says what the kernels really use.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..errors import CodegenError
from ..ir.graph import Graph

ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
_THREAD_LOOP = re.compile(r'T\.thread_binding\((.*?), thread="[^"]*"((?:, annotations=\{[^{}]*\})?)\)')


def cuda_target(arch: str):
    import tvm
    if arch not in ARCHS:
        raise CodegenError(f"unknown CUDA arch {arch!r} (choose from {', '.join(ARCHS)})")
    return tvm.target.Target({"kind": "cuda", "arch": arch, "max_shared_memory_per_block": 49152,
                              "max_threads_per_block": 1024, "thread_warp_size": 32},
                             host={"kind": "llvm"})


def schedule(ig: Graph, target, rules_used: dict | None = None):
    """The fused Relax module of ``ig`` with every PrimFunc scheduled for ``target`` by dlight: the first
    of ``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``, ``Fallback`` that applies (a rule that
    raises, as ``Matmul`` does on some fused epilogues, counts as not applying). ``rules_used`` (if
    given) receives kernel name -> rule name."""
    import tvm
    from tvm import relax
    from tvm.s_tir import dlight as dl

    from .tvm import to_relax
    mod = to_relax(ig)
    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    # the rules see a pre-tensor-core arch: dlight's int8 mma tensorization does not build in TVM 0.27
    # (module docstring); code is still generated for ``target``
    rule_target = tvm.target.Target({**{k: v for k, v in target.attrs.items()}, "kind": "cuda", "arch": "sm_61"},
                                    host=target.host)
    with target:
        mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                        relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
        for gv, f in list(mod.functions.items()):
            if not isinstance(f, tvm.tirx.PrimFunc):
                continue
            for rule in rules:
                try:
                    sch = rule.apply(f, rule_target, False)
                except Exception:  # noqa: BLE001 - a dlight rule that cannot handle this kernel
                    sch = None
                if sch is not None:
                    sch = sch[0] if isinstance(sch, list) else sch
                    mod[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                    if rules_used is not None:
                        rules_used[gv.name_hint] = type(rule).__name__
                    break
            else:
                raise CodegenError(f"no dlight GPU rule schedules kernel {gv.name_hint}")
    return mod


def lower_pipeline(target, backend: str):
    """Relax lowering after scheduling (no re-fusion, no FoldConstant): ``backend`` is cuda or cpu."""
    import tvm
    if backend == "cuda":
        from tvm.relax.backend.cuda import pipeline as p
    else:
        from tvm.relax.backend.cpu_generic import pipeline as p

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(p.dataflow_lower_passes(target) + p.finalize_passes(target))(mod)
    return _pipeline


def build(mod, target):
    """``tvm.compile`` of a scheduled module (one CodegenError line on failure)."""
    import tvm
    backend = "cuda" if target.kind.name == "cuda" else "cpu"
    try:
        return tvm.compile(mod, target=target, relax_pipeline=lower_pipeline(target, backend))
    except Exception as e:
        raise CodegenError(f"TVM {backend} build failed: {str(e).strip().splitlines()[-1]}") from e


def serial_twin(mod):
    """``mod`` with every thread-bound loop serial (module docstring): runnable by the LLVM backend."""
    import tvm
    from tvm.script import from_source
    funcs = {}
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            src = _THREAD_LOOP.sub(r"T.serial(\1\2)", f.script())
            if "thread_binding" in src:
                raise CodegenError(f"kernel {gv.name_hint}: a thread binding the serial rewrite does not cover")
            f = from_source(src).with_attr("global_symbol", gv.name_hint)
        funcs[gv] = f
    return tvm.IRModule(funcs, attrs=mod.attrs)


def cuda_source(ex) -> str:
    """The CUDA C source of a built executable (its ``cuda`` module)."""
    def find(m):
        if m.kind == "cuda":
            return m
        for i in m.imports:
            r = find(i)
            if r is not None:
                return r
        return None
    m = find(ex.mod)
    if m is None:
        raise CodegenError("the TVM build holds no CUDA module")
    return m.inspect_source("")


def nvcc(source: str, arch: str, folder: Path, stem: str = "model") -> dict[str, Path]:
    """``stem.cu`` -> ``stem.fatbin`` (SASS for ``arch`` + PTX) and ``stem.ptx`` in ``folder``."""
    exe = shutil.which("nvcc")
    if exe is None:
        raise CodegenError("nvcc not found on PATH (the CUDA toolkit compiles the kernels of a cuda artifact)")
    folder = Path(folder)
    cu, fat = folder / f"{stem}.cu", folder / f"{stem}.fatbin"
    cu.write_text(source)
    keep = folder / ".nvcc"
    keep.mkdir(exist_ok=True)
    cc = arch.split("_")[1]
    cmd = [exe, "--fatbin", "-O3", "-std=c++17", f"-gencode=arch=compute_{cc},code=[sm_{cc},compute_{cc}]",
           "--keep", f"--keep-dir={keep}", "-o", str(fat), str(cu)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        err = [ln for ln in (r.stderr or r.stdout).splitlines() if "error" in ln]
        raise CodegenError(f"nvcc failed: {(err or (r.stderr or r.stdout).splitlines() or ['?'])[0].strip()}")
    ptx = sorted(keep.glob("*.ptx"))
    if not ptx:
        raise CodegenError("nvcc kept no PTX")
    shutil.move(str(ptx[0]), folder / f"{stem}.ptx")
    shutil.rmtree(keep, ignore_errors=True)
    return {"cu": cu, "fatbin": fat, "ptx": folder / f"{stem}.ptx"}


def kernel_report(source: str, ptx: str | None = None) -> dict:
    """Kernels in the source; per kernel, the ``dp4a`` and tensor-core ``mma`` instructions in the PTX."""
    kernels = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)
    out: dict = {"kernels": len(kernels), "kernel_names": kernels}
    if ptx is not None:
        per: dict[str, dict[str, int]] = {}
        for entry in re.split(r"\.entry\s+", ptx)[1:]:
            name = entry.split("(", 1)[0].strip()
            dp4a, mma = len(re.findall(r"\bdp4a\.", entry)), len(re.findall(r"\b(?:mma|wmma)\.", entry))
            if dp4a or mma:
                per[name] = {"dp4a": dp4a, "mma": mma}
        out["dp4a"] = sum(v["dp4a"] for v in per.values())
        out["mma"] = sum(v["mma"] for v in per.values())
        out["kernels_with_dp4a_or_mma"] = per
    return out
