# SPDX-License-Identifier: Apache-2.0
"""choose_bits: the ILP finds the true optimum, names the smallest feasible budget, and is fast."""
from __future__ import annotations

import time

import numpy as np
import pytest

from dyadiq.errors import PassError
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.choose_bits import (CANDIDATES, Budget, LayerCost, choose_bits, layer_costs, plan_stats,
                                       weight_bytes)


def random_problem(n_layers: int, seed: int):
    """Layers with random sizes and sensitivities that fall with the width (like 4^-b), as real ones do."""
    rng = np.random.default_rng(seed)
    costs = {f"l{i}": LayerCost(int(rng.integers(50, 5000)), int(rng.integers(10**4, 10**6)), weight=f"w{i}")
             for i in range(n_layers)}
    scale = {k: rng.lognormal(0, 2) for k in costs}
    sens = {k: {b: float(scale[k] * 4.0 ** -b * rng.uniform(0.7, 1.4)) for b in CANDIDATES} for k in costs}
    return sens, costs


def brute_force(sens, costs, budget: Budget, cands=CANDIDATES):
    """Least total sensitivity over every plan within the budget (None if none fits)."""
    names = list(sens)
    s = np.array([[sens[n][b] for b in cands] for n in names])
    size = np.array([[weight_bytes(costs[n].params, b) for b in cands] for n in names])
    bops = np.array([[costs[n].macs * b * 8 for b in cands] for n in names], dtype=np.float64)
    k, n = len(cands), len(names)
    idx = (np.arange(k ** n)[:, None] // k ** np.arange(n)) % k          # every plan, as width indices
    rows = np.arange(len(names))
    tot_s, tot_size, tot_bops = s[rows, idx].sum(1), size[rows, idx].sum(1), bops[rows, idx].sum(1)
    ok = np.ones(len(idx), bool)
    if budget.size_bytes is not None:
        ok &= tot_size <= budget.size_bytes
    if budget.bops is not None:
        ok &= tot_bops <= budget.bops
    if not ok.any():
        return None
    return float(tot_s[ok].min())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("avg_bits", [2.6, 3.5, 4.5, 6.0])
def test_ilp_optimum_equals_brute_force_under_a_size_budget(seed, avg_bits):
    sens, costs = random_problem(7, seed)                        # 6^7 = 279,936 plans
    budget = Budget(size_bytes=int(sum(c.params for c in costs.values()) * avg_bits / 8))
    plan = choose_bits(sens, costs, budget)
    assert set(plan) == set(sens) and all(b in CANDIDATES for b in plan.values())
    assert plan_stats(plan, costs)["size_bytes"] <= budget.size_bytes
    got = sum(sens[n][b] for n, b in plan.items())
    assert got == pytest.approx(brute_force(sens, costs, budget), rel=1e-9)


@pytest.mark.parametrize("seed", [3, 4])
def test_ilp_optimum_equals_brute_force_under_size_and_bops_budgets(seed):
    sens, costs = random_problem(6, seed)
    budget = Budget(size_bytes=int(sum(c.params for c in costs.values()) * 4.5 / 8),
                    bops=sum(c.macs for c in costs.values()) * 8 * 4.0)
    plan = choose_bits(sens, costs, budget)
    stats = plan_stats(plan, costs)
    assert stats["size_bytes"] <= budget.size_bytes and stats["bops"] <= budget.bops
    assert sum(sens[n][b] for n, b in plan.items()) == pytest.approx(brute_force(sens, costs, budget), rel=1e-9)


def test_no_budget_takes_the_least_sensitive_width_everywhere():
    sens, costs = random_problem(5, 0)
    assert choose_bits(sens, costs, Budget()) == {n: 8 for n in sens}
    sens["l2"][6] = sens["l2"][8] * 0.999                 # not monotone: the least wins, however close
    assert choose_bits(sens, costs, Budget())["l2"] == 6


def test_infeasible_size_budget_names_the_smallest_plan():
    sens, costs = random_problem(8, 0)
    smallest = sum(weight_bytes(c.params, 2) for c in costs.values())
    with pytest.raises(PassError) as e:
        choose_bits(sens, costs, Budget(size_bytes=smallest - 1))
    msg = str(e.value)
    assert f"size budget {smallest - 1:,} bytes is infeasible" in msg
    assert f"the smallest plan needs {smallest:,} bytes (all layers at 2 bits)" in msg
    assert choose_bits(sens, costs, Budget(size_bytes=smallest)) == {n: 2 for n in sens}   # exactly enough


def test_infeasible_bops_budget_names_the_smallest_plan_for_the_candidates():
    sens, costs = random_problem(4, 1)
    least = sum(c.macs * 4 * 8 for c in costs.values())
    with pytest.raises(PassError, match=rf"the smallest plan needs {least:,} BOPs \(all layers at 4 bits\)"):
        choose_bits(sens, costs, Budget(bops=least / 2), candidates=(4, 8))


def test_budgets_feasible_alone_but_not_together_name_the_least_size_within_the_others():
    # size and BOPs both fall with the width, so only a latency table (8 bits faster) can conflict
    costs = {n: LayerCost(100, 10, weight=n, latency_ms={2: 2.0, 8: 1.0}) for n in "ab"}
    sens = {n: {2: 1.0, 8: 0.0} for n in costs}
    size = weight_bytes(100, 2) + weight_bytes(100, 8)            # one layer must be at 2 bits ...
    assert sorted(choose_bits(sens, costs, Budget(size_bytes=size), (2, 8)).values()) == [2, 8]
    assert choose_bits(sens, costs, Budget(latency_ms=2.5), (2, 8)) == {"a": 8, "b": 8}   # ... both at 8
    with pytest.raises(PassError) as e:
        choose_bits(sens, costs, Budget(size_bytes=size, latency_ms=2.5), (2, 8))
    assert str(e.value) == ("size budget 125 bytes is infeasible together with the latency 2.500 ms budget: "
                            "the smallest plan within the other budgets needs 200 bytes")


def test_solve_time_on_a_60_layer_problem_is_under_a_second():
    sens, costs = random_problem(60, 7)
    total = sum(c.params for c in costs.values())
    choose_bits(*random_problem(3, 0), Budget(size_bytes=10**9))       # warm up the imports
    worst = 0.0
    for avg in (2.5, 3.3, 4.5, 5.7):
        t = time.perf_counter()
        plan = choose_bits(sens, costs, Budget(size_bytes=int(total * avg / 8)))
        worst = max(worst, time.perf_counter() - t)
        assert plan_stats(plan, costs)["avg_bits"] <= avg
    assert worst < 1.0


def test_layers_sharing_a_weight_get_one_width_and_are_counted_once():
    costs = {"a": LayerCost(800, 10, weight="w"), "b": LayerCost(800, 10, weight="w"),
             "c": LayerCost(800, 10, weight="v")}
    sens = {"a": {2: 5.0, 4: 1.0, 8: 0.0}, "b": {2: 0.0, 4: 0.0, 8: 0.0}, "c": {2: 2.0, 4: 1.5, 8: 0.0}}
    plan = choose_bits(sens, costs, Budget(size_bytes=weight_bytes(800, 4) + weight_bytes(800, 4)), (2, 4, 8))
    assert plan == {"a": 4, "b": 4, "c": 4}
    assert plan_stats(plan, costs)["size_bytes"] == 2 * weight_bytes(800, 4)


def test_fixed_widths_are_kept():
    sens, costs = random_problem(5, 2)
    plan = choose_bits(sens, costs, Budget(size_bytes=sum(c.params for c in costs.values()) * 5 // 8), fixed={"l0": 8})
    assert plan["l0"] == 8
    free = choose_bits(sens, costs, Budget(size_bytes=sum(c.params for c in costs.values()) * 5 // 8))
    assert sum(sens[n][b] for n, b in free.items()) <= sum(sens[n][b] for n, b in plan.items())


def test_latency_budget_uses_the_callers_tables():
    costs = {n: LayerCost(100, 10, weight=n, latency_ms={2: 1.0, 4: 1.5, 8: 3.0}) for n in "abc"}
    sens = {"a": {2: 9.0, 4: 1.0, 8: 0.0}, "b": {2: 1.0, 4: 0.5, 8: 0.0}, "c": {2: 1.0, 4: 0.5, 8: 0.0}}
    plan = choose_bits(sens, costs, Budget(latency_ms=5.0), candidates=(2, 4, 8))
    assert plan == {"a": 8, "b": 2, "c": 2}
    assert plan_stats(plan, costs)["latency_ms"] == pytest.approx(5.0)
    with pytest.raises(PassError, match=r"latency budget 2.000 ms is infeasible: the smallest plan needs 3.000 ms"):
        choose_bits(sens, costs, Budget(latency_ms=2.0), candidates=(2, 4, 8))
    with pytest.raises(PassError, match="latency tables"):
        choose_bits(sens, {n: LayerCost(100, 10) for n in "abc"}, Budget(latency_ms=5.0), (2, 4, 8))


@pytest.mark.parametrize("bad", [dict(size_bytes=0), dict(size_bytes=-5), dict(bops=float("inf")),
                                 dict(size_bytes=True), dict(latency_ms="3")])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(PassError, match="budget must be a positive number"):
        Budget(**bad)


def test_missing_sensitivities_and_costs_are_named():
    sens, costs = random_problem(3, 0)
    del sens["l1"][5]
    with pytest.raises(PassError, match=r"no sensitivity for layer %l1 at 5 bits"):
        choose_bits(sens, costs, Budget())
    with pytest.raises(PassError, match=r"no costs for layer\(s\) \['zz'\]"):
        choose_bits({"zz": {8: 0.0}}, costs, Budget(), candidates=(8,))


def _conv_linear_graph():
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input("x", (2, 3, 10, 10))
    h = b.op("conv2d", [x, b.const("w1", rng.normal(size=(6, 3, 3, 3)).astype(np.float32))], name="c1",
             stride=(2, 2), pad=(1, 1, 1, 1))                                       # -> [2, 6, 5, 5]
    h = b.op("conv2d", [h, b.const("w2", rng.normal(size=(6, 1, 3, 3)).astype(np.float32))], name="dw",
             groups=6, pad=(1, 1, 1, 1))
    h = b.op("global_avgpool", [h])
    h = b.op("reshape", [h], shape=(2, 6))
    y = b.op("linear", [h, b.const("w3", rng.normal(size=(5, 6)).astype(np.float32))], name="fc")
    return b.build([y])


def test_layer_costs_count_params_and_macs():
    costs = layer_costs(_conv_linear_graph(), act_bits=8)
    assert costs["c1"] == LayerCost(6 * 3 * 9, 2 * 6 * 5 * 5 * 27, 8, "w1")
    assert costs["dw"].macs == 2 * 6 * 5 * 5 * 9 and costs["dw"].params == 54
    assert costs["fc"].macs == 2 * 5 * 6 and costs["fc"].params == 30


def test_plan_stats_size_is_what_the_pipeline_and_the_manifest_count():
    import dyadiq
    from dyadiq.targets.artifact import weight_bytes as manifest_bytes

    g = _conv_linear_graph()
    plan = {"c1": 3, "dw": 5, "fc": 2}
    q, report = dyadiq.quantize(g, np.random.default_rng(1).normal(size=(4, 3, 10, 10)).astype(np.float32),
                                weight_bits=plan, equalize=False, calib_method="minmax", rounding="nearest")
    stats = plan_stats(plan, layer_costs(g))
    expected = -(-162 * 3 // 8) + -(-54 * 5 // 8) + -(-30 * 2 // 8)
    assert stats["size_bytes"] == expected == report["weight_bytes"]
    assert manifest_bytes(dyadiq.integerize(q))["weights"] == expected
    assert stats["avg_bits"] == pytest.approx((162 * 3 + 54 * 5 + 30 * 2) / 246)


def test_plan_bits_plans_for_the_pipeline_within_the_budget():
    import dyadiq
    from dyadiq.passes.choose_bits import plan_bits
    g = _conv_linear_graph()
    calib = np.random.default_rng(2).normal(size=(8, 3, 10, 10)).astype(np.float32)
    budget = Budget(size_bytes=weight_bytes(246, 4))
    plan, info = plan_bits(g, calib, budget, method="hessian", sens_options=None)
    assert set(plan) == {"c1", "dw", "fc"} and info["predicted"]["size_bytes"] <= budget.size_bytes
    q, report = dyadiq.quantize(g, calib, weight_bits=plan, calib_method="minmax", rounding="nearest")
    assert report["weight_bytes"] == info["predicted"]["size_bytes"]
