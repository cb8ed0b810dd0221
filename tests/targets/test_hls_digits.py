# SPDX-License-Identifier: Apache-2.0
"""The digits CNN on the hls target: an ILP plan mixing 3-8 bit weights under ``dsp`` + ``lut`` budgets
runs bit-exactly in C-simulation (both io styles), and the ``--dsp-budget`` / ``--lut-budget`` plans fit
their budgets by the resource model and are at least as accurate as the uniform plans that fit."""
import numpy as np
import pytest

pytest.importorskip("hls4ml")
torch = pytest.importorskip("torch")

import dyadiq  # noqa: E402
import dyadiq.targets as targets  # noqa: E402
from dyadiq.codegen.hls import generate  # noqa: E402
from dyadiq.codegen.hls.resources import layer_tables  # noqa: E402
from dyadiq.interp import run  # noqa: E402
from dyadiq.passes.choose_bits import CANDIDATES, Budget, choose_bits, layer_costs, plan_bits  # noqa: E402
from dyadiq.passes.pipeline import make_options, quantize  # noqa: E402
from dyadiq.passes.sensitivity import prepare_graph  # noqa: E402

pytestmark = pytest.mark.slow
MIXED = Budget(dsp=800, lut=2_300_000)     # first and last layers may take DSPs, the rest must fit in LUTs


@pytest.fixture(scope="module")
def digits():
    from dyadiq.zoo import digits_cnn, digits_data
    d = digits_data()
    model = digits_cnn()
    g = dyadiq.from_torch(model, (torch.from_numpy(d.x_test[:1]),))
    opts = make_options(None, rounding="nearest", bias_correct=False)
    calib = d.x_train[:64]
    _, info = plan_bits(g, calib, Budget(dsp=1e12), options=opts, method="measured",
                        resources=lambda p, w: layer_tables(p, w))
    sens = {k: {int(b): v for b, v in s.items()} for k, s in info["sensitivity"].items()}
    prep = prepare_graph(g, equalize=opts.equalize, per_channel=opts.per_channel)
    costs = layer_costs(prep, resources=layer_tables(prep, CANDIDATES))
    return g, d, calib, opts, sens, costs, model


def _integer(digits, plan):
    g, _, calib, opts = digits[:4]
    q, _ = quantize(g, calib, opts, weight_bits=plan)
    return dyadiq.integerize(q)


def _accuracy(ig, d) -> float:
    y = np.concatenate([run(ig, d.x_test[i:i + 1]) for i in range(len(d.x_test))])
    return float((y.argmax(1) == d.y_test).mean())


@pytest.fixture(scope="module")
def mixed(digits):
    g, d, calib, opts, sens, costs = digits[:6]
    plan = choose_bits(sens, costs, MIXED)
    return plan, _integer(digits, plan)


def test_ilp_plan_mixing_3_to_8_bits_is_bit_exact_in_csim(digits, mixed):
    plan, ig = mixed
    assert min(plan.values()) == 3 and max(plan.values()) == 8 and len(set(plan.values())) >= 3, plan
    d = digits[1]
    xs = d.x_test[:48]
    ref = np.stack([run(ig, xs[i:i + 1]) for i in range(len(xs))])
    for io in ("parallel", "stream"):
        ys = targets.compile(ig, target="hls", io=io).run_batch([xs[:, None]])[0]
        np.testing.assert_array_equal(ys, ref)


def _fits(res, budget) -> bool:
    return (budget.dsp is None or res["mac_dsp"] <= budget.dsp) and (budget.lut is None or res["mac_lut"] <= budget.lut)


@pytest.mark.parametrize("budget", [Budget(dsp=300), MIXED], ids=["dsp", "dsp+lut"])
def test_budget_plans_fit_by_the_model_and_beat_the_uniform_plans_that_fit(digits, mixed, budget):
    g, d, calib, opts, sens, costs = digits[:6]
    plan, ig = mixed if budget == MIXED else (choose_bits(sens, costs, budget), None)
    ig = ig if ig is not None else _integer(digits, plan)
    res = generate(ig).resources
    assert _fits(res, budget), (plan, res["mac_dsp"], res["mac_lut"])
    predicted = {k: sum(costs[n].resources[k][b] for n, b in plan.items()) for k in ("dsp", "lut")}
    assert res["mac_dsp"] <= predicted["dsp"] and res["mac_lut"] <= predicted["lut"]   # the ILP never underestimates
    acc = _accuracy(ig, d)
    fitting = []
    for b in (3, 4, 5, 8):
        uni = {n: b for n in plan}
        if all(sum(costs[n].resources[k][b] for n in uni) <= getattr(budget, k)
               for k in ("dsp", "lut") if getattr(budget, k) is not None):
            fitting.append((b, _accuracy(_integer(digits, uni), d)))
    assert fitting, "some uniform plan fits"
    assert all(acc >= a for _, a in fitting), (plan, acc, fitting)


def test_cli_dsp_and_lut_budgets_then_compile_for_hls(digits, tmp_path, capsys):
    import json
    from dyadiq import cli
    d, model = digits[1], digits[6]
    torch.export.save(torch.export.export(model, (torch.from_numpy(d.x_test[:1]),)), tmp_path / "m.pt2")
    np.save(tmp_path / "calib.npy", d.x_train[:48])
    np.save(tmp_path / "x.npy", d.x_test[:1])

    def dq(*argv):
        rc = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out

    dq("quantize", tmp_path / "m.pt2", "-o", tmp_path / "q.dyq", "--calib", tmp_path / "calib.npy", "--rounding",
       "nearest", "--weight-bits", "auto", "--dsp-budget", 800, "--lut-budget", 2_300_000,
       "--report", tmp_path / "r.json")
    info = json.loads((tmp_path / "r.json").read_text())["mixed_precision"]
    assert info["budget"] == {"dsp": 800, "lut": 2_300_000}
    assert info["predicted"]["dsp"] <= 800 and info["predicted"]["lut"] <= 2_300_000
    dq("compile", tmp_path / "q.dyq", "--target", "hls", "-o", tmp_path / "art")
    res = json.loads((tmp_path / "art" / "manifest.json").read_text())["hls"]["resources"]
    assert res["mac_dsp"] <= info["predicted"]["dsp"] and res["mac_lut"] <= info["predicted"]["lut"]
    dq("run", tmp_path / "art", "--input", tmp_path / "x.npy", "-o", tmp_path / "y_art.npy")
    dq("run", tmp_path / "q.dyq", "--input", tmp_path / "x.npy", "--mode", "integer", "-o", tmp_path / "y_int.npy")
    assert np.array_equal(np.load(tmp_path / "y_art.npy"), np.load(tmp_path / "y_int.npy"))
