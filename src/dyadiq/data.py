# SPDX-License-Identifier: Apache-2.0
"""Calibration data from files: ``load_calib(path, g, preprocess=...)``.

- ``.npy``: one array whose first axis indexes samples, already preprocessed (one-input graphs).
- ``.npz``: one array per graph input name (a one-input graph also takes a single array of any name).
- a folder of images (``.png .jpg .jpeg .bmp``, sorted by name) for a one-input NCHW graph, each
  image preprocessed by a named loader from ``PREPROCESS`` to the input's ``[3, H, W]``:

  - ``lite``: EfficientNet-Lite eval preprocessing (central crop ``H/(H+32)`` of the shorter side,
    resize, ``(x - 127) / 128``), ``dyadiq.zoo.preprocess_lite``;
  - ``imagenet``: resize the shorter side to ``256/224 * H``, central crop ``H x W``, ``x / 255``, then
    ``(x - mean) / std`` with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

Files are never unpickled. Every problem is an ``InputError`` naming the file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError
from .ir.graph import Graph

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _lite(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from .zoo import preprocess_lite
    if hw[0] != hw[1]:
        raise InputError(f"'lite' preprocessing makes square images, the model wants {hw[0]}x{hw[1]}")
    return preprocess_lite(img, hw[0])


def _imagenet(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize
    h, w = img.shape[:2]
    short = round(max(hw) * 256 / 224)
    k = short / min(h, w)
    nh, nw = max(hw[0], round(h * k)), max(hw[1], round(w * k))
    x = resize(img.astype(np.float32), (nh, nw), order=1, mode="edge", anti_aliasing=True, preserve_range=True)
    top, left = (nh - hw[0]) // 2, (nw - hw[1]) // 2
    x = x[top:top + hw[0], left:left + hw[1]] / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


# name -> (uint8 HxWx3 image, (H, W)) -> float32 [3, H, W]
PREPROCESS: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "lite": _lite,
    "imagenet": _imagenet,
}


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB ``[H, W, 3]`` (gray replicated, alpha dropped)."""
    from skimage import io, util
    try:
        with warnings.catch_warnings():          # imageio probes (deprecated) plugins on unknown bytes
            warnings.simplefilter("ignore", DeprecationWarning)
            img = np.asarray(io.imread(str(path)))
    except Exception as e:  # any decoder failure is a bad input file
        raise InputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if img.dtype != np.uint8:
        try:
            img = util.img_as_ubyte(img)
        except Exception:
            raise InputError(f"{path}: unsupported pixel type {img.dtype}") from None
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise InputError(f"{path}: expected a gray, RGB or RGBA image, got shape {list(img.shape)}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _images(folder: Path, g: Graph, preprocess: str | None) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"{folder}: no images ({' '.join(IMAGE_EXTS)}) in this folder")
    if preprocess is None:
        raise InputError(f"{folder}: a folder of images needs a preprocessing "
                         f"(one of: {', '.join(PREPROCESS)})")
    fn = PREPROCESS.get(preprocess)
    if fn is None:
        raise InputError(f"unknown preprocessing {preprocess!r} (known: {', '.join(PREPROCESS)})")
    if len(g.inputs) != 1:
        raise InputError(f"{folder}: images can feed only a one-input graph, this one has {len(g.inputs)}")
    t = g.type_of(g.inputs[0])
    if t.rank != 4 or t.shape[1] != 3:
        raise InputError(f"{folder}: images need an NCHW input with 3 channels, "
                         f"the model's input {g.inputs[0]!r} is {t}")
    return np.stack([fn(read_image(f), (t.shape[2], t.shape[3])) for f in files])


def load_calib(path: str | os.PathLike, g: Graph, *, preprocess: str | None = None):
    """Calibration samples for ``g`` from ``path``: an array ``[N, ...]`` or a dict input name -> array."""
    from .passes.calibrate import prepare_calib
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: calibration data not found")
    if preprocess is not None and not p.is_dir():
        raise InputError(f"{p}: preprocessing {preprocess!r} applies to image folders only "
                         "(.npy/.npz data must be preprocessed already)")
    if p.is_dir():
        data = _images(p, g, preprocess)
    elif p.suffix.lower() == ".npy":
        data = _load_npy(p)
    elif p.suffix.lower() == ".npz":
        data = _load_npz(p, g)
    else:
        raise InputError(f"{p}: unknown calibration data type {p.suffix or '(none)'!r} "
                         f"(expected .npy, .npz or a folder of images)")
    prepare_calib(g, data)      # InputError on wrong shapes / dtypes / counts
    return data


def _load_npy(p: Path) -> np.ndarray:
    from .io import read_array_file                  # one loader for run inputs and calibration data
    return read_array_file(p)


def _load_npz(p: Path, g: Graph) -> dict[str, np.ndarray]:
    from .io import only_array, read_array_file
    arrays = read_array_file(p)
    if len(g.inputs) == 1 and len(arrays) == 1:
        return {g.inputs[0]: only_array(arrays, g.inputs[0], p)}
    missing = [n for n in g.inputs if n not in arrays]
    extra = sorted(set(arrays) - set(g.inputs))
    if missing or extra:
        raise InputError(f"{p}: needs one array per graph input ({', '.join(g.inputs)}); "
                         + (f"missing {missing}" if missing else f"unknown {extra}"))
    return arrays
