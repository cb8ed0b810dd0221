# SPDX-License-Identifier: Apache-2.0
"""pareto: a sweep of ILP plans and uniform widths, written as a PNG and a JSON with the same numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dyadiq.ir.builder import GraphBuilder  # noqa: E402
from dyadiq.pareto import output_metrics, pareto  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_cnn():
    rng = np.random.default_rng(0)
    b = GraphBuilder("tiny")
    x = b.input("x", (1, 3, 10, 10))
    h = b.op("conv2d", [x, b.const("w1", (rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32))],
             name="c1", pad=(1, 1, 1, 1))
    h = b.op("relu", [h])
    h = b.op("conv2d", [h, b.const("w2", (rng.normal(size=(16, 8, 3, 3)) * 0.2).astype(np.float32))],
             name="c2", stride=(2, 2), pad=(1, 1, 1, 1))
    h = b.op("relu", [h])
    h = b.op("global_avgpool", [h])
    h = b.op("reshape", [h], shape=(1, 16))
    return b.build([b.op("linear", [h, b.const("w3", rng.normal(size=(10, 16)).astype(np.float32))], name="fc")])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("pareto")
    rng = np.random.default_rng(1)
    calib = rng.normal(size=(8, 3, 10, 10)).astype(np.float32)
    evalx = rng.normal(size=(32, 3, 10, 10)).astype(np.float32)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = pareto(tiny_cnn(), calib, evalx, d / "p.png", d / "p.json", avg_bits=(1.0, 3.0, 4.0, 5.0),
                        uniform=(8, 4))
    finally:
        torch.set_num_threads(old)
    return d, result


def test_png_and_json_are_written(sweep):
    d, result = sweep
    assert (d / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((d / "p.json").read_text()) == json.loads(json.dumps(result))
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")]           # no temporary files left


def test_json_numbers_are_consistent(sweep):
    _, result = sweep
    params = 8 * 27 + 16 * 72 + 10 * 16
    assert result["params"] == params
    points = {p["label"]: p for p in result["points"]}
    assert "infeasible" in points["ILP 1 bits"]["error"]                        # below all-2-bit size
    for p in result["points"]:
        if "error" in p:
            continue
        bits = p["plan"]
        assert set(bits) == {"c1", "c2", "fc"}
        size = sum(-(-n * bits[k] // 8) for k, n in (("c1", 216), ("c2", 1152), ("fc", 160)))
        assert p["size_bytes"] == size == p["report_weight_bytes"]
        assert p["size_mb"] == pytest.approx(size / 1e6)
        assert p["avg_bits"] == pytest.approx((216 * bits["c1"] + 1152 * bits["c2"] + 160 * bits["fc"]) / params)
        assert 0.0 <= p["top1"] <= 1.0
        sens = result["sensitivity"]
        assert p["predicted"] == pytest.approx(sum(sens[k][str(b)] for k, b in bits.items()))
        if p["kind"] == "ilp":
            assert p["size_bytes"] <= p["budget"]["size_bytes"] <= params * p["target_avg_bits"] / 8
    assert points["uniform W8"]["size_bytes"] == params
    assert points["uniform W8"]["sqnr_db"] > points["uniform W4"]["sqnr_db"]
    assert points["ILP 5 bits"]["predicted"] <= points["ILP 3 bits"]["predicted"]


def test_output_metrics():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    m = output_metrics(ref, np.array([[1.0, 0.1], [1.0, 0.0]]))
    assert m["top1"] == 0.5
    assert m["sqnr_db"] == pytest.approx((10 * np.log10(1 / 0.01) + 10 * np.log10(4 / 5)) / 2)


def test_without_evaluation_data_the_last_quarter_of_the_calibration_set_is_held_out(tmp_path):
    from dyadiq.errors import InputError
    from dyadiq.pareto import holdout
    g = tiny_cnn()
    data = np.random.default_rng(2).normal(size=(16, 3, 10, 10)).astype(np.float32)
    cal, ev = holdout(g, data)
    assert cal["x"].shape[0] == 12 and np.array_equal(ev["x"], data[12:])
    with pytest.raises(InputError, match="at least two batches"):
        holdout(g, data[:1])
    result = pareto(g, data, None, None, tmp_path / "p.json", avg_bits=(4.0,), uniform=())
    assert result["samples"] == {"calibration": 12, "evaluation": 4}
    assert not (tmp_path / "p.png").exists() and (tmp_path / "p.json").exists()
