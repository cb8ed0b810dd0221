# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures."""
import pytest


@pytest.fixture
def torch_one_thread():
    """Tiny graphs in torch: one thread is faster (and immune to a busy CI machine)."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
