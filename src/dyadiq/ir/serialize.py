# SPDX-License-Identifier: Apache-2.0
"""``.dyq`` files: a zip of ``graph.mlir`` (text), ``weights.safetensors`` and ``meta.json``.

``meta.json`` holds the format version and the sha256 of the other two members, and the zip comment
holds the sha256 of every byte before it; loading checks the whole-file digest, the version, the member
hashes and the graph, so a truncated, tampered (any byte) or unknown-version file is refused.
Writing goes to a temporary file that is renamed into place: no half-written output.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load, save as st_save

from ..errors import DyadiqError, SerializationError
from .graph import Graph
from .parser import parse_mlir
from .printer import print_mlir

FORMAT = "dyadiq.dyq"
FORMAT_VERSION = 1
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)   # deterministic zip entries
_DIGEST_LEN = 64                       # hex sha256 of the file body, as the zip comment


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def dump_bytes(g: Graph) -> bytes:
    """The .dyq file contents of ``g`` (byte-identical for equal graphs)."""
    text = print_mlir(g).encode()
    weights = st_save({k: np.asarray(v, order="C") for k, v in sorted(g.constants.items())}) if g.constants else b""
    meta = json.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                       "sha256": {"graph.mlir": _sha(text), "weights.safetensors": _sha(weights)}},
                      sort_keys=True, indent=1).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in (("meta.json", meta), ("graph.mlir", text), ("weights.safetensors", weights)):
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
        z.comment = b"0" * _DIGEST_LEN
    data = buf.getvalue()
    body = data[:-_DIGEST_LEN]
    return body + _sha(body).encode()


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(g: Graph, path: str | os.PathLike) -> None:
    """Save ``g`` as a .dyq file."""
    atomic_write(path, dump_bytes(g))


def load_bytes(data: bytes, source: str = "<bytes>") -> Graph:
    """Parse and validate .dyq contents."""
    if len(data) <= _DIGEST_LEN or _sha(data[:-_DIGEST_LEN]).encode() != data[-_DIGEST_LEN:]:
        if not data.startswith(b"PK"):
            raise SerializationError(f"{source}: not a .dyq file")
        raise SerializationError(f"{source}: corrupted .dyq file (file checksum mismatch: truncated or modified)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
            missing = {"meta.json", "graph.mlir", "weights.safetensors"} - names
            if missing:
                raise SerializationError(f"{source}: not a .dyq file (missing {', '.join(sorted(missing))})")
            meta = json.loads(z.read("meta.json"))
            text, weights = z.read("graph.mlir"), z.read("weights.safetensors")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, EOFError, OSError,
            ValueError, KeyError) as e:
        raise SerializationError(f"{source}: corrupted .dyq file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SerializationError(f"{source}: not a .dyq file")
    if meta.get("version") != FORMAT_VERSION:
        raise SerializationError(f"{source}: unsupported .dyq version {meta.get('version')!r} "
                                 f"(this dyadiq reads version {FORMAT_VERSION})")
    sums = meta.get("sha256", {})
    for name, blob in (("graph.mlir", text), ("weights.safetensors", weights)):
        if sums.get(name) != _sha(blob):
            raise SerializationError(f"{source}: {name} does not match its checksum (file modified or corrupted)")
    try:
        consts = st_load(weights) if weights else {}
        return parse_mlir(text.decode(), consts)
    except DyadiqError as e:
        raise SerializationError(f"{source}: invalid graph: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoding failure of a checksummed file is corruption
        raise SerializationError(f"{source}: invalid contents ({type(e).__name__}: {e})") from None


def load(path: str | os.PathLike) -> Graph:
    """Load a .dyq file."""
    p = Path(path)
    if not p.is_file():
        raise SerializationError(f"{p}: no such file")
    return load_bytes(p.read_bytes(), str(p))
