# SPDX-License-Identifier: Apache-2.0
"""Deterministic photo inputs for EfficientNet-Lite0, from images shipped offline.

Sources: the photos bundled with scikit-image (``skimage.data``; any that would need
a download are skipped) and scikit-learn's ``load_sample_images`` (china, flower).
Everything returned is already preprocessed by ``preprocess_lite``: float32 NCHW
with the TF-Lite normalization ``(x - 127) / 128``. No torch needed here.
"""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np

__all__ = [
    "LITE_MEAN",
    "LITE_STD",
    "CROP_PADDING",
    "preprocess_lite",
    "normalize_lite",
    "photo_names",
    "load_photos",
    "real_photos",
    "photo_crops",
]

# The TF EfficientNet-Lite models use inception-style normalization on 0..255 RGB.
LITE_MEAN = 127.0
LITE_STD = 128.0
# TF eval preprocessing: central crop of size/(size+32) of the shorter side, then resize.
CROP_PADDING = 32

_SKIMAGE_COLOR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina")
_SKIMAGE_GRAY = ("camera", "coins", "moon", "brick", "grass", "gravel", "clock", "cell")
_SPLITS = ("calib", "eval")


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3/4 image, got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img.dtype}")
    return np.ascontiguousarray(img)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear source indices and weights (half-pixel centers, edge clamped)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an HWC image to ``size`` x ``size``: float32 in the input's range.

    Bilinear interpolation after a Gaussian anti-aliasing blur when shrinking
    (sigma ``(scale - 1) / 2``, as ``skimage.transform.resize(anti_aliasing=True)``),
    in plain numpy/scipy so it is fast and deterministic.
    """
    x = np.asarray(img, dtype=np.float32)
    h, w = x.shape[:2]
    sigma = (max(0.0, (h / size - 1) / 2), max(0.0, (w / size - 1) / 2), 0.0)
    if sigma[0] > 0 or sigma[1] > 0:
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=sigma, mode="nearest")
    y0, y1, wy = _taps(h, size)
    x0, x1, wx = _taps(w, size)
    wy, wx = wy[:, None, None], wx[None, :, None]
    rows = x[y0] * (1 - wy) + x[y1] * wy
    return np.ascontiguousarray(rows[:, x0] * (1 - wx) + rows[:, x1] * wx, dtype=np.float32)


def normalize_lite(img_hwc: np.ndarray) -> np.ndarray:
    """0..255 HWC pixels -> float32 CHW ``(x - 127) / 128``."""
    x = (np.asarray(img_hwc, dtype=np.float32) - LITE_MEAN) / LITE_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess_lite(image_uint8_hwc: np.ndarray, size: int = 224) -> np.ndarray:
    """Eval preprocessing of the Lite weights: float32 ``[3, size, size]``.

    Central square crop of ``size / (size + 32)`` of the shorter side (the TF
    reference's crop_padding=32, i.e. resize-256/crop-224), resized to ``size``.
    Grayscale input is replicated to 3 channels, an alpha channel is dropped.
    """
    img = _to_rgb_uint8(image_uint8_hwc)
    h, w = img.shape[:2]
    crop = max(1, int(size / (size + CROP_PADDING) * min(h, w)))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    return normalize_lite(_resize(img[top:top + crop, left:left + crop], size))


def _loaders():
    import skimage.data as sd

    for name in _SKIMAGE_COLOR + _SKIMAGE_GRAY:
        yield name, lambda name=name: getattr(sd, name)()
    yield "motorcycle", lambda: sd.stereo_motorcycle()[0]

    def sample(i):
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[i]

    yield "china", functools.partial(sample, 0)
    yield "flower", functools.partial(sample, 1)


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """All available photos as ``(name, uint8 HxWx3)``, in a fixed order; missing ones skipped."""
    out = []
    for name, get in _loaders():
        try:
            img = _to_rgb_uint8(get())
        except Exception:  # not bundled offline (needs a download) or unreadable
            continue
        img.setflags(write=False)
        out.append((name, img))
    if not out:
        raise RuntimeError("no offline photos found in skimage.data / sklearn sample images")
    return tuple(out)


def photo_names() -> list[str]:
    """Names of the photos available in this environment."""
    return [name for name, _ in load_photos()]


def real_photos(size: int = 224) -> dict[str, np.ndarray]:
    """Every photo, whole, through ``preprocess_lite``: name -> float32 ``[3, size, size]``."""
    return {name: preprocess_lite(img, size) for name, img in load_photos()}


@functools.lru_cache(maxsize=4)
def _crop_sources(size: int) -> tuple[np.ndarray, ...]:
    """Photos with the shorter side capped at ``2 * size``, so crops resize quickly."""
    out = []
    for _, img in load_photos():
        h, w = img.shape[:2]
        scale = min(1.0, 2 * size / min(h, w))
        if scale < 1.0:
            from skimage.transform import resize

            shape = (max(1, round(h * scale)), max(1, round(w * scale)))
            img = resize(img.astype(np.float32), shape, order=1, anti_aliasing=True,
                         preserve_range=True)
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        out.append(img)
    return tuple(out)


def _split_rng(seed: int, split: str) -> np.random.Generator:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode())]))


def _random_box(rng: np.random.Generator, h: int, w: int,
                scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop box ``(top, left, height, width)``."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)  # fallback: central square
    return (h - side) // 2, (w - side) // 2, side, side


def photo_crops(n: int, size: int = 224, seed: int = 0, split: str = "eval") -> np.ndarray:
    """``n`` random-resized crops, model-ready: float32 ``[n, 3, size, size]``.

    Each crop picks a photo, a box of 25-100% of its area with aspect ratio 3/4-4/3,
    and a horizontal flip with probability 1/2. The "calib" and "eval" splits use
    independent random streams derived from ``(seed, split)``; results are identical
    across calls and runs.
    """
    rng = _split_rng(seed, split)
    sources = _crop_sources(size)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        img = sources[int(rng.integers(len(sources)))]
        top, left, ch, cw = _random_box(rng, *img.shape[:2])
        crop = img[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = normalize_lite(_resize(crop, size))
    return out
