# SPDX-License-Identifier: Apache-2.0
"""``--weight-bits auto`` end to end: the ILP plan's predicted size is what the compiled artifact stores.

The plan's ``size_bytes`` (and every size budget) counts packed weights, ``ceil(bits * numel / 8)`` per
weight tensor: the manifest's ``weight_bytes_detail["weights"]``. The rest of the manifest's
``weight_bytes`` (``quant_params``: int32 biases, requantize multipliers, shifts, clamp bounds) depends on
the layer shapes only, not on the plan, so no budget can trade it. The artifact runs bit-exactly like
the integer interpreter.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dyadiq  # noqa: E402
from dyadiq import cli  # noqa: E402
from dyadiq.interp import run  # noqa: E402
from dyadiq.mixed import quantize_auto  # noqa: E402
from dyadiq.passes.choose_bits import layer_costs  # noqa: E402
from dyadiq.passes.canonicalize import canonicalize  # noqa: E402
from dyadiq.targets.artifact import weight_bytes  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def digits():
    from dyadiq.zoo import digits_cnn, digits_data
    d = digits_data()
    model = digits_cnn(epochs=3)
    return model, dyadiq.from_torch(model, (torch.from_numpy(d.x_test[:1]),)), d


def mbv2():
    from dyadiq.zoo.blocks import mbv2_block
    model, x = mbv2_block()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(24, *x.shape[1:])).astype(np.float32)
    return model, dyadiq.from_torch(model, (x,)), data


def params(g) -> int:
    return sum(c.params for c in layer_costs(canonicalize(g)).values())


def by_weight(q, plan: dict) -> list:
    """(weight elements, bits) of each layer in graph order (the integer graph renames layers and weights)."""
    from dyadiq.passes.quantize_weights import weighted_layers
    return [(q.type_of(n.inputs[1]).size, plan[n.name]) for n in weighted_layers(q)]


def manifest_bits(m: dict) -> list:
    return [(layer["params"], layer["bits"]) for layer in m["layers"]]


def check_artifact(q, plan: dict, predicted: int, x: np.ndarray) -> dict:
    """Compile for cpu; the manifest's packed weights equal ``predicted``; the artifact is bit-exact."""
    ig = dyadiq.integerize(q)
    art = dyadiq.compile(ig, target="cpu")
    m = art.manifest
    assert m["weight_bytes_detail"]["weights"] == predicted
    assert m["weight_bytes"] == predicted + m["weight_bytes_detail"]["quant_params"]
    assert manifest_bits(m) == by_weight(q, plan)
    for i in range(len(x)):
        xi = x[i:i + 1]
        assert np.array_equal(art.run(xi), run(ig, xi)), f"sample {i}"
    return m


@pytest.mark.parametrize("model", ["digits", "mbv2"])
@pytest.mark.parametrize("avg_bits", [3.5, 4.5])
def test_compiled_artifact_stores_exactly_the_plans_predicted_weight_bytes(digits, model, avg_bits):
    if model == "digits":
        _, g, d = digits
        calib, x = d.x_train[:48], d.x_test[:6]
    else:
        _, g, data = mbv2()
        calib, x = data[:18], data[18:]
    budget = int(params(g) * avg_bits / 8)
    q, report = quantize_auto(g, calib, {"size_bytes": budget}, sensitivity="measured")
    info = report["mixed_precision"]
    plan, predicted = info["plan"], info["predicted"]["size_bytes"]
    assert len(set(plan.values())) >= 2, plan                       # genuinely mixed
    assert predicted <= budget
    m = check_artifact(q, plan, predicted, x)
    # the quantization parameters do not depend on the plan: uniform 8 bits stores the same amount
    q8, _ = dyadiq.quantize(g, calib, weight_bits=8, calib_method="minmax", rounding="nearest")
    assert weight_bytes(dyadiq.integerize(q8))["quant_params"] == m["weight_bytes_detail"]["quant_params"]


def test_a_plan_with_many_widths_compiles_bit_exact(digits):
    """Every width 2..8 that the ILP can pick, at once, through the packed-weight code paths."""
    _, g, d = digits
    names = list(layer_costs(canonicalize(g)))
    for widths in ((2, 3, 5, 6), (7, 5, 3, 2)):
        plan = dict(zip(names, widths))
        q, report = dyadiq.quantize(g, d.x_train[:32], weight_bits=plan, calib_method="minmax", rounding="nearest")
        costs = layer_costs(canonicalize(g))
        from dyadiq.passes.choose_bits import plan_stats
        check_artifact(q, plan, plan_stats(plan, costs)["size_bytes"], d.x_test[:3])


def test_first_last_bits_are_kept_by_the_plan(digits):
    _, g, d = digits
    names = list(layer_costs(canonicalize(g)))
    q, report = quantize_auto(g, d.x_train[:32], {"size_bytes": int(params(g) * 4 / 8)}, first_last_bits=8)
    plan = report["mixed_precision"]["plan"]
    assert plan[names[0]] == plan[names[-1]] == 8
    assert {layer["name"]: layer["bits"] for layer in report["layers"]} == plan
    assert report["mixed_precision"]["predicted"]["size_bytes"] <= params(g) * 4 / 8


def test_cli_quantize_auto_then_compile(digits, tmp_path, capsys):
    model, g, d = digits
    torch.export.save(torch.export.export(model, (torch.from_numpy(d.x_test[:1]),)), tmp_path / "m.pt2")
    np.save(tmp_path / "calib.npy", d.x_train[:48])
    np.save(tmp_path / "x.npy", d.x_test[:1])
    budget = int(params(g) * 4.5 / 8)

    def dq(*argv):
        rc = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out

    dq("quantize", tmp_path / "m.pt2", "-o", tmp_path / "q.dyq", "--calib", tmp_path / "calib.npy",
       "--weight-bits", "auto", "--size-budget", budget, "--report", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    info = report["mixed_precision"]
    plan, predicted = info["plan"], info["predicted"]["size_bytes"]
    assert info["budget"] == {"size_bytes": budget} and predicted <= budget
    assert len(set(plan.values())) >= 2, plan
    assert {layer["name"]: layer["bits"] for layer in report["layers"]} == plan

    dq("compile", tmp_path / "q.dyq", "--target", "cpu", "-o", tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["weight_bytes_detail"]["weights"] == predicted
    assert manifest_bits(manifest) == by_weight(dyadiq.load(tmp_path / "q.dyq"), plan)

    dq("run", tmp_path / "art", "--input", tmp_path / "x.npy", "-o", tmp_path / "y_art.npy")
    dq("run", tmp_path / "q.dyq", "--input", tmp_path / "x.npy", "--mode", "integer", "-o", tmp_path / "y_int.npy")
    a, b = np.load(tmp_path / "y_art.npy"), np.load(tmp_path / "y_int.npy")
    assert a.dtype == b.dtype and np.array_equal(a, b)
