# SPDX-License-Identifier: Apache-2.0
"""``--input-shape NAME=D0,D1,...`` for every command that reads a model file, and calibration sample shapes.

A model file with dynamic input dims gets static ones from, in order: the flag, the calibration array's
sample shape (``--calib``: ``shape[1:]`` of a ``.npy``, or of each ``.npz`` array), and 1 for a dynamic
leading (batch) dim. ``api.load`` does the resolving; this module only parses and peeks.
"""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from .errors import InputError


def add_input_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=None, metavar="NAME=D0,D1,...",
                   help="static shape of a model input with dynamic dims (repeatable); a dynamic batch "
                        "dim defaults to 1")


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,224,224"]`` -> ``{"x": (1, 3, 224, 224)}``; malformed text is an ``InputError``."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs or ():
        name, eq, dims = spec.partition("=")
        name = name.strip()
        if not eq or not name or not dims.strip():
            raise InputError(f"--input-shape {spec!r}: expected NAME=D0,D1,... (e.g. x=1,3,224,224)")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise InputError(f"--input-shape {spec!r}: dims must be integers, got {dims!r}") from None
        if any(d < 0 for d in shape):
            raise InputError(f"--input-shape {spec!r}: dims must be >= 0")
        if name in out and out[name] != shape:
            raise InputError(f"--input-shape gives input {name!r} twice with different shapes "
                             f"{list(out[name])} and {list(shape)}")
        out[name] = shape
    return out


def calib_sample_shapes(path: str | None) -> dict[str | None, tuple[int, ...]]:
    """Sample shapes (``shape[1:]``) of calibration data: ``{None: s}`` for a ``.npy``, by name for a ``.npz``;
    empty for an image folder or an unreadable file (the calibration loader reports those)."""
    if not path:
        return {}
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy" and p.is_file():
            a = np.load(p, mmap_mode="r", allow_pickle=False)
            return {None: tuple(a.shape[1:])} if a.ndim >= 1 else {}
        if p.suffix.lower() == ".npz" and p.is_file():
            with np.load(p, allow_pickle=False) as z:
                shapes = {k: tuple(z[k].shape[1:]) for k in z.files if z[k].ndim >= 1}
            if len(shapes) == 1:
                shapes[None] = next(iter(shapes.values()))
            return shapes
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        return {}
    return {}


def input_sample_shapes(specs: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    """Sample shapes (``shape[1:]``) of ``dyadiq run --input`` arrays (``NAME=FILE.npy``, ``FILE.npy``, ``.npz``):
    the dims after the batch of a model file's dynamic inputs come from the data it is run on."""
    out: dict[str | None, tuple[int, ...]] = {}
    for spec in specs or ():
        name, eq, path = spec.partition("=")
        name, path = (name, path) if eq else (None, spec)
        shapes = calib_sample_shapes(path)
        if path.lower().endswith(".npy") and None in shapes:
            out[name] = shapes[None]
        elif path.lower().endswith(".npz"):
            out.update(shapes)
    return out
