# SPDX-License-Identifier: Apache-2.0
"""The PTQ pipeline: options, report, determinism, and accuracy of the digits CNN at W8A8."""
import numpy as np
import pytest

from dyadiq.errors import InputError, PassError
from dyadiq.interp import run
from dyadiq.interp.run import run_batched
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.serialize import dump_bytes
from dyadiq.passes.annotate_quant import check_contract
from dyadiq.passes.pipeline import QuantizeOptions, quantize

RNG = np.random.default_rng(0)


def tiny_cnn(batch=2):
    """conv-bn-relu -> conv-relu6 -> global pool -> linear."""
    r = np.random.default_rng(3)
    b = GraphBuilder()
    x = b.input("x", (batch, 3, 8, 8))
    c = b.op("conv2d", [x, b.const("w1", r.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.4)], "c1",
             pad=(1, 1, 1, 1))
    bn = [b.const(k, v.astype(np.float32)) for k, v in
          (("g", r.random(8) + 0.5), ("be", r.normal(size=8)), ("mu", r.normal(size=8)), ("var", r.random(8) + 0.5))]
    h = b.op("relu", [b.op("batchnorm", [c, *bn], "bn")], "r1")
    h = b.op("conv2d", [h, b.const("w2", r.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.2),
                        b.const("b2", r.normal(size=8).astype(np.float32))], "c2", pad=(1, 1, 1, 1))
    h = b.op("clip", [h], "r2", min=0.0, max=6.0)
    h = b.op("reshape", [b.op("global_avgpool", [h], "gap")], "flat", shape=(batch, 8))
    return b.build([b.op("linear", [h, b.const("w3", r.normal(size=(4, 8)).astype(np.float32)),
                                    b.const("b3", r.normal(size=4).astype(np.float32))], "logits")])


CALIB = RNG.normal(size=(16, 3, 8, 8)).astype(np.float32)


def test_quantized_tiny_cnn_follows_the_contract_and_stays_close_to_float():
    g = tiny_cnn()
    q, report = quantize(g, CALIB, calib_method="minmax", rounding="nearest")
    assert check_contract(q) == []
    assert "batchnorm" not in q.count_ops()                             # canonicalized
    x = CALIB[:2]                                  # inside the calibrated ranges
    f, s = run(g, x), run(q, x, "simulated")
    assert np.abs(f - s).max() < 0.05 * np.abs(f).max()
    assert report["calibration"]["samples"] == 16 and report["calibration"]["batches"] == 8


def test_quantizing_twice_gives_byte_identical_graphs():
    g = tiny_cnn()
    for method in ("minmax", "mse"):
        a, _ = quantize(g, CALIB, calib_method=method, rounding="nearest")
        b, _ = quantize(g, CALIB, calib_method=method, rounding="nearest")
        assert dump_bytes(a) == dump_bytes(b)


def test_report_lists_options_layers_and_timings():
    seen = []
    q, rep = quantize(tiny_cnn(), CALIB, QuantizeOptions(weight_bits=4, first_last_bits=8, calib_method="minmax", rounding="nearest"),
                      progress=lambda stage, k, n: seen.append(stage))
    assert rep["options"]["weight_bits"] == 4 and rep["options"]["first_last_bits"] == 8
    assert [(d["name"], d["bits"]) for d in rep["layers"]] == [("bn", 8), ("c2", 4), ("logits", 8)]
    assert all(d["per_channel"] and 0 < d["scale_min"] <= d["scale_max"] for d in rep["layers"])
    assert rep["weight_bytes"] == 8 * 27 + (8 * 72) // 2 + 4 * 8
    assert set(rep["timings_s"]) == {"canonicalize", "calibrate", "quantize_weights", "bias_correct", "total"}
    assert {"canonicalize", "calibrate", "quantize_weights", "bias_correct"} <= set(seen)
    import json
    json.dumps(rep)                                                       # the CLI writes it as JSON


@pytest.mark.parametrize("per_channel, equalize, runs", [(True, None, False), (False, None, True),
                                                         (True, True, True), (False, False, False)])
def test_equalization_runs_by_default_only_with_per_tensor_weights(per_channel, equalize, runs):
    _, rep = quantize(tiny_cnn(), CALIB, per_channel=per_channel, equalize=equalize, bias_correct=False, calib_method="minmax", rounding="nearest")
    assert ("equalize" in rep["timings_s"]) is runs


def test_bias_correction_changes_biases_and_keeps_weights_on_grid():
    g = tiny_cnn()
    plain, _ = quantize(g, CALIB, bias_correct=False, weight_bits=4, calib_method="minmax", rounding="nearest")
    corrected, _ = quantize(g, CALIB, bias_correct=True, weight_bits=4, calib_method="minmax", rounding="nearest")
    assert check_contract(corrected) == []
    assert not np.array_equal(plain.const("b2"), corrected.const("b2"))
    for w in ("w2", "w3"):
        assert np.array_equal(plain.const(w), corrected.const(w))


@pytest.mark.parametrize("kw, match", [
    (dict(weight_bits=9), "weight bits must be 2..8, got 9"),
    (dict(weight_bits="auto"), "automatic bit allocation is not available"),
    (dict(weight_bits={"c2": 1}), "weight bits must be 2..8, got 1 for layer %c2"),
    (dict(act_bits=1), "activation bits must be 2..16, got 1"),
    (dict(calib_method="kl"), "unknown calibration method 'kl'"),
    (dict(first_last_bits=12), r"got 12 \(first_last_bits\)"),
    (dict(percentile=20.0), "percentile must be in"),
    (dict(equalize="yes"), "option equalize must be True or False"),
])
def test_bad_options_are_pass_errors(kw, match):
    with pytest.raises(PassError, match=match):
        QuantizeOptions(**kw)


def test_unknown_options_and_layers_are_pass_errors():
    with pytest.raises(PassError, match=r"unknown quantize option\(s\) \['size_budget'\]"):
        quantize(tiny_cnn(), CALIB, size_budget=10, calib_method="minmax", rounding="nearest")
    with pytest.raises(PassError, match=r"unknown layer\(s\) \['conv9'\]"):
        quantize(tiny_cnn(), CALIB, weight_bits={"conv9": 4}, calib_method="minmax", rounding="nearest")


@pytest.mark.parametrize("data, match", [
    (np.zeros((0, 3, 8, 8), np.float32), "calibration set is empty"),
    (np.zeros((4, 3, 8, 9), np.float32), r"expected samples of shape \[N, 3, 8, 8\] \(f32\), got \[4, 3, 8, 9\]"),
    (np.zeros((4, 3, 8, 8), np.int64), "expected f32 samples"),
])
def test_bad_calibration_data_is_an_input_error(data, match):
    with pytest.raises(InputError, match=match):
        quantize(tiny_cnn(), data, calib_method="minmax", rounding="nearest")


# ---- a real model: the digits CNN ---------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    torch = pytest.importorskip("torch")
    from dyadiq.frontend import from_torch
    from dyadiq.zoo import digits_cnn, digits_data
    data = digits_data()
    g = from_torch(digits_cnn(), torch.from_numpy(data.x_test[:50]))
    return g, data


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_digits_cnn_w8a8_per_channel_keeps_float_accuracy(digits, rounding):
    g, d = digits
    q, rep = quantize(g, d.x_train[:500], rounding=rounding)
    n = len(d.y_test) // 50 * 50
    x, y = d.x_test[:n], d.y_test[:n]
    acc_float = (run_batched(g, x, "float").argmax(1) == y).mean()
    acc_sim = (run_batched(q, x, "simulated").argmax(1) == y).mean()
    print(f"digits CNN: float {acc_float:.4f}, W8A8 ({rounding}) simulated {acc_sim:.4f}")
    assert acc_float > 0.97
    assert acc_sim >= acc_float - 0.005
    assert rep["calibration"]["samples"] == 500
