# SPDX-License-Identifier: Apache-2.0
"""Target-independent artifact folder: manifest, checksums, input checks, atomic save.

An artifact folder holds the target's built files, ``README.md`` and ``manifest.json``. The manifest
gives the target, the inputs and outputs (name, shape, dtype, quantization), per-layer weight bits,
the weight bytes, the dyadiq and toolchain versions, and the sha256 of every other file in the folder;
``verify_folder`` checks all of them before anything is loaded.

Weight bytes (``weight_bytes`` in the manifest; a property of the integer graph, not of the target):

    weights      = sum over qconv2d/qlinear weights W of ceil(bits(W) * numel(W) / 8)
    quant_params = sum over every other constant C of the integer graph of numel(C) * bytes(dtype(C))
    weight_bytes = weights + quant_params

``bits(W)`` is the weight's QuantType bit width (2..8). The other constants are the int32 biases,
requantize multipliers and shifts (int32), clamp bounds (int32) and LUT tables (their output dtype).
Scalars held in op attributes (zero points, ``qadd`` multipliers, the input/output scales) are code,
not counted.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from ..ir.weights import WEIGHT_OPS, weight_bits
from ..errors import ArtifactError, InputError
from ..ir.graph import Graph
from ..ir.types import DTYPES, TensorType

FORMAT = "dyadiq.artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dyadiq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("dyadiq")
    except PackageNotFoundError:
        return "unknown"


# ---- what the manifest says about the graph ---------------------------------------------------------
def _quant_json(q) -> dict | None:
    if q is None:
        return None
    return {"bits": q.bits, "signed": q.signed, "axis": q.axis, "scale": list(q.scale),
            "zero_point": list(q.zero_point)}


def _io_quant(ig: Graph, name: str, output: bool) -> dict | None:
    """Quantization of a graph input/output: its own QuantType (raw graphs) or its (de)quantize node's."""
    if ig.quant_of(name) is not None:
        return _quant_json(ig.quant_of(name))
    nodes = [ig.producers().get(name)] if output else ig.consumers().get(name, [])
    for n in nodes:
        if n is not None and n.op in ("quantize", "dequantize"):
            a = n.attr_dict
            scale = tuple(a["scale"])
            zp = tuple(a["zero_point"])
            q = ig.quant_of(n.inputs[0]) if n.op == "dequantize" else None
            bits = a.get("bits", q.bits if q else None)
            signed = a.get("signed", q.signed if q else None)
            return {"bits": bits, "signed": signed, "axis": a.get("axis"), "scale": list(scale),
                    "zero_point": list(zp)}
    return None


def io_spec(ig: Graph) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) entries: name, shape, dtype (dyadiq name), numpy dtype, quant."""
    def entry(name, output):
        t = ig.type_of(name)
        return {"name": name, "shape": list(t.shape), "dtype": t.dtype, "numpy_dtype": str(t.np_dtype),
                "quant": _io_quant(ig, name, output)}
    return [entry(n, False) for n in ig.inputs], [entry(n, True) for n in ig.outputs]


def layers(ig: Graph) -> list[dict]:
    """Per weighted layer: node, op, weight name, bits, parameter count and packed bytes."""
    out = []
    for n in ig.nodes:
        if n.op in WEIGHT_OPS:
            w = n.inputs[1]
            bits, numel = weight_bits(ig, w), ig.type_of(w).size
            out.append({"name": n.name, "op": n.op, "weight": w, "bits": bits, "params": numel,
                        "bytes": math.ceil(bits * numel / 8)})
    return out


def weight_bytes(ig: Graph) -> dict:
    """``{"weights", "quant_params", "total"}`` as defined in the module docstring."""
    ws = {layer["weight"]: layer["bytes"] for layer in layers(ig)}
    other = sum(int(a.size) * DTYPES[ig.type_of(k).dtype].itemsize for k, a in ig.constants.items() if k not in ws)
    return {"weights": sum(ws.values()), "quant_params": other, "total": sum(ws.values()) + other}


def graph_manifest(ig: Graph) -> dict:
    """The graph-derived part of a manifest."""
    ins, outs = io_spec(ig)
    wb = weight_bytes(ig)
    return {"format": FORMAT, "version": FORMAT_VERSION, "graph": ig.name, "inputs": ins, "outputs": outs,
            "layers": layers(ig), "weight_bytes": wb["total"], "weight_bytes_detail": wb,
            "dyadiq_version": dyadiq_version()}


# ---- inputs -------------------------------------------------------------------------------------------
def _by_name(names: list[str], x: Mapping) -> list:
    """The values of the mapping ``x`` in the order of ``names`` (InputError for unknown or missing names)."""
    extra = sorted(set(x) - set(names))
    if extra:
        raise InputError(f"unknown input(s) {extra} (inputs: {', '.join(names)})")
    missing = [n for n in names if n not in x]
    if missing:
        raise InputError(f"missing input {missing[0]!r} (inputs: {', '.join(names)})")
    return [x[n] for n in names]


def _as_list(specs: list[dict], x) -> list:
    """``x`` (an array, a sequence or a name -> array mapping) as a list in input order."""
    if isinstance(x, Mapping):
        return _by_name([s["name"] for s in specs], x)
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def bind_inputs(specs: list[dict], x) -> list[np.ndarray]:
    """Arrays in input order from an array (one input), a sequence or a name -> array mapping.

    Float inputs accept any float array without NaN (cast to float32, as the interpreter does); integer
    inputs need their exact dtype. Anything else raises InputError naming the input.
    """
    from ..io import check_no_nan
    names = [s["name"] for s in specs]
    if isinstance(x, Mapping):
        arrays = _by_name(names, x)
    elif isinstance(x, (list, tuple)):
        if len(x) != len(names):
            raise InputError(f"expected {len(names)} inputs ({', '.join(names)}), got {len(x)}")
        arrays = list(x)
    else:
        if len(names) != 1:
            raise InputError(f"this model takes {len(names)} inputs ({', '.join(names)}): pass a dict")
        arrays = [x]
    out = []
    for spec, a in zip(specs, arrays):
        a = np.asarray(a)
        want = np.dtype(spec["numpy_dtype"])
        if list(a.shape) != spec["shape"]:
            raise InputError(f"input {spec['name']!r}: expected shape {spec['shape']}, got {list(a.shape)}")
        if a.dtype != want:
            if not (want.kind == "f" and a.dtype.kind == "f"):
                raise InputError(f"input {spec['name']!r}: expected dtype {want} ({spec['dtype']}), got {a.dtype}")
            a = a.astype(want)
        check_no_nan(spec["name"], a)
        out.append(np.ascontiguousarray(a))
    return out


# ---- folder -------------------------------------------------------------------------------------------
def write_folder(dest: str | os.PathLike, manifest: dict, write_files) -> Path:
    """Build the folder in a temporary sibling (``write_files(tmp)`` writes the target's files), add the
    checksums and the manifest, then rename it into place; an existing artifact folder is replaced."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / MANIFEST).exists())):
        raise InputError(f"{dest}: exists and is not an artifact folder; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        write_files(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != MANIFEST)
        manifest = {**manifest, "files": {name: sha256_file(tmp / name) for name in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if dest.exists() and _exchange(tmp, dest):       # one atomic step: dest is old or new, never absent
            shutil.rmtree(tmp, ignore_errors=True)       # (tmp now holds the previous artifact)
        else:
            old = None
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
            os.replace(tmp, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unavailable."""
    import ctypes
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def verify_folder(path: str | os.PathLike) -> dict:
    """The manifest of an artifact folder after checking its format and every file's sha256."""
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"{p}: no such artifact folder")
    mf = p / MANIFEST
    if not mf.is_file():
        raise ArtifactError(f"{p}: {MANIFEST} is missing (not an artifact folder, or a damaged one)")
    try:
        manifest = json.loads(mf.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mf}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mf}: not a dyadiq artifact manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ArtifactError(f"{mf}: unsupported artifact version {manifest.get('version')!r} "
                            f"(this dyadiq reads version {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{mf}: lists no files")
    for key in ("inputs", "outputs"):
        check_io_specs(manifest.get(key), f"{mf}: {key}")
    for key, kind in (("target", str), ("entry", str), ("arch", str), ("mcpu", str), ("required_cpu_features", list)):
        v = manifest.get(key)
        if (key in manifest or key == "target") and (not isinstance(v, kind) or (
                kind is list and not all(isinstance(x, str) for x in v))):
            raise ArtifactError(f"{mf}: bad {key!r} entry {v!r}")
    for name, digest in sorted(files.items()):
        f = p / name
        if Path(name).name != name:
            raise ArtifactError(f"{mf}: bad file name {name!r}")
        if not f.is_file():
            raise ArtifactError(f"{f}: missing (listed in {MANIFEST})")
        if sha256_file(f) != digest:
            raise ArtifactError(f"{f}: sha256 does not match {MANIFEST} (file modified or corrupted)")
    return manifest


def check_io_specs(specs, where: str) -> None:
    """ArtifactError unless ``specs`` is a list of {name, shape (ints >= 0), dtype, numpy_dtype} that agree."""
    if not isinstance(specs, list) or not specs:
        raise ArtifactError(f"{where}: expected a non-empty list of tensors")
    names = set()
    for s in specs:
        if not isinstance(s, dict):
            raise ArtifactError(f"{where}: entry {s!r} is not an object")
        name, shape, dt = s.get("name"), s.get("shape"), s.get("dtype")
        if not isinstance(name, str) or not name or name in names:
            raise ArtifactError(f"{where}: bad or repeated tensor name {name!r}")
        names.add(name)
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 1 << 31 for d in shape):
            raise ArtifactError(f"{where}: {name!r} has a bad shape {shape!r}")
        if dt not in DTYPES or s.get("numpy_dtype") != str(DTYPES[dt]):
            raise ArtifactError(f"{where}: {name!r} has a bad dtype {dt!r} / {s.get('numpy_dtype')!r}")


class Artifact:
    """A compiled model: ``run(x)``, ``save(dir)``; ``manifest`` describes it (see module docstring)."""

    target = "?"

    def __init__(self, manifest: dict):
        self.manifest = manifest

    @property
    def inputs(self) -> list[str]:
        """Input names, in call order."""
        return [s["name"] for s in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[str]:
        """Output names, in the order ``run`` returns them."""
        return [s["name"] for s in self.manifest["outputs"]]

    @property
    def input_types(self) -> dict[str, TensorType]:
        return {s["name"]: TensorType(tuple(s["shape"]), s["dtype"]) for s in self.manifest["inputs"]}

    @property
    def output_types(self) -> dict[str, TensorType]:
        return {s["name"]: TensorType(tuple(s["shape"]), s["dtype"]) for s in self.manifest["outputs"]}

    def run(self, x) -> np.ndarray | list[np.ndarray]:
        """Outputs for inputs ``x`` (array, sequence or dict); one array when there is one output. An input
        holding k batches of the model's batch size (16 samples of a batch-1 model) runs batch by batch."""
        from ..io import join_batches, n_batches
        specs = self.manifest["inputs"]
        arrays = _as_list(specs, x)
        types = [TensorType(tuple(s["shape"]), s["dtype"]) for s in specs]
        ks = {n_batches(np.shape(a), t) for a, t in zip(arrays, types)}
        k = ks.pop() if len(ks) == 1 else None
        if k is None or k == 1:
            outs = self._run(bind_inputs(specs, arrays))
        else:
            parts = [self._run(bind_inputs(specs, [np.asarray(a)[i * t.shape[0]:(i + 1) * t.shape[0]]
                                                   for a, t in zip(arrays, types)])) for i in range(k)]
            outs = [join_batches([p[j] for p in parts]) for j in range(len(parts[0]))]
        return outs[0] if len(outs) == 1 else outs

    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact folder atomically (temporary sibling folder, then rename)."""
        return write_folder(path, {k: v for k, v in self.manifest.items() if k != "files"}, self._write_files)

    # target hooks
    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _write_files(self, folder: Path) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}: {t}" for k, t in self.input_types.items())
        return f"<{type(self).__name__} target={self.target} ({ins})>"
