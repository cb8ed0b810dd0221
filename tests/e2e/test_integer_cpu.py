# SPDX-License-Identifier: Apache-2.0
"""Issue: integer-only lowering + CPU target, end to end on real models.

- the integerized EfficientNet-Lite0 holds no float op or tensor between input quantize and output dequantize;
- the compiled CPU artifact is bit-exact with the integer interpreter (32 inputs; W8A8, W7A8 and W4A8) for
  EfficientNet-Lite0 (with the hand-scheduled x86 kernels on an AVX2 host), the digits CNN and four test
  architectures;
- integer vs simulated mode: top-1 agreement >= 99% on the proxy crops; digits accuracy within 0.5 points.
"""
import numpy as np
import pytest
import torch

import dyadiq
from dyadiq.interp import run
from dyadiq.ir.ops import op_def
from dyadiq.interp.run import run_batched

DATA_MOVES = {"reshape", "transpose", "concat", "slice", "pad", "maxpool", "identity"}


def _assert_integer_only(ig):
    for n in ig.nodes:
        if n.op == "quantize":
            assert n.inputs[0] in ig.inputs
            continue
        if n.op == "dequantize":
            assert n.name in ig.outputs
            continue
        assert op_def(n.op).integer or n.op in DATA_MOVES, n
        for v in (*n.inputs, *n.outputs):
            assert not ig.type_of(v).is_float, (n, v)


@pytest.fixture(scope="module")
def effnet():
    from dyadiq.zoo import efficientnet_lite0, photo_crops
    model = efficientnet_lite0()
    calib = photo_crops(32, split="calib")
    evalx = photo_crops(256, split="eval")
    g = dyadiq.from_torch(model, (torch.from_numpy(evalx[:32]),))
    return g, calib, evalx


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 7, 4])
def test_effnet_artifact_is_bit_exact_with_the_integer_interpreter(effnet, bits):
    """W7 (every layer 7-bit) runs all its GEMMs on the u8 x s8 vpmaddubsw kernels of an AVX2 host."""
    g, calib, evalx = effnet
    kw = dict(weight_bits=bits, first_last_bits=8) if bits == 4 else dict(weight_bits=bits)
    q, _ = dyadiq.quantize(g, calib, per_channel=True, bias_correct=bits == 8, **kw, calib_method="minmax", rounding="nearest")
    ig = dyadiq.integerize(q)
    _assert_integer_only(ig)
    art = dyadiq.compile(ig, target="cpu")
    from dyadiq.targets.cpu import host_cpu_flags
    if "avx2" in (host_cpu_flags() or set()):                  # the hand-scheduled x86 kernels were used
        assert art.manifest["kernels"] in ("avx2", "vnni", "vnni512")
        if bits == 7 and art.manifest["kernels"] == "avx2":
            assert "vpmaddubsw" in art.module.mod.imports[0].inspect_source("asm")
    x = evalx[:32]
    assert np.array_equal(art.run(x), run(ig, x))
    if bits == 8:
        sim = run_batched(q, evalx, "simulated")
        integer = run_batched(ig, evalx, "float")
        agree = float(np.mean(sim.argmax(1) == integer.argmax(1)))
        print(f"EfficientNet-Lite0 W8A8 integer vs simulated top-1 agreement: {agree:.4f} on {len(evalx)} crops")
        assert agree >= 0.99


@pytest.fixture(scope="module")
def digits():
    from dyadiq.zoo import digits_cnn, digits_data
    d = digits_data()
    model = digits_cnn()
    with torch.no_grad():
        float_acc = float((model(torch.from_numpy(d.x_test)).numpy().argmax(1) == d.y_test).mean())
    g = dyadiq.from_torch(model, (torch.from_numpy(d.x_test[:1]),))
    return g, d, float_acc


@pytest.mark.parametrize("bits", [8, 4])
def test_digits_artifact_bit_exact_and_accurate(digits, bits):
    g, d, float_acc = digits
    kw = dict(weight_bits=bits, first_last_bits=8) if bits < 8 else {}
    q, _ = dyadiq.quantize(g, d.x_train[:128], **kw, calib_method="minmax", rounding="nearest")
    ig = dyadiq.integerize(q)
    art = dyadiq.compile(ig, target="cpu")
    for i in range(32):
        x = d.x_test[i:i + 1]
        assert np.array_equal(art.run(x), run(ig, x))
    if bits == 8:
        acc = float((run_batched(ig, d.x_test, "float").argmax(1) == d.y_test).mean())
        assert acc >= float_acc - 0.005


BLOCKS = ["residual_block", "mbv2_block", "mlp", "pool_concat_cnn"]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("name", BLOCKS)
def test_blocks_artifact_bit_exact(name, bits):
    from dyadiq.zoo import BLOCKS as builders
    model, x = builders[name]()
    g = dyadiq.from_torch(model, (x,))
    rng = np.random.default_rng(1)
    data = rng.normal(size=(64,) + tuple(x.shape[1:])).astype(np.float32)
    q, _ = dyadiq.quantize(g, data[:32], weight_bits=bits, calib_method="minmax", rounding="nearest")
    ig = dyadiq.integerize(q)
    art = dyadiq.compile(ig, target="cpu")
    for i in range(32, 64):
        xi = data[i:i + 1]
        assert np.array_equal(art.run(xi), run(ig, xi)), i
