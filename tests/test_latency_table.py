# SPDX-License-Identifier: Apache-2.0
"""latency_table: per-layer, per-width latencies measured on the cpu target, cached; ``--latency-budget``.

- every conv/linear layer gets a positive median time at every candidate width;
- a second run reads the cache and measures nothing; a new width measures only what is missing;
- a latency budget gives a plan whose table latency is within it (API and CLI);
- a budget below the fastest plan is one ``error:`` line naming the smallest feasible budget, exit 2,
  raised before any sensitivity is computed.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dyadiq import cli, latency_table  # noqa: E402
from dyadiq.errors import InputError, PassError  # noqa: E402
from dyadiq.mixed import quantize_auto  # noqa: E402
from dyadiq.passes.choose_bits import CANDIDATES  # noqa: E402
from dyadiq.passes.sensitivity import prepare_graph  # noqa: E402
from test_pareto import tiny_cnn  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
LAYERS = {"c1", "c2", "fc"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The tiny CNN's table at every candidate width, measured once (3 timed runs each) into a cache."""
    cache = tmp_path_factory.mktemp("latency") / "latency.json"
    g = tiny_cnn()
    table = latency_table.measure(prepare_graph(g), CANDIDATES, cache=cache, repeats=3, warmup=1)
    return g, table, cache


def calib():
    return np.random.default_rng(1).normal(size=(8, 3, 10, 10)).astype(np.float32)


def test_every_layer_has_a_positive_time_at_every_width(measured):
    _, table, cache = measured
    assert set(table) == LAYERS
    for name, row in table.items():
        assert sorted(row) == list(CANDIDATES)
        assert all(0 < ms < 1e3 for ms in row.values()), (name, row)
    data = json.loads(cache.read_text())
    assert data["format"] == "dyadiq.latency_table" and len(data["entries"]) == len(LAYERS) * len(CANDIDATES)
    key = json.loads(next(iter(data["entries"])))
    assert key["target"] == "cpu" and {"op", "x", "w", "attrs", "bits", "machine", "code"} <= set(key)


def test_a_second_run_reads_the_cache(measured, monkeypatch):
    g, table, cache = measured
    timed = []
    monkeypatch.setattr(latency_table, "time_layer", lambda g, n, b, **kw: timed.append((n.name, b)) or 1.0)
    assert latency_table.measure(prepare_graph(g), CANDIDATES, cache=cache) == table
    assert timed == []
    other = cache.with_name("other.json")
    other.write_text(cache.read_text())
    extra = latency_table.measure(prepare_graph(g), (4, 7), cache=other)
    assert sorted(timed) == [("c1", 7), ("c2", 7), ("fc", 7)]                 # only the missing width
    assert {n: r[4] for n, r in extra.items()} == {n: r[4] for n, r in table.items()}
    assert all(r[7] == 1.0 for r in extra.values())


def test_a_damaged_cache_is_refused_with_a_clear_error(tmp_path):
    bad = tmp_path / "latency.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a latency table"):
        latency_table.measure(prepare_graph(tiny_cnn()), (8,), cache=bad)


def fastest(table) -> float:
    return sum(min(r.values()) for r in table.values())


def slowest(table) -> float:
    return sum(max(r.values()) for r in table.values())


def test_a_latency_budget_gives_a_plan_within_it(measured):
    g, table, cache = measured
    budget = (fastest(table) + slowest(table)) / 2
    q, report = quantize_auto(g, calib(), {"latency_ms": budget}, latency_cache=cache)
    info = report["mixed_precision"]
    plan = info["plan"]
    assert set(plan) == LAYERS
    assert info["predicted"]["latency_ms"] == pytest.approx(sum(table[n][b] for n, b in plan.items()))
    assert info["predicted"]["latency_ms"] <= budget
    assert info["latency_ms"] == {n: {str(b): v for b, v in r.items()} for n, r in table.items()}
    assert {d["name"]: d["bits"] for d in report["layers"]} == plan


def test_an_infeasible_latency_budget_names_the_smallest_feasible_one(measured, monkeypatch):
    g, table, cache = measured
    import dyadiq.passes.sensitivity as sensitivity
    monkeypatch.setattr(sensitivity, "sensitivities", lambda *a, **k: pytest.fail("sensitivities computed"))
    with pytest.raises(PassError, match=re.escape(f"the smallest plan needs {fastest(table):,.3f} ms")):
        quantize_auto(g, calib(), {"latency_ms": fastest(table) / 2}, latency_cache=cache)


def test_cli_latency_budget(measured, tmp_path, capsys):
    from dyadiq.ir.serialize import save
    g, table, cache = measured
    save(g, tmp_path / "m.dyq")
    np.save(tmp_path / "calib.npy", calib())

    def dq(*argv):
        rc = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    common = ("quantize", tmp_path / "m.dyq", "-o", tmp_path / "q.dyq", "--calib", tmp_path / "calib.npy",
              "--weight-bits", "auto", "--latency-table", cache, "--report", tmp_path / "r.json")
    rc, _, err = dq(*common, "--latency-budget", f"{fastest(table) / 2:.6f}")
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: latency budget ") and f"the smallest plan needs {fastest(table):,.3f} ms" in err
    assert not (tmp_path / "q.dyq").exists() and not (tmp_path / "r.json").exists()

    budget = (fastest(table) + slowest(table)) / 2
    rc, out, err = dq(*common, "--latency-budget", f"{budget:.6f}")
    assert rc == 0, err
    info = json.loads((tmp_path / "r.json").read_text())["mixed_precision"]
    assert info["predicted"]["latency_ms"] <= budget + 1e-6
    assert info["latency_table"]["cache"] == str(cache)


def test_a_layer_is_timed_alone_with_its_weights_and_a_zero_bias():
    """Timing does not depend on the bias, and a real bias over the scale of random inputs can break
    the int32 accumulator bound; the weights and shapes are the layer's own."""
    from dyadiq.ir.builder import GraphBuilder
    rng = np.random.default_rng(0)
    b = GraphBuilder("g")
    x = b.input("x", (1, 4, 6, 6))
    w = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    y = b.op("conv2d", [x, b.const("w", w), b.const("b", np.full(8, 1e6, np.float32))], name="c", stride=(2, 2))
    g = b.build([y])
    one = latency_table.single_layer(g, g.nodes[0])
    n = one.nodes[0]
    assert n.op == "conv2d" and n.attr_dict == g.nodes[0].attr_dict and one.type_of("x") == g.type_of("x")
    assert np.array_equal(one.const(n.inputs[1]), w) and not one.const(n.inputs[2]).any()
    assert latency_table.time_layer(g, g.nodes[0], 8, repeats=2, warmup=0) > 0
