# SPDX-License-Identifier: Apache-2.0
"""Sliding-window arithmetic shared by conv and pooling (NCHW, pads as (top, left, bottom, right))."""
from __future__ import annotations

import numpy as np

from ...errors import IRError

MAX_WINDOW = 1 << 16          # largest kernel, stride, dilation or pad a window attribute may hold


def out_size(n: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1, ceil: bool = False) -> int:
    """Output length of a window of ``k`` taps over ``n`` (with ONNX/torch ceil-mode rule)."""
    if k < 1 or stride < 1 or dilation < 1 or pad_lo < 0 or pad_hi < 0:
        raise IRError(f"window {k} stride {stride} dilation {dilation} pads ({pad_lo}, {pad_hi}): kernel, "
                      f"stride and dilation must be >= 1, pads >= 0")
    eff = dilation * (k - 1) + 1
    span = n + pad_lo + pad_hi - eff
    if span < 0:
        raise IRError(f"window {eff} larger than padded input {n + pad_lo + pad_hi}")
    if not ceil:
        return span // stride + 1
    o = -(-span // stride) + 1
    if (o - 1) * stride >= n + pad_lo:      # last window must start inside the input or left pad
        o -= 1
    return o


def windows(xp: np.ndarray, k: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            out_hw: tuple[int, int]) -> np.ndarray:
    """View [N, C, OH, OW, KH, KW] of a padded NCHW array (no copy)."""
    kh, kw = k
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    v = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    v = v[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]
    return v[:, :, :out_hw[0], :out_hw[1]]


def pad_nchw(x: np.ndarray, pads: tuple[int, int, int, int], value=0, extra_hi: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pad H and W by (top, left, bottom + extra_h, right + extra_w)."""
    t, l, b, r = pads
    if not (t or l or b or r or extra_hi[0] or extra_hi[1]):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b + extra_hi[0]), (l, r + extra_hi[1])), constant_values=value)


def hw_attrs(a: dict) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], tuple[int, int]]:
    """(kernel, stride, pad, dilation) from attributes with defaults; kernel may be absent (conv)."""
    k = tuple(a.get("kernel", (1, 1)))
    s = tuple(a.get("stride", (1, 1)))
    p = tuple(a.get("pad", (0, 0, 0, 0)))
    d = tuple(a.get("dilation", (1, 1)))
    if len(k) != 2 or len(s) != 2 or len(p) != 4 or len(d) != 2:
        raise IRError(f"expected 2-D window attributes, got kernel={k} stride={s} pad={p} dilation={d}")
    for what, vals, lo in (("kernel", k, 1), ("stride", s, 1), ("dilation", d, 1), ("pad", p, 0)):
        if not all(isinstance(v, int) and lo <= v <= MAX_WINDOW for v in vals):
            raise IRError(f"{what} {list(vals)} must be integers in [{lo}, {MAX_WINDOW}]")
    return k, s, p, d


def covers_input(in_hw: tuple[int, int], a: dict) -> bool:
    """A ceil-mode pooling window without pads that is larger than the input: its one output window reads
    the whole input (torch / ONNX clip it there), so it is a global pool (transformers' EfficientNet pools a
    2x2 map with ``AvgPool2d(1280, ceil_mode=True)``)."""
    k, s, p, d = hw_attrs(a)
    return (bool(a.get("ceil_mode", False)) and not any(p) and d == (1, 1)
            and all(k[i] >= in_hw[i] for i in range(2)) and any(k[i] > in_hw[i] for i in range(2)))


def pool_geometry(in_hw: tuple[int, int], a: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """((OH, OW), (extra_h, extra_w)) of a pooling window over ``in_hw``: the output size (ceil-mode and
    dilation aware) and the extra bottom/right padding its last (ceil-mode) windows reach past the pads.
    The one place this geometry is computed: type inference, every kernel and every backend use it."""
    k, s, p, d = hw_attrs(a)
    ceil = bool(a.get("ceil_mode", False))
    out = tuple(out_size(in_hw[i], k[i], s[i], p[i], p[i + 2], d[i], ceil) for i in range(2))
    extra = tuple(max(0, (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (in_hw[i] + p[i] + p[i + 2]))
                  for i in range(2))
    return out, extra
