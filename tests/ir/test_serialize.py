# SPDX-License-Identifier: Apache-2.0
""".dyq files round-trip byte-identically and refuse truncated, tampered or foreign files."""
import hashlib
import json
import zipfile

import numpy as np
import pytest

from dyadiq.errors import SerializationError
from dyadiq.ir import GraphBuilder, QuantType
from dyadiq.ir.serialize import dump_bytes, load, load_bytes, save


def _graph():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8), quant=QuantType.make(8, True, 0.02, 1))
    w = b.const("w", np.arange(4 * 3 * 9, dtype=np.float32).reshape(4, 3, 3, 3),
                quant=QuantType.make(8, True, np.arange(1, 5) / 100, 0, axis=0))
    return b.build([b.op("conv2d", [x, w], pad=(1, 1, 1, 1))])


def _rewrite(src, out, edit):
    """Copy a .dyq changing members with ``edit(name, data)``, then re-seal its whole-file digest."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, edit(item.filename, zin.read(item)))
        zout.comment = b"0" * 64
    body = out.read_bytes()[:-64]
    out.write_bytes(body + hashlib.sha256(body).hexdigest().encode())


def test_save_load_roundtrip(tmp_path):
    g = _graph()
    save(g, tmp_path / "m.dyq")
    assert load(tmp_path / "m.dyq") == g


def test_dump_is_deterministic():
    assert dump_bytes(_graph()) == dump_bytes(_graph())


def test_every_flipped_byte_is_detected():
    data = dump_bytes(_graph())
    for i in range(0, len(data), 7):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(SerializationError):
            load_bytes(bytes(bad))


def test_truncated_file_is_refused():
    data = dump_bytes(_graph())
    with pytest.raises(SerializationError, match="corrupted"):
        load_bytes(data[: len(data) // 2])


def test_edited_member_with_valid_zip_fails_checksum(tmp_path):
    src = tmp_path / "m.dyq"
    save(_graph(), src)
    out = tmp_path / "edited.dyq"
    _rewrite(src, out, lambda name, data: data.replace(b"pad = array<i64: 1, 1, 1, 1>", b"pad = array<i64: 0, 0, 0, 0>")
             if name == "graph.mlir" else data)
    with pytest.raises(SerializationError, match="checksum"):
        load(out)


def test_unknown_version_is_refused(tmp_path):
    src = tmp_path / "m.dyq"
    save(_graph(), src)
    out = tmp_path / "v9.dyq"

    def bump(name, data):
        if name != "meta.json":
            return data
        meta = json.loads(data)
        meta["version"] = 9
        return json.dumps(meta).encode()
    _rewrite(src, out, bump)
    with pytest.raises(SerializationError, match="unsupported .dyq version 9"):
        load(out)


def test_missing_file(tmp_path):
    with pytest.raises(SerializationError, match="no such file"):
        load(tmp_path / "nope.dyq")
