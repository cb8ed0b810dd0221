# SPDX-License-Identifier: Apache-2.0
"""Real architectures in plain torch, random weights, small inputs: the model-coverage suite of issue 15.

``ARCHS[name]() -> (model in eval mode, example input)``; ``build(name)`` the same by name. Each network keeps
its family's distinctive ops at a size that runs in about a second in the interpreter:

- ``resnet18`` (64x64): basic blocks, strided 1x1 shortcuts, max-pool stem, global average pool;
- ``mobilenet_v2`` (96x96): inverted residuals, depthwise convs, ReLU6;
- ``mobilenet_v3_large`` (96x96): hard-swish, squeeze-and-excitation with hard-sigmoid gates, 5x5 depthwise;
- ``shufflenet_v2`` (64x64, x0.5): channel split (chunk), channel shuffle (view/transpose/view), concat;
- ``unet`` (64x64): encoder/decoder with ConvTranspose and bilinear-Resize up-paths, skip concats;
- ``yolo`` (64x64, v8-nano style): SiLU convs, C2f (split + bottlenecks + concat), SPPF (three 5x5 max-pools),
  nearest-Resize FPN neck, decoupled head with the DFL softmax over 16 bins and a fixed arange 1x1 conv;
- ``densenet_block`` (64x64): a dense block (concat chain) and a transition (BN-ReLU-conv-avgpool).
BatchNorm statistics are randomized so the normalization is not an identity.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


def _randomize_bn(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return m.eval()


def _cbr(cin, cout, k=3, s=1, groups=1, act: Callable | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


# ---- ResNet-18 -------------------------------------------------------------------------------------
class _Basic(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.a, self.b = _cbr(cin, cout, 3, s), _cbr(cout, cout, 3, 1, act=None)
        self.short = _cbr(cin, cout, 1, s, act=None) if (s != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.short(x))


class ResNet18(nn.Module):
    def __init__(self, classes=10, widths=(64, 128, 256, 512)):
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers += [_Basic(cin, w, 1 if i == 0 else 2), _Basic(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


# ---- MobileNetV2 / V3 ------------------------------------------------------------------------------
class _InvRes(nn.Module):
    def __init__(self, cin, cout, s, t, k=3, act=nn.ReLU6, se=False):
        super().__init__()
        mid = cin * t if isinstance(t, int) else t[0]
        self.use_res = s == 1 and cin == cout
        self.expand = _cbr(cin, mid, 1, act=act) if mid != cin else nn.Identity()
        self.dw = _cbr(mid, mid, k, s, groups=mid, act=act)
        self.se = _SE(mid) if se else nn.Identity()
        self.project = _cbr(mid, cout, 1, act=None)

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.use_res else y


class _SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        mid = max(8, (c // 4 + 7) // 8 * 8)
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class MobileNetV2(nn.Module):
    CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, classes=10):
        super().__init__()
        layers, cin = [_cbr(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(_InvRes(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_cbr(cin, 1280, 1, act=nn.ReLU6))
        self.features, self.fc = nn.Sequential(*layers), nn.Linear(1280, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class MobileNetV3Large(nn.Module):
    # kernel, expanded, out, SE, activation (RE / HS), stride
    CFG = ((3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
           (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
           (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
           (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
           (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1))

    def __init__(self, classes=10):
        super().__init__()
        layers, cin = [_cbr(3, 16, 3, 2, act=nn.Hardswish)], 16
        for k, exp, c, se, a, s in self.CFG:
            layers.append(_InvRes(cin, c, s, (exp,), k, nn.Hardswish if a == "HS" else nn.ReLU, se))
            cin = c
        layers.append(_cbr(cin, 960, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Linear(1280, classes))

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ---- ShuffleNetV2 ------------------------------------------------------------------------------------
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _Shuffle(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.s, half = s, cout // 2
        if s > 1:
            self.left = nn.Sequential(_cbr(cin, cin, 3, s, groups=cin, act=None), _cbr(cin, half, 1))
        right_in = cin if s > 1 else half
        self.right = nn.Sequential(_cbr(right_in, half, 1), _cbr(half, half, 3, s, groups=half, act=None),
                                   _cbr(half, half, 1))

    def forward(self, x):
        if self.s == 1:
            a, b = x.chunk(2, dim=1)
            y = torch.cat([a, self.right(b)], 1)
        else:
            y = torch.cat([self.left(x), self.right(x)], 1)
        return channel_shuffle(y, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes=10, widths=(24, 48, 96, 192, 1024), repeats=(4, 8, 4)):
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, widths[0], 3, 2), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], widths[0]
        for w, r in zip(widths[1:4], repeats):
            stages += [_Shuffle(cin, w, 2)] + [_Shuffle(w, w, 1) for _ in range(r - 1)]
            cin = w
        self.stages = nn.Sequential(*stages)
        self.conv5, self.fc = _cbr(cin, widths[4], 1), nn.Linear(widths[4], classes)

    def forward(self, x):
        return self.fc(self.conv5(self.stages(self.stem(x))).mean((2, 3)))


# ---- UNet -------------------------------------------------------------------------------------------
class UNet(nn.Module):
    def __init__(self, classes=3, base=16):
        super().__init__()
        c = [base, base * 2, base * 4, base * 8]
        self.enc = nn.ModuleList([nn.Sequential(_cbr(ci, co), _cbr(co, co)) for ci, co in zip([3] + c[:-1], c)])
        self.up_t = nn.ConvTranspose2d(c[3], c[2], 2, stride=2)                 # learned up-sampling
        self.up_t2 = nn.ConvTranspose2d(c[2], c[1], 3, stride=2, padding=1, output_padding=1)
        self.dec = nn.ModuleList([nn.Sequential(_cbr(c[2] * 2, c[2]), _cbr(c[2], c[2])),
                                  nn.Sequential(_cbr(c[1] * 2, c[1]), _cbr(c[1], c[1])),
                                  nn.Sequential(_cbr(c[1] + c[0], c[0]), _cbr(c[0], c[0]))])
        self.out = nn.Conv2d(c[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.dec[0](torch.cat([self.up_t(x), skips[2]], 1))
        x = self.dec[1](torch.cat([self.up_t2(x), skips[1]], 1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)   # bilinear Resize
        x = self.dec[2](torch.cat([x, skips[0]], 1))
        return self.out(x)


# ---- YOLO-style detector (v8-nano layout) -------------------------------------------------------------
def _conv(cin, cout, k=1, s=1):
    return _cbr(cin, cout, k, s, act=nn.SiLU)


class _Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.a, self.b, self.add = _conv(c, c, 3), _conv(c, c, 3), shortcut

    def forward(self, x):
        y = self.b(self.a(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        self.c = cout // 2
        self.cv1, self.cv2 = _conv(cin, 2 * self.c), _conv((2 + n) * self.c, cout)
        self.m = nn.ModuleList(_Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout, k=5):
        super().__init__()
        self.cv1, self.cv2 = _conv(cin, cin // 2), _conv(cin // 2 * 4, cout)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss decoding: softmax over 16 bins, expectation by a fixed arange 1x1 conv."""

    def __init__(self, bins=16):
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1)

    def forward(self, x):
        n, _, a = x.shape
        return self.conv(x.view(n, 4, self.bins, a).transpose(2, 1).softmax(1)).view(n, 4, a)


class YOLO(nn.Module):
    def __init__(self, classes=4, w=(16, 32, 64, 128, 256), bins=16):
        super().__init__()
        self.stem = nn.Sequential(_conv(3, w[0], 3, 2), _conv(w[0], w[1], 3, 2), C2f(w[1], w[1], 1))
        self.p3 = nn.Sequential(_conv(w[1], w[2], 3, 2), C2f(w[2], w[2], 2))
        self.p4 = nn.Sequential(_conv(w[2], w[3], 3, 2), C2f(w[3], w[3], 2))
        self.p5 = nn.Sequential(_conv(w[3], w[4], 3, 2), C2f(w[4], w[4], 1), SPPF(w[4], w[4]))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4, self.n3 = C2f(w[4] + w[3], w[3], 1, False), C2f(w[3] + w[2], w[2], 1, False)
        self.d3, self.n4b = _conv(w[2], w[2], 3, 2), C2f(w[2] + w[3], w[3], 1, False)
        self.d4, self.n5b = _conv(w[3], w[3], 3, 2), C2f(w[3] + w[4], w[4], 1, False)
        self.box = nn.ModuleList(nn.Sequential(_conv(c, 32, 3), _conv(32, 32, 3), nn.Conv2d(32, 4 * bins, 1))
                                 for c in (w[2], w[3], w[4]))
        self.cls = nn.ModuleList(nn.Sequential(_conv(c, 32, 3), _conv(32, 32, 3), nn.Conv2d(32, classes, 1))
                                 for c in (w[2], w[3], w[4]))
        self.dfl, self.bins, self.classes = DFL(bins), bins, classes

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.n4(torch.cat([self.up(p5), p4], 1))
        o3 = self.n3(torch.cat([self.up(t4), p3], 1))
        o4 = self.n4b(torch.cat([self.d3(o3), t4], 1))
        o5 = self.n5b(torch.cat([self.d4(o4), p5], 1))
        n = x.shape[0]
        feats = [torch.cat([b(f), c(f)], 1).view(n, 4 * self.bins + self.classes, -1)
                 for f, b, c in zip((o3, o4, o5), self.box, self.cls)]
        y = torch.cat(feats, 2)
        box, cls = y.split((4 * self.bins, self.classes), 1)
        return torch.cat([self.dfl(box), cls.sigmoid()], 1)


# ---- DenseNet block -----------------------------------------------------------------------------------
class DenseBlock(nn.Module):
    def __init__(self, cin=32, growth=12, layers=4, classes=10):
        super().__init__()
        self.stem = _cbr(3, cin, 3, 2)
        self.layers = nn.ModuleList()
        c = cin
        for _ in range(layers):
            self.layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4 * growth, 1, bias=False),
                                             nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                             nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)))
            c += growth
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                        nn.AvgPool2d(2))
        self.fc = nn.Linear(c // 2, classes)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        y = self.transition(torch.cat(feats, 1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


# ---- the suite -----------------------------------------------------------------------------------------
SIZES = {"resnet18": 64, "mobilenet_v2": 96, "mobilenet_v3_large": 96, "shufflenet_v2": 64, "unet": 64,
         "yolo": 64, "densenet_block": 64}
CLASSES = {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2, "mobilenet_v3_large": MobileNetV3Large,
           "shufflenet_v2": ShuffleNetV2, "unet": UNet, "yolo": YOLO, "densenet_block": DenseBlock}


def build(name: str, seed: int = 0, batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    """``(model, example input [batch, 3, S, S])`` with seeded random weights."""
    if name not in CLASSES:
        raise KeyError(f"unknown architecture {name!r} (known: {', '.join(CLASSES)})")
    torch.manual_seed(seed)
    model = _randomize_bn(CLASSES[name](), seed)
    s = SIZES[name]
    x = torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


ARCHS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {n: (lambda n=n: build(n)) for n in CLASSES}


def parameter_count(m: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in m.parameters())
