# SPDX-License-Identifier: Apache-2.0
"""The ``tosa`` target: integer graph -> MLIR TOSA (``codegen.tosa``) -> IREE ``llvm-cpu`` module.

Artifact folder: ``model.mlir`` (TOSA v1.0 in MLIR's generic form: it verifies with the MLIR bindings
and is a fixed point of parse -> print), ``model.vmfb`` (compiled by ``iree-compile`` for this host,
``--iree-llvmcpu-target-cpu=host``; never a named CPU), ``README.md`` and ``manifest.json``.

The module computes the integer part of the graph: its ``main`` takes the quantized inputs and returns
the integer outputs. The float boundary (``quantize`` on entry, ``dequantize`` on exit) runs in numpy
with the interpreter's own kernels (``ir/ops/integer.py``; their attributes are in the manifest's
``boundary``), because TOSA has no exact float64 ``x / scale`` and the integer part must hold no float op.
So ``run`` takes float32 like every artifact and is bit-exact with ``interp.run(ig, x)``.

``host`` code may use every instruction-set extension of the build machine: the manifest lists the
build host's extensions (``required_cpu_features``) and loading on a CPU that lacks one is an
ArtifactError, not SIGILL.
"""
from __future__ import annotations

import re

import threading
from pathlib import Path

import numpy as np

from ..codegen.tosa import SUPPORTED, normalize, to_tosa_text
from ..errors import ArtifactError, CodegenError
from ..ir.graph import Graph
from ..ir.ops import op_def
from .artifact import Artifact, graph_manifest
from .cpu import LLVM_TO_CPUINFO, check_host, host_arch, host_cpu_flags

MLIR = "model.mlir"
VMFB = "model.vmfb"
README = "README.md"
IREE_FLAGS = ("--iree-llvmcpu-target-cpu=host",)


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def boundary(ig: Graph, ins: list[str], outs: list[str]) -> dict:
    """Per graph input/output: the integer value the module takes/returns and its (de)quantize attrs."""
    prods = ig.producers()
    inputs = []
    for name, real in zip(ig.inputs, ins):
        q = next((c for c in ig.consumers().get(name, []) if c.op == "quantize"), None)
        inputs.append({"name": name, "value": real, "dtype": ig.type_of(real).dtype,
                       "quantize": {k: _jsonable(v) for k, v in q.attrs} if q is not None else None})
    outputs = []
    for name, real in zip(ig.outputs, outs):
        d = prods.get(name)
        outputs.append({"name": name, "value": real, "dtype": ig.type_of(real).dtype,
                        "dequantize": {k: _jsonable(v) for k, v in d.attrs} if d is not None and d.op == "dequantize"
                        else None})
    return {"inputs": inputs, "outputs": outputs}


def host_features() -> list[str]:
    """The build host's instruction-set extensions (cpuinfo names) that LLVM knows."""
    flags = host_cpu_flags() or set()
    return sorted(flags & set(LLVM_TO_CPUINFO.values()))


def iree_compile(mlir: str) -> bytes:
    try:
        import iree.compiler as ireec
    except ImportError:
        raise CodegenError("the tosa target needs IREE's compiler (pip install iree-base-compiler)") from None
    try:
        return ireec.compile_str(mlir, input_type="tosa", target_backends=["llvm-cpu"], extra_args=list(IREE_FLAGS))
    except ireec.CompilerToolError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "error:" in ln]
        raise CodegenError(f"iree-compile failed: {lines[0] if lines else str(e).splitlines()[0]}") from e


def module_text(g: Graph) -> str:
    """The verified TOSA module of a quantized or integer graph (``dyadiq inspect --format tosa``)."""
    from ..passes.integerize import integerize
    return normalize(to_tosa_text(integerize(g))[0])


def compile_tosa(ig: Graph) -> TosaArtifact:
    """Build the integer graph ``ig`` into TOSA and an IREE module for this host."""
    text, ins, outs = to_tosa_text(ig)
    mlir = normalize(text)
    vmfb = iree_compile(mlir)
    manifest = {**graph_manifest(ig), "target": "tosa", "entry": "main", "arch": host_arch(), "mcpu": "host",
                "required_cpu_features": host_features(), "iree_flags": list(IREE_FLAGS),
                "iree_version": _version("iree-base-compiler"),
                "boundary": boundary(ig, ins, outs),
                "tosa_ops": sorted({ln.split('"tosa.')[1].split('"')[0] for ln in mlir.splitlines()
                                    if '"tosa.' in ln})}
    return TosaArtifact(manifest, mlir, vmfb)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def load_tosa(folder: Path, manifest: dict) -> TosaArtifact:
    check_host(manifest, str(folder))
    return TosaArtifact(manifest, (folder / MLIR).read_text(), (folder / VMFB).read_bytes())


class TosaArtifact(Artifact):
    """A model as TOSA + an IREE module: ``run`` quantizes in numpy, runs IREE, dequantizes in numpy."""

    target = "tosa"

    def __init__(self, manifest: dict, mlir: str, vmfb: bytes, driver: str = "local-task"):
        super().__init__(manifest)
        self.mlir, self.vmfb, self.driver = mlir, vmfb, driver
        self._local = threading.local()          # one IREE context per calling thread

    @property
    def main(self):
        """The module's ``main`` in this thread's IREE runtime context (made on first use)."""
        if getattr(self._local, "main", None) is None:
            try:
                import iree.runtime as ireert
            except ImportError:
                raise ArtifactError("running a tosa artifact needs iree-base-runtime (pip install "
                                    "iree-base-runtime)") from None
            ctx = ireert.SystemContext(config=ireert.Config(self.driver))
            ctx.add_vm_module(ireert.VmModule.copy_buffer(ctx.instance, self.vmfb))
            self._local.main = ctx.modules.module[self.manifest.get("entry", "main")]
        return self._local.main

    def run_integer(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The module on the integer inputs (what ``main`` takes), its integer outputs."""
        res = self.main(*[np.ascontiguousarray(a) for a in arrays])
        res = res if isinstance(res, (tuple, list)) else [res]
        return [np.asarray(r) for r in res]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        b = self.manifest["boundary"]
        xs = []
        for spec, x in zip(b["inputs"], arrays):
            a = spec["quantize"]
            xs.append(op_def("quantize").kernel([x], a)[0] if a is not None else x)
        ys = self.run_integer(xs)
        outs = []
        for spec, y in zip(b["outputs"], ys):
            a = spec["dequantize"]
            outs.append(op_def("dequantize").kernel([y], a)[0] if a is not None else y)
        return outs

    def _write_files(self, folder: Path) -> None:
        (folder / MLIR).write_text(self.mlir)
        (folder / VMFB).write_bytes(self.vmfb)
        (folder / README).write_text(readme(self.manifest))


class _TosaBackend:
    """The ``tosa`` Backend (``targets.backend``): MLIR TOSA, compiled and run by IREE (llvm-cpu)."""

    name = "tosa"
    help = "MLIR TOSA module + IREE llvm-cpu module for this host; runs through iree.runtime"
    options = ()

    def unsupported(self, ig: Graph) -> dict[str, str]:
        """Ops without a TOSA lowering; when every op has one, the lowering itself is run (MLIR text only,
        cheap) so that a node whose operands or parameters it cannot express is named here too."""
        bad = {n.op: "no TOSA lowering" for n in ig.nodes if n.op not in SUPPORTED}
        if not bad:
            try:
                to_tosa_text(ig)
            except CodegenError as e:
                m = re.match(r"\[%\S+ (\S+)\] (.*)", str(e))
                bad = {m.group(1): m.group(2)} if m else {"graph": str(e)}
        return bad

    def build(self, ig: Graph, **options) -> TosaArtifact:
        return compile_tosa(ig)

    def load(self, folder: Path, manifest: dict) -> TosaArtifact:
        return load_tosa(folder, manifest)


BACKEND = _TosaBackend()


def readme(m: dict) -> str:
    """How to run the folder with IREE alone."""
    b = m["boundary"]
    ins = "\n".join(f"    {s['value']}: {s['dtype']}" + (
        f"  = quantize({s['name']}, scale {s['quantize']['scale'][0]:.6g}, zero point "
        f"{s['quantize']['zero_point'][0]})" if s["quantize"] else "") for s in b["inputs"])
    outs = "\n".join(f"    {s['value']}: {s['dtype']}" + (
        "  (dequantize with the manifest's boundary.outputs)" if s["dequantize"] else "") for s in b["outputs"])
    return f"""# {m.get('graph', 'model')} — dyadiq TOSA artifact

`model.mlir`: the integer part of the model as MLIR TOSA (v1.0, generic form; TOSA ops used:
{', '.join(m['tosa_ops'])}). `model.vmfb`: the same module compiled by IREE {m['iree_version']} for
`llvm-cpu` with {' '.join(m['iree_flags'])} on the build machine (it needs a CPU with
{', '.join(m['required_cpu_features']) or 'no extension'}). `manifest.json` has the sha256 of every file.

`main` takes the quantized inputs and returns the integer outputs:
{ins}
Outputs:
{outs}

Quantize: `q = clip(round_half_even(x / scale) + zero_point, qmin, qmax)` (x / scale in float64);
dequantize: `scale * (q - zero_point)` (docs/numerics.md).

## Run with IREE only

```python
import numpy as np, iree.runtime as ireert
ctx = ireert.SystemContext(config=ireert.Config("local-task"))
ctx.add_vm_module(ireert.VmModule.copy_buffer(ctx.instance, open("model.vmfb", "rb").read()))
y = np.asarray(ctx.modules.module.main(q))          # q: the quantized input
```

Recompile for another CPU: `iree-compile model.mlir --iree-input-type=tosa --iree-hal-target-backends=llvm-cpu
--iree-llvmcpu-target-cpu=host -o model.vmfb`.

## Run with dyadiq (checks the sha256s and the CPU first, quantizes and dequantizes)

```python
import dyadiq.targets
y = dyadiq.targets.load_artifact("path/to/this/folder").run(x)
```
"""

