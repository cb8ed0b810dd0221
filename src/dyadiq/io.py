# SPDX-License-Identifier: Apache-2.0
"""Input and output arrays at the CLI boundary: ``.npy`` / ``.npz`` files checked against a graph.

Inputs are given as ``NAME=FILE.npy``, ``FILE.npy`` (graphs with one input), ``NAME=FILE.npz``
(the array of that name, or the only array) or ``FILE.npz`` (one array per graph input, by name).
An array must have the input's shape, or hold ``k`` batches of it along the first axis (16 samples for a
batch-1 model: ``split_batches`` runs them batch by batch and ``join_batches`` concatenates the outputs), and
the input's dtype; a float array is accepted for a float input (cast as the interpreter does; float64 with a
warning). Files are read without pickle by one loader (``read_array_file``, also for calibration data).
Outputs are written atomically: ``.npy`` for one output, ``.npz`` (one array per output name) for any number.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import DyadiqWarning, InputError
from .ir.serialize import atomic_write
from .ir.types import TensorType

OUTPUT_SUFFIXES = (".npy", ".npz")


def read_array_file(path: str | os.PathLike) -> dict[str, np.ndarray] | np.ndarray:
    """An ``.npy`` array or the arrays of an ``.npz`` by name (no pickle); InputError when unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.suffix not in (".npy", ".npz"):
        raise InputError(f"{p}: expected a .npy or .npz file")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return data
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(f"{p}: holds pickled Python objects, which dyadiq never loads "
                             f"(save a numeric array with np.save)") from None
        raise InputError(f"{p}: not a valid {p.suffix} file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{p}: not a valid {p.suffix} file ({e})") from None


def warn(msg: str) -> None:
    """Questionable input that is still used: a DyadiqWarning (one ``warning:`` line on the CLI)."""
    import warnings
    warnings.warn(msg, DyadiqWarning, stacklevel=3)


def only_array(data: dict[str, np.ndarray], input_name: str, file) -> np.ndarray:
    """The single array of an .npz for ``input_name``, with a warning when its name is another one."""
    (key, arr), = data.items()
    if key != input_name:
        warn(f"{file}: its one array {key!r} names no input; it is used for input {input_name!r}")
    return arr


def n_batches(shape: tuple[int, ...], t: TensorType) -> int | None:
    """k when ``shape`` is ``t.shape`` with k times its batch (first) dim, else None."""
    if tuple(shape) == t.shape:
        return 1
    if len(shape) != t.rank or t.rank == 0 or t.shape[0] < 1 or tuple(shape[1:]) != t.shape[1:]:
        return None
    return shape[0] // t.shape[0] if shape[0] % t.shape[0] == 0 and shape[0] > 0 else None


def check_array(name: str, arr: np.ndarray, t: TensorType, source: str = "") -> np.ndarray:
    """``arr`` if it fits input ``name`` of type ``t`` (or k batches of it; float->float cast allowed),
    else InputError."""
    where = f" (from {source})" if source else ""
    if arr.dtype.kind not in "biuf":
        raise InputError(f"input {name!r}{where}: expected dtype {t.dtype}, got {arr.dtype} (not numeric)")
    if n_batches(arr.shape, t) is None:
        more = (f" or N x {t.shape[0]} samples [{t.shape[0]}N, {', '.join(map(str, t.shape[1:]))}]"
                if t.rank else "")
        raise InputError(f"input {name!r}{where}: expected shape {list(t.shape)}{more}, got {list(arr.shape)}")
    if arr.dtype != t.np_dtype:
        if not (t.is_float and arr.dtype.kind == "f"):
            raise InputError(f"input {name!r}{where}: expected dtype {t.dtype} ({t.np_dtype}), got {arr.dtype}")
        if arr.dtype.itemsize > t.np_dtype.itemsize:
            warn(f"input {name!r}{where}: {arr.dtype} values are cast to {t.np_dtype}")
        arr = arr.astype(t.np_dtype)
    return arr


def check_no_nan(name: str, arr: np.ndarray) -> None:
    """InputError when a float input holds NaN: quantizing it has no defined code (the interpreter and the
    compiled kernels would each pick one). Infinities are fine: they clamp to the range ends everywhere."""
    a = np.asarray(arr)
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise InputError(f"input {name!r}: {int(np.isnan(a).sum())} of {a.size} values are NaN; a quantized "
                         "model takes numbers only")


def split_batches(arrays: Mapping[str, np.ndarray], types: Mapping[str, TensorType]) -> list[dict[str, np.ndarray]]:
    """``arrays`` (checked by ``check_array``) as a list of per-batch dicts; InputError when the inputs hold
    different numbers of batches."""
    ks = {n: n_batches(np.shape(a), types[n]) for n, a in arrays.items()}
    if None in ks.values() or len(set(ks.values())) > 1:
        raise InputError(f"inputs hold different numbers of batches: {ks}")
    k = next(iter(ks.values()), 1)
    if k == 1:
        return [dict(arrays)]
    return [{n: a[i * types[n].shape[0]:(i + 1) * types[n].shape[0]] for n, a in arrays.items()} for i in range(k)]


def join_batches(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Per-batch outputs concatenated along the batch (first) axis."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if np.ndim(parts[0]) else np.stack(parts)


def _split_spec(spec: str, names: Sequence[str]) -> tuple[str | None, str]:
    """``NAME=FILE`` -> (NAME, FILE); a bare ``FILE`` (also one that contains '=') -> (None, FILE)."""
    head, eq, tail = spec.partition("=")
    if eq and (head in names or not Path(spec).exists()):
        if head not in names:
            raise InputError(f"unknown input {head!r} in {spec!r} (graph inputs: {', '.join(names)})")
        return head, tail
    return None, spec


def load_inputs(specs: Sequence[str], input_types: Mapping[str, TensorType]) -> dict[str, np.ndarray]:
    """Read ``--input`` specs and check them against ``input_types`` (graph input name -> type)."""
    names = list(input_types)
    found: dict[str, tuple[np.ndarray, str]] = {}

    def put(name: str, arr, source: str):
        if name in found:
            raise InputError(f"input {name!r} given twice ({found[name][1]} and {source})")
        found[name] = (arr, source)

    for spec in specs:
        name, file = _split_spec(spec, names)
        data = read_array_file(file)
        if isinstance(data, dict):
            if name is not None:
                if name in data:
                    put(name, data[name], file)
                elif len(data) == 1:
                    put(name, only_array(data, name, file), file)
                else:
                    raise InputError(f"{file}: has no array {name!r} (arrays: {', '.join(sorted(data))})")
                continue
            if len(names) == 1 and len(data) == 1:
                put(names[0], only_array(data, names[0], file), file)
                continue
            unknown = sorted(set(data) - set(names))
            if unknown:
                raise InputError(f"{file}: arrays {unknown} are not graph inputs (graph inputs: {', '.join(names)})")
            for k, v in data.items():
                put(k, v, file)
        else:
            if name is None:
                if len(names) != 1:
                    raise InputError(f"the graph has {len(names)} inputs ({', '.join(names)}): "
                                     f"give each as NAME=FILE.npy")
                name = names[0]
            put(name, data, file)
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)} (give --input NAME=FILE.npy)")
    out = {n: check_array(n, arr, input_types[n], src) for n, (arr, src) in found.items()}
    split_batches(out, input_types)                   # the same number of batches in every input
    return out


def check_output_path(path: str | os.PathLike, n_outputs: int) -> Path:
    """Validate ``-o`` before any work: a .npy for one output or a .npz, in an existing folder."""
    p = Path(path)
    if p.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{p}: output must be a .npy (one output) or .npz file")
    if p.suffix == ".npy" and n_outputs != 1:
        raise InputError(f"{p}: the model has {n_outputs} outputs; write them to a .npz file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{p}: folder {parent} does not exist")
    if p.is_dir():
        raise InputError(f"{p}: is a folder")
    return p


def save_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray]) -> Path:
    """Write outputs atomically: the single array as ``.npy``, or all by name as ``.npz``."""
    p = check_output_path(path, len(outputs))
    buf = io.BytesIO()
    if p.suffix == ".npy":
        np.save(buf, np.asarray(next(iter(outputs.values()))), allow_pickle=False)
    else:
        np.savez(buf, **{k: np.asarray(v) for k, v in outputs.items()})
    try:
        atomic_write(p, buf.getvalue())
    except OSError as e:
        raise InputError(f"{p}: cannot write ({e.strerror or e})") from None
    return p
