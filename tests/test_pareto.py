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


def test_the_plot_draws_exactly_the_json_numbers(sweep):
    """The figure is drawn from the JSON file alone; its lines hold the JSON's points, in plotted units."""
    from dyadiq.pareto import METRICS, figure
    d, _ = sweep
    result = json.loads((d / "p.json").read_text())
    ok = [p for p in result["points"] if "error" not in p]
    fig = figure(result)
    axes = fig.axes[:2]
    assert {p["label"] for p in ok if p["kind"] == "uniform"} == {"uniform W8", "uniform W4"}
    for ax, (m, _) in zip(axes, METRICS):
        assert ax.get_xlabel() == "packed weight size (kB = 1000 bytes)" and ax.get_ylabel()
        lines = {line.get_label(): np.asarray(line.get_xydata()) for line in ax.get_lines()}
        ilp = sorted((p for p in ok if p["kind"] == "ilp"), key=lambda p: p["size_bytes"])
        uni = sorted((p for p in ok if p["kind"] == "uniform"), key=lambda p: p["size_bytes"])
        def xy(points):
            return np.array([[p["size_bytes"] / 1e3, p[m]] for p in points])
        np.testing.assert_allclose(lines["ILP mixed precision (hessian sensitivity)"], xy(ilp), rtol=1e-12)
        np.testing.assert_allclose(lines["uniform weight width"], xy(uni), rtol=1e-12)
        texts = {t.get_text() for t in ax.texts}
        assert {"W8", "W4"} <= texts and {f"{p['avg_bits']:.2f} b" for p in ilp} <= texts
        # the frontier: exactly the points no other point beats in size and metric
        front = sorted((p for p in ok if p["frontier"][m]), key=lambda p: p["size_bytes"])
        for p in ok:
            dominated = any(o["size_bytes"] <= p["size_bytes"] and o[m] >= p[m] and
                            (o["size_bytes"] < p["size_bytes"] or o[m] > p[m]) for o in ok)
            assert p["frontier"][m] == (not dominated)
        step = lines["Pareto frontier"]
        np.testing.assert_allclose(step, xy(front), rtol=1e-12)            # the step line joins them
    top = [c for ax in axes for c in ax.child_axes if c.get_xlabel().startswith("mean weight bits")]
    assert len(top) == 2                                   # a second x axis in mean weight bits


def test_cli_pareto_writes_png_and_json(tmp_path, capsys):
    from dyadiq import cli_pareto
    from dyadiq.ir.serialize import save
    save(tiny_cnn(), tmp_path / "tiny.dyq")
    rng = np.random.default_rng(3)
    np.save(tmp_path / "calib.npy", rng.normal(size=(8, 3, 10, 10)).astype(np.float32))
    np.save(tmp_path / "eval.npy", rng.normal(size=(8, 3, 10, 10)).astype(np.float32))
    rc = cli_pareto.main([str(tmp_path / "tiny.dyq"), "--calib", str(tmp_path / "calib.npy"), "--eval",
                          str(tmp_path / "eval.npy"), "-o", str(tmp_path / "p.png"), "--avg-bits", "3,4",
                          "--uniform", "8", "--sensitivity", "measured", "--sensitivity-samples", "4"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "wrote" in out and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["model"] == "tiny" and result["method"] == "measured"
    assert [p["label"] for p in result["points"]] == ["ILP 3 bits", "ILP 4 bits", "uniform W8"]
    rc = cli_pareto.main([str(tmp_path / "tiny.dyq"), "--calib", str(tmp_path / "calib.npy"),
                          "-o", str(tmp_path / "p.svg")])
    _, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and "must be a .png" in err


def test_the_docs_plot_and_table_match_the_docs_json():
    """docs/mixed-precision.md embeds docs/pareto.png and copies every point of docs/pareto.json."""
    from pathlib import Path
    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "mixed-precision.md").read_text()
    result = json.loads((docs / "pareto.json").read_text())
    assert "](pareto.png)" in text and (docs / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ILP ") or line.startswith("| uniform ")}
    points = [p for p in result["points"] if "error" not in p]
    assert set(rows) == {p["label"] for p in points}
    assert {p["kind"] for p in points} == {"ilp", "uniform"}
    for p in points:
        bits, size, gbops, top1, sqnr = rows[p["label"]][:5]
        assert float(bits) == pytest.approx(p["avg_bits"], abs=5e-4)
        assert int(size.replace(",", "")) == p["size_bytes"] == p["report_weight_bytes"]
        assert float(gbops) == pytest.approx(p["bops"] / 1e9, abs=0.05)
        assert float(top1) == pytest.approx(p["top1"], abs=5e-5)
        assert float(sqnr) == pytest.approx(p["sqnr_db"], abs=5e-3)
