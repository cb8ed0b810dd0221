# SPDX-License-Identifier: Apache-2.0
"""Five small, deterministically initialized test architectures.

Each builder takes ``seed`` and returns ``(model, example_input)`` with the model in
eval mode; models also have ``example_input()``. BatchNorm/LayerNorm layers get
random affine parameters and BN random running statistics, so BN folding is
exercised for real. Builders leave the global torch RNG state untouched.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ResidualBlock",
    "MBV2Block",
    "MLP",
    "TransformerLayer",
    "PoolConcatCNN",
    "residual_block",
    "mbv2_block",
    "mlp",
    "transformer_layer",
    "pool_concat_cnn",
    "randomize_norms",
    "BLOCKS",
]


def randomize_norms(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give every BatchNorm/LayerNorm non-trivial affine params and BN running stats."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                n = m.weight.shape
                m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty(n).uniform_(-0.5, 0.5, generator=gen))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.running_mean.shape
                m.running_mean.copy_(torch.empty(n).uniform_(-0.5, 0.5, generator=gen))
                m.running_var.copy_(torch.empty(n).uniform_(0.25, 2.0, generator=gen))
    return model


class _Example(nn.Module):
    """Mixin: a fixed example input shape and a deterministic ``example_input()``."""

    input_shape: tuple[int, ...] = ()

    def example_input(self, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape, generator=gen)


class ResidualBlock(_Example):
    """ResNet basic block: conv-bn-relu-conv-bn + identity, relu."""

    input_shape = (1, 16, 16, 16)

    def __init__(self, c: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + x)


class MBV2Block(_Example):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, ReLU6, add."""

    input_shape = (1, 16, 16, 16)

    def __init__(self, c: int = 16, expand: int = 6):
        super().__init__()
        mid = c * expand
        self.expand = nn.Conv2d(c, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.depthwise = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.project = nn.Conv2d(mid, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.act = nn.ReLU6()

    def forward(self, x):
        y = self.act(self.bn1(self.expand(x)))
        y = self.act(self.bn2(self.depthwise(y)))
        return self.bn3(self.project(y)) + x


class MLP(_Example):
    """Flatten + three linear layers with ReLU in between."""

    input_shape = (1, 64)

    def __init__(self, d_in: int = 64, hidden: int = 128, d_out: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.fc3 = nn.Linear(hidden // 2, d_out)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.fc1(self.flatten(x)))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class TransformerLayer(_Example):
    """Pre-norm encoder layer with hand-written multi-head softmax attention and a GELU MLP."""

    input_shape = (1, 8, 32)

    def __init__(self, d: int = 32, heads: int = 4, mlp: int = 64):
        super().__init__()
        assert d % heads == 0
        self.heads, self.head_dim = heads, d // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(mlp, d)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, Dh]
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(b, n, d)
        return self.proj(out)

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(self.gelu(self.fc1(self.ln2(x))))


class PoolConcatCNN(_Example):
    """conv-relu, maxpool 2x2, 1x1 and 3x3 branches concatenated, avgpool, flatten, linear."""

    input_shape = (1, 3, 16, 16)

    def __init__(self, c: int = 8, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.branch1 = nn.Conv2d(c, c, 1)
        self.branch3 = nn.Conv2d(c, c, 3, padding=1)
        self.avgpool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * c * 4 * 4, classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))
        x = torch.cat([self.relu(self.branch1(x)), self.relu(self.branch3(x))], dim=1)
        return self.fc(self.flatten(self.avgpool(x)))


def _build(cls, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls()
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    model.eval()
    return model, model.example_input(seed)


def residual_block(seed: int = 0):
    """ResNet basic block and an input ``[1, 16, 16, 16]``."""
    return _build(ResidualBlock, seed)


def mbv2_block(seed: int = 0):
    """MobileNetV2 inverted residual and an input ``[1, 16, 16, 16]``."""
    return _build(MBV2Block, seed)


def mlp(seed: int = 0):
    """Three-layer MLP and an input ``[1, 64]``."""
    return _build(MLP, seed)


def transformer_layer(seed: int = 0):
    """Transformer encoder layer and an input ``[1, 8, 32]``."""
    return _build(TransformerLayer, seed)


def pool_concat_cnn(seed: int = 0):
    """Pool/concat CNN and an input ``[1, 3, 16, 16]``."""
    return _build(PoolConcatCNN, seed)


BLOCKS = {
    "residual_block": residual_block,
    "mbv2_block": mbv2_block,
    "mlp": mlp,
    "transformer_layer": transformer_layer,
    "pool_concat_cnn": pool_concat_cnn,
}
