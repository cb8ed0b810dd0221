# SPDX-License-Identifier: Apache-2.0
"""The ``cuda`` target: integer graph -> dlight-scheduled TVM kernels (``codegen.cuda``) -> nvcc.

Artifact folder: ``model.cu`` (the CUDA C source of every kernel, for inspection), ``model.fatbin``
(SASS for ``arch`` + PTX, built by the machine's ``nvcc``), ``model.ptx``, ``model.so`` (TVM's
``export_library``: the Relax VM program and host code), ``graph.dyq`` (the integer graph),
``README.md`` and ``manifest.json`` (``kernels`` counts the kernels and the ``dp4a`` / ``mma``
instructions in the PTX).

Building needs no GPU. Running needs an NVIDIA GPU of at least ``arch`` and a TVM with its CUDA
runtime (the PyPI ``apache-tvm`` wheel has none); elsewhere ``load`` refuses with one ArtifactError.
On such a machine the module is rebuilt from ``graph.dyq`` for the recorded ``arch``; TVM's CUDA
compiler hook is answered with the folder's ``model.fatbin`` only when the source it is given equals
``model.cu`` (sha256 in the manifest): the code that runs is the code in the folder.

``cpu_twin()``: the same scheduled TIR with serial thread loops, built for LLVM (``codegen.cuda``), so
the arithmetic of every kernel is tested bit-exactly on any machine.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from ..codegen import cuda as cg
from ..errors import ArtifactError
from ..ir.graph import Graph
from .artifact import Artifact, graph_manifest
from .backend import Option

LIB, GRAPH, README = "model.so", "graph.dyq", "README.md"
FILES = ("cu", "fatbin", "ptx")


def gpu_status() -> str | None:
    """None when this machine can run CUDA artifacts, else why not (one line)."""
    import tvm
    if not tvm.runtime.enabled("cuda"):
        return "this TVM build has no CUDA runtime and no GPU is usable here"
    if not tvm.cuda(0).exist:
        return "no NVIDIA GPU found"
    return None


def compile_cuda(ig: Graph, *, arch: str = "sm_80") -> CudaArtifact:
    """Build the integer graph ``ig`` for NVIDIA ``arch`` (no GPU needed)."""
    import tempfile

    import tvm
    target = cg.cuda_target(arch)
    rules: dict[str, str] = {}
    mod = cg.schedule(ig, target, rules)
    ex = cg.build(mod, target)
    source = cg.cuda_source(ex)
    with tempfile.TemporaryDirectory(prefix="dyadiq-nvcc-") as tmp:
        files = cg.nvcc(source, arch, Path(tmp))
        blobs = {k: files[k].read_bytes() for k in FILES}
    report = cg.kernel_report(source, blobs["ptx"].decode())
    manifest = {**graph_manifest(ig), "target": "cuda", "arch": arch, "entry": "main",
                "tvm_version": tvm.__version__, "nvcc_version": _nvcc_version(), "schedule": "dlight default GPU rules",
                "schedule_rules": {r: sum(v == r for v in rules.values()) for r in sorted(set(rules.values()))},
                "kernels": {k: v for k, v in report.items() if k != "kernel_names"},
                "cuda_source_sha256": hashlib.sha256(source.encode()).hexdigest()}
    return CudaArtifact(manifest, ig, ex=ex, scheduled=mod, blobs=blobs)


def _nvcc_version() -> str:
    import re
    import subprocess
    try:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    m = re.search(r"release [\d.]+, (V[\d.]+)", out)
    return m.group(1) if m else "unknown"


def load_cuda(folder: Path, manifest: dict) -> CudaArtifact:
    """A verified folder; refuses (ArtifactError) where no usable GPU is."""
    why = gpu_status()
    if why is not None:
        raise ArtifactError(f"{folder}: a cuda artifact ({manifest.get('arch')}) runs only on an NVIDIA GPU "
                            f"with a CUDA-enabled TVM: {why}")
    from ..ir.serialize import load as load_dyq
    art = CudaArtifact(manifest, load_dyq(folder / GRAPH), folder=folder)
    art.rebuild_for_gpu()
    return art


class CudaArtifact(Artifact):
    """A model built for an NVIDIA GPU."""

    target = "cuda"

    def __init__(self, manifest: dict, graph: Graph, *, ex=None, scheduled=None, blobs=None, folder=None):
        super().__init__(manifest)
        self.graph, self.ex, self.scheduled, self.folder = graph, ex, scheduled, folder
        self.blobs = blobs or {}
        self._main = None
        self._lock = threading.Lock()            # one VM shared by the calling threads, one call at a time

    @property
    def source(self) -> str:
        """The CUDA C source of the kernels."""
        if "cu" in self.blobs:
            return self.blobs["cu"].decode()
        return (self.folder / "model.cu").read_text()

    def cpu_twin(self):
        """A callable running the same scheduled TIR with serial thread loops on this CPU (float32 in,
        float32 out), for bit-exact tests of the kernels' arithmetic."""
        import tvm
        from tvm import relax
        scheduled = self.scheduled if self.scheduled is not None else cg.schedule(self.graph,
                                                                                   cg.cuda_target(self.manifest["arch"]))
        ex = cg.build(cg.serial_twin(scheduled), tvm.target.Target({"kind": "llvm"}))
        vm = relax.VirtualMachine(ex, tvm.cpu())

        def run(*xs):
            res = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs])
            return res.numpy() if len(self.outputs) == 1 else [r.numpy() for r in res]
        return run

    def rebuild_for_gpu(self) -> None:
        """Rebuild the module on a GPU machine (TVM embeds the binary) and check its source is ``model.cu``."""
        import tvm
        import tvm_ffi
        from tvm import relax
        target = cg.cuda_target(self.manifest["arch"])
        want = self.manifest.get("cuda_source_sha256")
        fatbin = self.blobs.get("fatbin") or (self.folder / "model.fatbin").read_bytes()

        def compile_callback(code, *_):
            """TVM's CUDA compiler hook: the folder's fatbin for the folder's source, else refuse."""
            if hashlib.sha256(str(code).encode()).hexdigest() != want:
                raise ArtifactError("the kernels rebuilt here differ from model.cu")
            return bytearray(fatbin)

        name = "tvm_callback_cuda_compile"
        old = tvm_ffi.get_global_func(name, allow_missing=True)
        tvm_ffi.register_global_func(name, compile_callback, override=True)
        try:
            ex = cg.build(cg.schedule(self.graph, target), target)
        finally:
            if old is not None:
                tvm_ffi.register_global_func(name, old, override=True)
        digest = hashlib.sha256(cg.cuda_source(ex).encode()).hexdigest()
        if digest != self.manifest.get("cuda_source_sha256"):
            raise ArtifactError(f"{self.folder}: the kernels rebuilt here differ from model.cu "
                                f"(different TVM? built with {self.manifest.get('tvm_version')})")
        self.ex = ex
        self._main = relax.VirtualMachine(ex, tvm.cuda(0))["main"]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            if self._main is None:
                why = gpu_status()
                if why is not None:
                    raise ArtifactError(f"cannot run a cuda artifact here: {why}")
                self.rebuild_for_gpu()
            import tvm
            dev = tvm.cuda(0)
            res = self._main(*[tvm.runtime.tensor(a, dev) for a in arrays])
            outs = [res] if len(self.outputs) == 1 else list(res)
            return [o.numpy() for o in outs]

    def _write_files(self, folder: Path) -> None:
        import shutil

        from ..ir.serialize import save as save_dyq
        for k in FILES:
            if k in self.blobs:
                (folder / f"model.{k}").write_bytes(self.blobs[k])
            else:
                shutil.copyfile(self.folder / f"model.{k}", folder / f"model.{k}")
        if self.ex is not None and self.folder is None:
            self.ex.export_library(str(folder / LIB))
        else:
            shutil.copyfile(self.folder / LIB, folder / LIB)
        save_dyq(self.graph, folder / GRAPH)
        (folder / README).write_text(readme(self.manifest))


class _CudaBackend:
    """The ``cuda`` Backend (``targets.backend``): TVM CUDA kernels scheduled by dlight, compiled by nvcc."""

    name = "cuda"
    help = "NVIDIA GPU kernels through TVM (CUDA C, PTX and fatbin by nvcc); builds without a GPU"
    options = (Option("arch", str, "sm_80", "NVIDIA architecture", choices=cg.ARCHS, metavar="SM"),)

    def unsupported(self, ig: Graph) -> dict[str, str]:
        from ..codegen.tvm import EMITTERS
        return {n.op: "no TVM lowering" for n in ig.nodes if n.op not in EMITTERS}

    def build(self, ig: Graph, **options) -> CudaArtifact:
        return compile_cuda(ig, **options)

    def load(self, folder: Path, manifest: dict) -> CudaArtifact:
        return load_cuda(folder, manifest)


BACKEND = _CudaBackend()


def readme(m: dict) -> str:
    k = m["kernels"]
    return f"""# {m.get('graph', 'model')} — dyadiq CUDA artifact ({m['arch']})

Integer-only (dyadic) kernels generated by TVM {m['tvm_version']} (schedules: {m['schedule']}),
compiled by nvcc {m['nvcc_version']}: `model.cu` (CUDA C source of the {k['kernels']} kernels),
`model.ptx`, `model.fatbin` (SASS for {m['arch']} + PTX), `model.so` (Relax VM program and host code),
`graph.dyq` (the integer graph). PTX instruction use: {k.get('dp4a', 0)} `dp4a`, {k.get('mma', 0)} `mma`.
Weights: {m['weight_bytes']} bytes. `manifest.json` has the sha256 of every file.

Running needs an NVIDIA GPU ({m['arch']} or newer) and a TVM built with CUDA:

```python
import dyadiq.targets
y = dyadiq.targets.load_artifact("path/to/this/folder").run(x)     # float32 in, float32 out
```

The fatbin's kernels can also be loaded with the CUDA driver API (`cuModuleLoadData`); their names and
launch bounds are in `model.cu`.
"""
