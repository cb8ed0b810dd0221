# SPDX-License-Identifier: Apache-2.0
"""Issue: accuracy past round-to-nearest — every accuracy configuration still compiles bit-exact.

EfficientNet-Lite0 quantized with the bench's best configurations (GPTQ with bias correction, equalization
for per-tensor weights, ILP-chosen 16-bit activations, ILP mixed weight widths) lowers to integer code
whose cpu artifact equals the integer interpreter bit for bit, and whose integer output equals simulated
mode's top-1 on every crop tested. The per-channel row's 10% budget widens residual-branch outputs too
(16-bit operands of the fused residual adds), with MSE-fitted ranges (refitted at 16 bits for the wide ones).
"""
import numpy as np
import pytest
import torch

import dyadiq
from dyadiq.interp import run
from dyadiq.interp.run import run_batched

CONFIGS = {
    "per-tensor CLE+GPTQ+BC, 16-bit acts": dict(per_channel=False, equalize=True, rounding="gptq", wide_acts=0.03),
    "per-channel GPTQ+BC, MSE ranges, 16-bit acts 10%": dict(per_channel=True, rounding="gptq", calib_method="mse",
                                                             wide_acts=0.10),
    "mixed 4.5 bits GPTQ+BC": dict(per_channel=True, rounding="gptq", _mean_bits=4.5),
}


@pytest.fixture(scope="module")
def effnet():
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    model = efficientnet_lite0()
    calib = photo_crops(16, split="calib")
    evalx = photo_crops(8, split="eval")
    return dyadiq.from_torch(model, (torch.from_numpy(evalx[:1]),)), calib, evalx


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_config_compiles_bit_exact(effnet, config):
    g, calib, evalx = effnet
    opts = dict(CONFIGS[config])
    mean_bits = opts.pop("_mean_bits", None)
    if mean_bits:
        from dyadiq.mixed import quantize_auto
        from dyadiq.passes.quantize_weights import weighted_layers
        params = sum(g.const(n.inputs[1]).size for n in weighted_layers(g))
        q, report = quantize_auto(g, calib, {"size_bytes": int(params * mean_bits / 8)}, sensitivity="hessian",
                                  **opts)
        assert len(set(report["mixed_precision"]["plan"].values())) > 1
    else:
        q, report = dyadiq.quantize(g, calib, **{"calib_method": "minmax", "rounding": "nearest", **opts})
        assert report["activations"]["wide"]["chosen"]
    ig = dyadiq.integerize(q)
    art = dyadiq.compile(ig, target="cpu")
    for x in evalx[:, None]:
        assert np.array_equal(art.run(x), run(ig, x))
    sim, integer = run_batched(q, evalx, "simulated"), run_batched(ig, evalx, "float")
    assert np.array_equal(sim.argmax(1), integer.argmax(1))
