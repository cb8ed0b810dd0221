# SPDX-License-Identifier: Apache-2.0
"""A small CNN trained on scikit-learn's 8x8 digits, deterministically, in seconds on CPU.

Nothing is cached on disk: ``digits_cnn()`` retrains (single thread, fixed seed and
epochs), so every call returns bit-identical weights in a given environment.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

__all__ = ["Digits", "digits_data", "digits_cnn", "DigitsCNN", "accuracy"]


class Digits(NamedTuple):
    """Train/test split: images float32 ``[N, 1, 8, 8]`` in [0, 1], labels int64 ``[N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_data(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """Deterministic stratified split of ``sklearn.datasets.load_digits`` (1797 images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Digits(*(np.ascontiguousarray(a) for a in (x_tr, y_tr, x_te, y_te)))


@functools.cache
def _cnn_class():
    from torch import nn

    class _DigitsCNN(nn.Module):
        """conv3x3-BN-ReLU x2, maxpool 2x2, flatten, linear-ReLU-linear (10 classes)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(32)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(32 * 4 * 4, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.flatten(self.pool(x))
            return self.fc2(self.relu(self.fc1(x)))

    _DigitsCNN.__name__ = _DigitsCNN.__qualname__ = "DigitsCNN"
    return _DigitsCNN


def __getattr__(name):  # ``DigitsCNN`` without importing torch at module import
    if name == "DigitsCNN":
        return _cnn_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a torch classifier on numpy inputs."""
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def digits_cnn(seed: int = 0, epochs: int = 10, batch_size: int = 32, lr: float = 3e-3):
    """Train ``DigitsCNN`` on ``digits_data()``; returns it in eval mode (test acc ~99%)."""
    import torch
    from torch import nn

    data = digits_data()
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _cnn_class()()
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            loss_fn = nn.CrossEntropyLoss()
            model.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=gen)
                for i in range(0, len(x), batch_size):
                    idx = order[i:i + batch_size]
                    opt.zero_grad()
                    loss_fn(model(x[idx]), y[idx]).backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
