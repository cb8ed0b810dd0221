# SPDX-License-Identifier: Apache-2.0
"""The ``cpu`` target: integer graph -> Relax (``codegen.tvm``) -> LLVM shared library via TVM.

Artifact folder: ``model.so`` (``Executable.export_library``; entry ``main``, run by the Relax VM),
``graph.dyq`` (the integer graph), ``README.md`` and ``manifest.json``.

The CPU is never hard-coded: by default (or ``mcpu="native"``) the host's ``/proc/cpuinfo`` flags pick
the highest x86-64 micro-architecture level it fully supports (``x86-64-v4`` > ``v3`` > ``v2`` >
``x86-64``; LLVM's host name can be wrong in VMs) plus the extensions the kernels use that the host has
(AVX-512 VNNI, AVX-VNNI, AVX-512 VBMI: ``HOST_EXTRAS``), so a VNNI host gets the VNNI kernels; ``mcpu=`` overrides it. The LLVM features of the chosen CPU, as cpuinfo
flag names, are the artifact's ``required_cpu_features``; loading on a CPU without one of them is an
ArtifactError (never SIGILL). Other architectures build for LLVM's generic CPU.

``kernels="auto"`` (default) lowers convolutions and linear layers to the hand-scheduled kernels of
``codegen.x86`` when the target CPU has AVX2 (exact ``vpmaddwd``) or AVX-512/AVX VNNI (``vpdpbusd``);
the manifest's ``kernels`` says which (``generic``: TVM's default lowering only).

``tune=N`` runs MetaSchedule (``tune_module``) for N trials on the fused module; the JSON database lives in
``<cache_dir>/<target hash>/<workload hash>`` (default cache ``~/.cache/dyadiq/tune``) and is applied
after fusion in the same pipeline, so compiling the same graph again reuses it without tuning. MetaSchedule's
own output (its per-round tables) goes to ``tune.log`` in that folder; a TTY shows a progress bar on stderr.
"""
from __future__ import annotations

import json
import os
import platform
import threading
from pathlib import Path

import numpy as np

from ..codegen.tvm import module_constants, to_relax
from ..errors import ArtifactError, CodegenError, InputError
from ..ir.graph import Graph
from .artifact import Artifact, graph_manifest
from .backend import Option

LIB = "model.so"
GRAPH = "graph.dyq"
README = "README.md"

# LLVM feature name -> /proc/cpuinfo flag (instruction-set extensions only; tuning flags are ignored)
LLVM_TO_CPUINFO = {
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "crc32": "sse4_2",
    "sse4a": "sse4a", "popcnt": "popcnt", "cx16": "cx16", "sahf": "lahf_lm", "movbe": "movbe",
    "xsave": "xsave", "avx": "avx", "avx2": "avx2", "f16c": "f16c", "fma": "fma", "fma4": "fma4",
    "xop": "xop", "bmi": "bmi1", "bmi2": "bmi2", "lzcnt": "abm", "adx": "adx", "aes": "aes",
    "pclmul": "pclmulqdq", "vpclmulqdq": "vpclmulqdq", "vaes": "vaes", "gfni": "gfni", "sha": "sha_ni",
    "rdrnd": "rdrand", "rdseed": "rdseed", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512cd": "avx512cd", "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni",
    "avx512bitalg": "avx512_bitalg", "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni", "amx-tile": "amx_tile", "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
}
X86_LEVELS = (   # (mcpu, cpuinfo flags it needs beyond the previous level), highest last
    ("x86-64", set()),
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)



# ---- host ---------------------------------------------------------------------------------------------
def host_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def host_cpu_flags() -> set[str] | None:
    """The host's /proc/cpuinfo flags (None where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(val.split())
    return set()


def host_mcpu() -> str | None:
    """Highest x86-64 level the host supports (None: not x86-64, use LLVM's generic CPU)."""
    if host_arch() != "x86_64":
        return None
    flags, need, best = host_cpu_flags() or set(), set(), "x86-64"
    for name, extra in X86_LEVELS:
        need |= extra
        if need <= flags:
            best = name
    return best


# extensions beyond the x86-64 levels that dyadiq's kernels use, added when the host has them
HOST_EXTRAS = ("avx512vnni", "avxvnni", "avx512vbmi")      # (no x86-64 level includes them)


def host_mattr(mcpu: str | None) -> list[str]:
    """``+feature`` for each of ``HOST_EXTRAS`` the host has, so a VNNI host gets VNNI kernels by default
    without naming a CPU model (LLVM's host name can be wrong in VMs)."""
    flags = host_cpu_flags() or set()
    if mcpu is None or host_arch() != "x86_64":
        return []
    return [f"+{f}" for f in HOST_EXTRAS if LLVM_TO_CPUINFO[f] in flags]


def make_target(mcpu: str | None = None, *, num_cores: int | None = None):
    """The TVM LLVM target for ``mcpu``; None or ``"native"``: this host (its x86-64 level plus the
    extensions of ``HOST_EXTRAS`` it has)."""
    import tvm
    from tvm.target import codegen
    native = mcpu in (None, "native")
    mcpu = host_mcpu() if native else mcpu
    d: dict = {"kind": "llvm"}
    if mcpu:
        if not codegen.llvm_is_valid_cpu(mcpu, codegen.llvm_get_system_triple()):
            raise InputError(f"unknown CPU {mcpu!r} for LLVM (try native, x86-64-v3, x86-64-v4, or an LLVM CPU "
                             f"name such as sapphirerapids)")
        d["mcpu"] = mcpu
        if native and host_mattr(mcpu):
            d["mattr"] = host_mattr(mcpu)
    if num_cores:
        d["num-cores"] = int(num_cores)
    target = tvm.target.Target(d)
    if mcpu and host_arch() == "x86_64" and "64bit" not in codegen.llvm_get_cpu_features(target):
        raise InputError(f"CPU {mcpu!r} has no 64-bit mode; the cpu target builds x86-64 code (try x86-64-v2 "
                         "or a 64-bit CPU name)")
    return target


def required_features(target) -> list[str]:
    """cpuinfo flags the code for ``target`` may use."""
    from tvm.target import codegen
    if host_arch() != "x86_64" or "mcpu" not in target.attrs:
        return []
    feats = codegen.llvm_get_cpu_features(target)
    return sorted({LLVM_TO_CPUINFO[f] for f in feats if f in LLVM_TO_CPUINFO})


def check_host(manifest: dict, where: str) -> None:
    """ArtifactError when this machine cannot run code built for ``manifest``'s CPU."""
    if manifest.get("arch") != host_arch():
        raise ArtifactError(f"{where}: built for {manifest.get('arch')}, this machine is {host_arch()}")
    need = set(manifest.get("required_cpu_features", []))
    flags = host_cpu_flags()
    if need and flags is None:
        raise ArtifactError(f"{where}: cannot read this CPU's features to check {sorted(need)}")
    missing = sorted(need - (flags or set()))
    if missing:
        raise ArtifactError(f"{where}: built for mcpu={manifest.get('mcpu')}; this CPU lacks "
                            f"{', '.join(missing)} (rebuild with a lower --mcpu, e.g. x86-64-v2)")


# ---- build --------------------------------------------------------------------------------------------
def fuse_passes():
    from tvm import relax
    return [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()]


def relax_pipeline(target, database_dir: str | None = None):
    """TVM's CPU pipeline without FoldConstant (it would unpack the packed weights at build time),
    applying a MetaSchedule database after fusion when ``database_dir`` is given, then vectorized schedules
    for the generic kernels left unscheduled (``codegen.cpu_schedule``)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from ..codegen.cpu_schedule import schedule_generic

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        passes = cpu.library_dispatch_passes(target) + fuse_passes()
        if database_dir is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(database_dir))
        passes.append(tvm.transform.module_pass(lambda m, _c: schedule_generic(m, target), opt_level=0,
                                                name="dyadiq.ScheduleGeneric"))
        passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
        with target:
            return tvm.transform.Sequential(passes)(mod)
    return _pipeline


# ---- tuning -------------------------------------------------------------------------------------------
def tuning_dir(mod, target, cache_dir=None) -> Path:
    """``<cache>/<target hash>/<workload hash>`` for the fused module ``mod``; the workload is its set of
    kernels (structural hashes of its PrimFuncs), so new weights for the same layers reuse the tuning."""
    import hashlib
    import tvm
    import tvm_ffi
    root = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "dyadiq" / "tune"
    th = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    kernels = sorted(str(tvm_ffi.structural_hash(f)) for f in mod.functions.values()
                     if isinstance(f, tvm.tirx.PrimFunc))
    wh = hashlib.sha256(f"{tvm.__version__}:{','.join(kernels)}".encode()).hexdigest()[:16]
    return root / th / wh


def tune_module(mod, target, trials: int, cache_dir=None) -> dict:
    """Tune the fused ``mod`` with MetaSchedule unless the cache already holds >= ``trials`` trials.

    Pitfalls (toolchain notes §3): builder/runner workers need a 600 s timeout (their start-up imports
    take ~25 s); tasks are extracted from the fused module and the database is applied to that same
    fused module (not handed to ``compile_relax`` with a fused module, which silently finds nothing).
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms
    with target:
        fused = tvm.transform.Sequential(fuse_passes())(mod)
    work = tuning_dir(fused, target, cache_dir)
    done = work / "tuned.json"
    if done.is_file() and json.loads(done.read_text()).get("trials", 0) >= trials:
        return {"work_dir": str(work), "reused": True}
    work.mkdir(parents=True, exist_ok=True)
    # hand-scheduled kernels (codegen.x86, attribute tirx.is_scheduled) are not tuned
    names = [t.task_name for t in ms.relax_integration.extract_tasks(fused, target)
             if not t.task_name.startswith("dq_")]
    if not names:
        ms.database.JSONDatabase(work_dir=str(work))              # an empty database: nothing to tune
        done.write_text(json.dumps({"trials": trials, "target": str(target)}))
        return {"work_dir": str(work), "reused": False}
    with _progress(work, trials), _stdout_to(work / LOG):          # MetaSchedule's tables go to the log
        ms.relax_integration.tune_relax(
            fused, params={}, target=target, work_dir=str(work), max_trials_global=trials, op_names=names,
            num_trials_per_iter=min(trials, 32),
            builder=ms.builder.LocalBuilder(timeout_sec=600, f_build=build_candidate),
            runner=ms.runner.LocalRunner(timeout_sec=600),
            strategy=ms.search_strategy.EvolutionarySearch(population_size=min(512, max(64, 16 * trials))))
    done.write_text(json.dumps({"trials": trials, "target": str(target)}))
    return {"work_dir": str(work), "reused": False}


def build_candidate(mod, target, _params):
    """MetaSchedule builder: TVM's default build without importing ``tvm.s_tir.tensor_intrin`` (which
    costs each fresh worker ~25-50 s of CPU; our schedules reach the builder already lowered)."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


LOG = "tune.log"


class _stdout_to:
    """Send file descriptor 1 (Python, TVM's C++ and the tuning workers it starts) to a log file meanwhile."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import sys
        sys.stdout.flush()
        self.saved = os.dup(1)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.close(fd)
        self.py, sys.stdout = sys.stdout, open(self.path, "a", buffering=1)   # a replaced sys.stdout too
        return self

    def __exit__(self, *exc):
        import sys
        sys.stdout.close()
        sys.stdout = self.py
        os.dup2(self.saved, 1)
        os.close(self.saved)
        return False


class _progress:
    """A rich progress bar of measured trials (lines of the tuning record file) on a TTY."""

    def __init__(self, work: Path, trials: int):
        self.work, self.trials, self.stop = work, trials, None

    def __enter__(self):
        import sys
        import threading
        if not sys.stderr.isatty():
            return self
        from rich.console import Console
        from rich.progress import Progress
        self.stop = threading.Event()
        records = self.work / "database_tuning_record.json"

        def poll():
            with Progress(transient=True, console=Console(stderr=True)) as bar:
                task = bar.add_task("tuning (MetaSchedule)", total=self.trials)
                while not self.stop.wait(1.0):
                    n = sum(1 for _ in open(records)) if records.is_file() else 0
                    bar.update(task, completed=min(n, self.trials))
        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.stop is not None:
            self.stop.set()
            self.thread.join()
        return False


# ---- compile ------------------------------------------------------------------------------------------
def compile_cpu(ig: Graph, *, mcpu: str | None = None, tune: int = 0, cache_dir=None,
                kernels: str = "auto") -> "CpuArtifact":
    """Build the integer graph ``ig`` for this CPU (or ``mcpu``).

    ``kernels``: ``"auto"`` uses the hand-scheduled x86 kernels the target's instruction set allows
    (``codegen.x86``: VNNI, else AVX2, else none); ``"generic"`` only TVM's default lowering."""
    import tvm
    if tune < 0:
        raise InputError(f"tune must be >= 0 trials, got {tune}")
    if kernels not in ("auto", "generic"):
        raise InputError(f"kernels must be 'auto' or 'generic', got {kernels!r}")
    target = make_target(mcpu, num_cores=os.cpu_count() if tune else None)
    isa, vbmi = None, False
    if kernels == "auto":
        from ..codegen.x86.lower import has_vbmi, select_isa
        isa, vbmi = select_isa(target), has_vbmi(target)
    mod = to_relax(ig, isa=isa, vbmi=vbmi, target=target)
    tuning = None
    if tune:
        tuning = tune_module(mod, target, tune, cache_dir)
    try:
        ex = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, tuning and tuning["work_dir"]))
    except Exception as e:  # noqa: BLE001 - TVM raises many types; report one line
        raise CodegenError(f"TVM build failed: {str(e).strip().splitlines()[-1]}") from e
    from tvm.target import codegen
    manifest = {**graph_manifest(ig), "target": "cpu", "tvm_target": json.loads(str(target)),
                "mcpu": target.attrs.get("mcpu", "generic"), "arch": host_arch(),
                "triple": codegen.llvm_get_system_triple(), "required_cpu_features": required_features(target),
                "entry": "main", "tvm_version": tvm.__version__, "kernels": isa or "generic",
                "library_constant_bytes": int(sum(c.nbytes for c in module_constants(mod))),
                "tuning": {"trials": tune, "database": tuning["work_dir"] if tuning else None}}
    return CpuArtifact(manifest, ex, ig)


def load_cpu(folder: Path, manifest: dict) -> "CpuArtifact":
    """Load a verified artifact folder (checks arch and CPU features before loading the library)."""
    import tvm
    check_host(manifest, str(folder))
    try:
        lib = tvm.runtime.load_module(str(folder / LIB))
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{folder / LIB}: cannot be loaded ({str(e).strip().splitlines()[-1]})") from e
    return CpuArtifact(manifest, lib, folder / GRAPH if (folder / GRAPH).is_file() else None, folder / LIB)


class CpuArtifact(Artifact):
    """A model built for the CPU: run in-process by TVM's Relax VM."""

    target = "cpu"

    def __init__(self, manifest: dict, module, graph: Graph | Path | None = None, lib_path: Path | None = None):
        super().__init__(manifest)
        self.module, self._graph, self._lib_path = module, graph, lib_path
        self._local = threading.local()        # one Relax VM per thread: a VM is not thread-safe

    @property
    def graph(self) -> Graph | None:
        """The integer graph (read from ``graph.dyq`` on first use for a loaded artifact)."""
        if isinstance(self._graph, Path):
            from ..ir.serialize import load as load_dyq
            self._graph = load_dyq(self._graph)
        return self._graph

    @property
    def vm(self):
        """This thread's Relax VM (a VM keeps per-call state, so threads never share one)."""
        vm = getattr(self._local, "vm", None)
        if vm is None:
            import tvm
            from tvm import relax
            vm = relax.VirtualMachine(self.module, tvm.cpu())
            entry = self.manifest.get("entry", "main")
            try:
                self._local.main = vm[entry]
            except AttributeError:
                raise ArtifactError(f"{LIB} has no function {entry!r} (the manifest's entry)") from None
            self._local.vm = vm
        return vm

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import tvm_ffi
        self.vm                                                                   # this thread's VM
        try:
            res = self._local.main(*[tvm_ffi.from_dlpack(_aligned(a)) for a in arrays])     # zero-copy in
        except Exception as e:  # noqa: BLE001 - the library refuses inputs its manifest misdescribes
            msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise ArtifactError(f"the compiled model rejected its inputs ({msg}); "
                                f"is manifest.json consistent with {LIB}?") from None
        outs = [res] if len(self.outputs) == 1 else list(res)
        return [o.numpy() for o in outs]

    def _write_files(self, folder: Path) -> None:
        import shutil
        if self._lib_path is not None:                 # loaded from a folder: copy the verified files
            shutil.copyfile(self._lib_path, folder / LIB)
        else:
            self.module.export_library(str(folder / LIB))
        if isinstance(self._graph, Path):
            shutil.copyfile(self._graph, folder / GRAPH)
        elif self._graph is not None:
            from ..ir.serialize import save as save_dyq
            save_dyq(self._graph, folder / GRAPH)
        (folder / README).write_text(readme(self.manifest))


class _CpuBackend:
    """The ``cpu`` Backend (``targets.backend``): TVM's LLVM code generator for this or a named CPU."""

    name = "cpu"
    help = "CPU shared library through TVM (LLVM); runs in-process"
    options = (
        Option("mcpu", str, None, "LLVM CPU name ('native' or none: this host, detected)", metavar="CPU"),
        Option("tune", int, 0, "MetaSchedule trials (0: no tuning)", metavar="N"),
        Option("kernels", str, "auto", "x86 kernels: auto (the CPU's best exact kernels) or generic",
               choices=("auto", "generic")),
        Option("cache_dir", str, None, "MetaSchedule database cache (default ~/.cache/dyadiq/tune)",
               metavar="DIR"),
    )

    def unsupported(self, ig: Graph) -> dict[str, str]:
        from ..codegen.tvm import EMITTERS
        return {n.op: "no TVM lowering" for n in ig.nodes if n.op not in EMITTERS}

    def build(self, ig: Graph, **options) -> "CpuArtifact":
        return compile_cpu(ig, **options)

    def load(self, folder: Path, manifest: dict) -> "CpuArtifact":
        return load_cpu(folder, manifest)


BACKEND = _CpuBackend()


def _aligned(a: np.ndarray, align: int = 64) -> np.ndarray:
    """``a`` itself when C-contiguous, writeable and ``align``-byte aligned (TVM's buffer alignment),
    else such a copy."""
    if a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % align == 0:
        return a
    raw = np.empty(a.nbytes + align, np.uint8)
    off = -raw.ctypes.data % align
    out = raw[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def readme(m: dict) -> str:
    """How to run the folder with the TVM runtime alone."""
    args = "\n".join(f"    {s['name']}: {s['numpy_dtype']} {s['shape']}" + (
        f"  (quantized: scale {s['quant']['scale'][0]:.6g}, zero point {s['quant']['zero_point'][0]})"
        if s.get("quant") else "") for s in m["inputs"])
    outs = "\n".join(f"    {s['name']}: {s['numpy_dtype']} {s['shape']}" for s in m["outputs"])
    return f"""# {m.get('graph', 'model')} — dyadiq CPU artifact

Integer-only (dyadic) code built by dyadiq {m['dyadiq_version']} with TVM {m['tvm_version']}
for `{m['arch']}` / mcpu `{m['mcpu']}`. It needs a CPU with: {', '.join(m['required_cpu_features']) or 'no extension'}.
Weights: {m['weight_bytes']} bytes ({m['weight_bytes_detail']['weights']} weights +
{m['weight_bytes_detail']['quant_params']} quantization parameters); `manifest.json` has the details and
the sha256 of every file.

Inputs (in call order):
{args}
Outputs:
{outs}

## Run with the TVM runtime only

```python
import numpy as np, tvm
from tvm import relax
lib = tvm.runtime.load_module("model.so")
vm = relax.VirtualMachine(lib, tvm.cpu())
x = np.zeros({m['inputs'][0]['shape']}, np.{m['inputs'][0]['numpy_dtype']})     # your input
y = vm["{m.get('entry', 'main')}"](tvm.runtime.tensor(x)).numpy()
```

## Run with dyadiq (checks the sha256s and the CPU first)

```python
import dyadiq.targets
art = dyadiq.targets.load_artifact("path/to/this/folder")
y = art.run(x)
```
"""
