# SPDX-License-Identifier: Apache-2.0
"""EfficientNet-Lite0 integer graphs shared by the slow target tests (quantized once per session)."""
import pytest

_CACHE: dict = {}


@pytest.fixture(scope="session")
def effnet_integer():
    """``effnet_integer(bits)`` -> (integer graph, eval crops): W8A8 or W4A8 (first/last layer 8-bit)
    per-channel, as tests/e2e/test_integer_cpu.py quantizes them."""
    def get(bits: int):
        if bits not in _CACHE:
            import torch

            import dyadiq
            from dyadiq.zoo import efficientnet_lite0, photo_crops
            calib, evalx = photo_crops(32, split="calib"), photo_crops(8, split="eval")
            g = dyadiq.from_torch(efficientnet_lite0(), (torch.from_numpy(evalx[:1]),))
            kw = {"weight_bits": bits, "first_last_bits": 8} if bits == 4 else {"weight_bits": bits}
            from dyadiq.passes.pipeline import FAST_OPTIONS      # the targets' tests need a graph, not accuracy
            q, _ = dyadiq.quantize(g, calib, per_channel=True, bias_correct=bits == 8, **FAST_OPTIONS, **kw)
            _CACHE[bits] = (dyadiq.integerize(q), evalx)
        return _CACHE[bits]
    return get
