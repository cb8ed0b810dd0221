# SPDX-License-Identifier: Apache-2.0
"""The ``hls`` target: integer graph -> Vitis-HLS C++ project (``codegen.hls``), run by g++ C-simulation.

Artifact folder: ``defines.h``, ``weights.h``, ``model.h``, ``model.cpp`` (the synthesizable kernel),
``tb.cpp`` (testbench: raw binary files in and out), ``build.tcl`` (Vitis HLS: csim, csynth, cosim,
export), ``tb_in*.bin`` (a zero sample for build.tcl), ``README.md`` and ``manifest.json`` (with the
``hls`` section: per-value ``ap_int`` types, accumulator widths, the resource and latency model).

``run`` compiles ``tb.cpp`` + ``model.cpp`` (as one translation unit) once with
``g++ -std=c++14 -O1 -Wall -Wextra -Werror -isystem <hls4ml>/templates/vivado/ap_types`` into
``<cache>/<sha256 of the sources and the compiler>/csim`` (default cache ``~/.cache/dyadiq/hls``,
``$DYADIQ_HLS_CACHE`` overrides), then runs it on the inputs: float inputs go through the C++ quantize
and float outputs come from the C++ dequantize, so the outputs are the interpreter's bits.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..codegen.hls import DEFAULT_PART, IO_STYLES, generate
from ..errors import ArtifactError, CodegenError
from ..ir.graph import Graph
from .artifact import Artifact, graph_manifest
from .backend import Option

CXXFLAGS = ("-std=c++14", "-O1", "-Wall", "-Wextra", "-Werror")
SOURCES = ("defines.h", "weights.h", "model.h", "model.cpp", "tb.cpp")


def ap_types_dir() -> Path:
    """The Xilinx ap_types headers shipped in the hls4ml wheel."""
    try:
        import hls4ml
    except ImportError as e:
        raise ArtifactError("the hls target needs the ap_types headers from hls4ml (pip install hls4ml)") from e
    d = Path(os.path.dirname(hls4ml.__file__)) / "templates" / "vivado" / "ap_types"
    if not (d / "ap_int.h").is_file():
        raise ArtifactError(f"{d}: ap_int.h not found in the hls4ml package")
    return d


def cache_root() -> Path:
    env = os.environ.get("DYADIQ_HLS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dyadiq" / "hls"


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise ArtifactError(f"C-simulation needs a C++ compiler ({cxx!r} not found; set CXX)")
    return cxx


def build_csim(files: dict[str, str], cache: Path | None = None) -> Path:
    """The C-simulation executable for ``files`` (built once per content hash, atomically)."""
    cxx = _compiler()
    inc = ap_types_dir()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    h.update(" ".join([*version, *CXXFLAGS, str(inc)]).encode())
    root = (cache or cache_root()) / h.hexdigest()[:24]
    exe = root / "csim"
    if exe.is_file():
        return exe
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for name in SOURCES:
            (Path(tmp) / name).write_text(files[name])
        out = Path(tmp) / "csim"
        (Path(tmp) / "csim.cpp").write_text('#include "tb.cpp"\n#include "model.cpp"\n')   # one TU: ap_int parsed once
        cmd = [cxx, *CXXFLAGS, "-isystem", str(inc), "csim.cpp", "-o", str(out)]
        r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            err = (r.stderr.strip().splitlines() or ["?"])
            first = next((line for line in err if "error" in line), err[0])
            raise CodegenError(f"g++ failed on the generated HLS code: {first}")
        os.replace(out, exe)
    return exe


class HlsArtifact(Artifact):
    """An HLS C++ project; ``run`` is the g++ C-simulation (bit-exact with the integer interpreter)."""

    target = "hls"

    def __init__(self, manifest: dict, files: dict[str, str], extra: dict[str, bytes] | None = None):
        super().__init__(manifest)
        self.files = dict(files)
        self.extra = dict(extra or {})
        self._exe: Path | None = None

    def executable(self) -> Path:
        if self._exe is None or not self._exe.is_file():
            self._exe = build_csim(self.files)
        return self._exe

    def run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``N`` samples in one C-simulation process: ``arrays[i]`` is ``[N, *shape_i]``; returns the
        outputs as ``[N, *shape]`` arrays."""
        specs_in, specs_out = self.manifest["inputs"], self.manifest["outputs"]
        n = int(arrays[0].shape[0]) if arrays else 1
        exe = self.executable()
        with tempfile.TemporaryDirectory(prefix="dyadiq-csim-") as tmp:
            ins, outs = [], []
            for j, (s, a) in enumerate(zip(specs_in, arrays)):
                p = Path(tmp) / f"in{j}.bin"
                np.ascontiguousarray(a, dtype=np.dtype(s["numpy_dtype"])).reshape(n, -1).tofile(p)
                ins.append(str(p))
            outs = [str(Path(tmp) / f"out{j}.bin") for j in range(len(specs_out))]
            r = subprocess.run([str(exe), str(n), *ins, *outs], capture_output=True, text=True)
            if r.returncode != 0:
                raise ArtifactError(f"C-simulation failed (exit {r.returncode}): {r.stderr.strip()[:200]}")
            return [np.fromfile(p, dtype=np.dtype(s["numpy_dtype"])).reshape([n, *s["shape"]])
                    for p, s in zip(outs, specs_out)]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [o[0] for o in self.run_batch([a[None] for a in arrays])]

    def _write_files(self, folder: Path) -> None:
        for name, text in sorted(self.files.items()):
            (folder / name).write_text(text)
        for name, data in sorted(self.extra.items()):
            (folder / name).write_bytes(data)
        (folder / "README.md").write_text(readme(self.manifest))


def compile_hls(ig: Graph, *, reuse_factor: int = 1, io: str = "parallel", part: str = DEFAULT_PART,
                acc_override: dict[str, int] | None = None) -> HlsArtifact:
    """Generate the HLS project of the integer graph ``ig`` (no compiler runs until ``run``)."""
    proj = generate(ig, reuse_factor=reuse_factor, io=io, part=part, acc_override=acc_override)
    extra = {f"tb_in{j}.bin": np.zeros(ig.type_of(v).shape, ig.type_of(v).np_dtype).tobytes()
             for j, v in enumerate(ig.inputs)}
    manifest = {**graph_manifest(ig), "target": "hls", "top": "dyadiq_top", "io": io,
                "reuse_factor": reuse_factor, "part": part, "cxxflags": list(CXXFLAGS),
                "hls": {"value_types": proj.value_types, "acc_bits": proj.acc_bits,
                        "resources": proj.resources}}
    return HlsArtifact(manifest, proj.files, extra)


def load_hls(folder: Path, manifest: dict) -> HlsArtifact:
    files = {}
    for name in SOURCES + ("build.tcl",):
        p = folder / name
        if not p.is_file():
            raise ArtifactError(f"{p}: missing from the hls artifact")
        files[name] = p.read_text()
    extra = {p.name: p.read_bytes() for p in sorted(folder.glob("tb_in*.bin"))}
    return HlsArtifact(manifest, files, extra)


class _HlsBackend:
    """The ``hls`` Backend (``targets.backend``): Vitis-HLS C++ with per-value ap_int widths."""

    name = "hls"
    help = "FPGA: Vitis-HLS C++ project (ap_int per layer); runs as g++ C-simulation"
    options = (
        Option("reuse_factor", int, 1, "HLS reuse factor: each multiplier is used N times per step", metavar="N"),
        Option("io", str, "parallel", "HLS interface: parallel (arrays) or stream (hls::stream + DATAFLOW)",
               choices=IO_STYLES),
        Option("part", str, DEFAULT_PART, "FPGA part for build.tcl", metavar="NAME"),
    )

    def unsupported(self, ig: Graph) -> dict[str, str]:
        from ..codegen.hls import unsupported
        return unsupported(ig)

    def build(self, ig: Graph, **options) -> HlsArtifact:
        return compile_hls(ig, **options)

    def load(self, folder: Path, manifest: dict) -> HlsArtifact:
        return load_hls(folder, manifest)


BACKEND = _HlsBackend()


def readme(m: dict) -> str:
    """How to simulate and synthesize the project."""
    res = m["hls"]["resources"]
    ins = "\n".join(f"    {s['name']}: {s['numpy_dtype']} {s['shape']}" for s in m["inputs"])
    outs = "\n".join(f"    {s['name']}: {s['numpy_dtype']} {s['shape']}" for s in m["outputs"])
    rows = "\n".join(
        f"| {r['name']} | {r['op']} | {r.get('operand_bits', '')} | {r.get('acc_bits', '')} | {r['dsp']} | "
        f"{r['lut']} | {r['ii']} | {r['latency']} |" for r in res["layers"] if r.get("mac") or r["dsp"])
    return f"""# {m.get('graph', 'model')} — dyadiq HLS project

Integer-only (dyadic) C++ for Vitis HLS, generated by dyadiq {m['dyadiq_version']}: top function
`{m['top']}` (io `{m['io']}`, reuse factor {m['reuse_factor']}, part `{m['part']}`). Every value has
its own `ap_int<W>`/`ap_uint<W>` (`defines.h`), weights are const ROMs (`weights.h`), and the C-simulation
is bit-exact with `dyadiq.interp.run(ig, x)`.

Inputs (in call order):
{ins}
Outputs:
{outs}

## C-simulation with g++ only

    g++ -std=c++14 -O1 -I<hls4ml>/templates/vivado/ap_types tb.cpp model.cpp -o csim
    ./csim N input0.bin ... output0.bin ...      # N samples; raw little-endian arrays of the dtypes above

or `dyadiq run THIS_FOLDER --input NAME=x.npy -o y.npy` (builds and caches the binary).

## Vitis HLS

    vitis_hls -f build.tcl                          # csim, csynth, cosim, export (IP catalog)
    vitis_hls -f build.tcl -tclargs "csim csynth"   # a subset

`tb_in0.bin` is a zero sample for the C/RTL co-simulation; replace it with real inputs.

## Resource model (estimate; rules in docs/hls.md)

DSP {res['dsp']} (MAC arrays {res['mac_dsp']}), LUT {res['lut']} (MAC arrays {res['mac_lut']}), BRAM18
{res['bram18']}, latency {res['latency_cycles']} cycles, II {res['ii_cycles']} cycles.

| layer | op | operand bits | acc bits | DSP | LUT | II | latency |
|---|---|---|---|---|---|---|---|
{rows}
"""
