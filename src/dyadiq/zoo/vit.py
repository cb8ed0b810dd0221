# SPDX-License-Identifier: Apache-2.0
"""A small vision transformer trained on scikit-learn's 8x8 digits, deterministically, in seconds on CPU.

2x2 patch conv (16 patches of width 32), a class token, learned positions, 4 pre-norm encoder blocks
(4 heads, GELU MLP), final LayerNorm, linear head on the class token. The class token is written as
``pad`` (a zero row in front of the patches) plus one constant table (positions, the class token added
to row 0): the same function as ``concat(cls, patches) + pos``, with data movement and a constant add only.
"""
from __future__ import annotations


__all__ = ["digits_vit"]


def _vit_class():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, d, heads, mlp):
            super().__init__()
            self.heads, self.dh = heads, d // heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
            a = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.dh ** -0.5, dim=-1)
            x = x + self.proj(torch.matmul(a, v).permute(0, 2, 1, 3).reshape(b, n, d))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class DigitsViT(nn.Module):
        def __init__(self, d=32, depth=4, heads=4, mlp=64, patch=2):
            super().__init__()
            self.patch = nn.Conv2d(1, d, patch, stride=patch)
            n = (8 // patch) ** 2
            self.cls = nn.Parameter(torch.zeros(1, 1, d))
            self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
            self.blocks = nn.ModuleList(Block(d, heads, mlp) for _ in range(depth))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, 10)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)                       # [B, 16, d]
            t = F.pad(t, (0, 0, 1, 0))                                          # zero class row
            table = self.pos + F.pad(self.cls, (0, 0, 0, self.pos.shape[1] - 1))
            t = t + table
            for blk in self.blocks:
                t = blk(t)
            return self.head(self.ln(t)[:, 0])
    return DigitsViT


def digits_vit(seed: int = 0, epochs: int = 30, batch_size: int = 64, lr: float = 3e-3):
    """Train the ViT on ``digits_data()`` (1 thread, fixed seed); returns it in eval mode."""
    import torch
    from torch import nn

    from .digits import digits_data
    data = digits_data()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _vit_class()()
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(x) // batch_size))
            loss_fn = nn.CrossEntropyLoss()
            model.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=gen)
                for i in range(0, len(x), batch_size):
                    idx = order[i:i + batch_size]
                    opt.zero_grad()
                    loss_fn(model(x[idx]), y[idx]).backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()

