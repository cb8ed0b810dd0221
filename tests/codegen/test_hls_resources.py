# SPDX-License-Identifier: Apache-2.0
"""The HLS resource and latency model follows its stated rules (docs/hls.md), reuse trades multipliers for
cycles, and the ILP's per-layer tables never underestimate what the compiled project reports."""
import numpy as np
import pytest

from dyadiq.codegen.hls import generate
from dyadiq.codegen.hls.resources import layer_tables, mac_array, mult_cost
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.integerize import integerize
from quant_helpers import simple_quantize


@pytest.mark.parametrize("a,b,dsp,lut", [
    (9, 4, 0, 36), (4, 9, 0, 36), (9, 2, 0, 18),      # an operand <= 4 bits: LUTs (a * b), no DSP
    (9, 5, 1, 0), (9, 8, 1, 0), (18, 27, 1, 0),       # fits one DSP48E2 (27 x 18)
    (19, 32, 4, 0), (28, 9, 2, 0),                    # wider: ceil(max/27) * ceil(min/18)
])
def test_multiplier_mapping_rule(a, b, dsp, lut):
    assert mult_cost(a, b) == (dsp, lut)


def test_reuse_factor_divides_multipliers_and_multiplies_cycles():
    one = mac_array(4608, 64, 144, 9, 8, 20, 1, n_weights=4608)
    four = mac_array(4608, 64, 144, 9, 8, 20, 4, n_weights=4608)
    big = mac_array(4608, 64, 144, 9, 8, 20, 128, n_weights=4608)
    assert (one["multipliers"], four["multipliers"], big["multipliers"]) == (4608, 1152, 36)
    assert (one["ii"], four["ii"]) == (64, 256) and four["latency"] > one["latency"]
    assert one["weight_memory"] == "logic" and four["weight_memory"] == "lutram" and big["weight_memory"] == "bram"
    assert big["bram18"] == 36 * 1 and four["lut"] == 1152 * 1 * 8          # ceil(4/64) * 8 bits per bank
    lutmac = mac_array(100, 1, 100, 9, 3, 16, 1)
    assert lutmac["dsp"] == 0 and lutmac["lut"] == 100 * (27 + 16)         # product + adder per multiplier


def _net():
    r = np.random.default_rng(0)
    b = GraphBuilder("net")
    x = b.input("x", (1, 2, 6, 6))
    y = b.op("relu", [b.op("conv2d", [x, b.const("w1", r.normal(size=(4, 2, 3, 3)).astype(np.float32))],
                            pad=(1, 1, 1, 1))])
    y = b.op("reshape", [y], shape=(1, 144))
    g = b.build([b.op("linear", [y, b.const("w2", r.normal(size=(5, 144)).astype(np.float32))])])
    return g, r.normal(size=(6, 1, 2, 6, 6)).astype(np.float32)[:, 0]


@pytest.mark.parametrize("plan", [{"conv2d": 8, "linear": 8}, {"conv2d": 3, "linear": 5},
                                  {"conv2d": 5, "linear": 2}, {"conv2d": 4, "linear": 4}])
def test_ilp_tables_bound_the_compiled_projects_resources(plan):
    g, calib = _net()
    ig = integerize(simple_quantize(g, calib, w_bits=plan))
    res = generate(ig).resources
    tables = layer_tables(g, (2, 3, 4, 5, 6, 8))
    assert res["mac_dsp"] == sum(tables["dsp"][n][b] for n, b in plan.items())     # DSP: same mapping
    assert res["mac_lut"] <= sum(tables["lut"][n][b] for n, b in plan.items())
    assert res["dsp"] == sum(r["dsp"] for r in res["layers"]) and res["lut"] == sum(r["lut"] for r in res["layers"])
    assert res["latency_cycles"] == sum(r["latency"] for r in res["layers"])
    assert res["ii_cycles"] == max(r["ii"] for r in res["layers"])
    macs = [r for r in res["layers"] if r["mac"]]
    assert [r["operand_bits"][1] for r in macs] == [plan["conv2d"], plan["linear"]]
    assert [r["maps_to"] for r in macs] == ["lut" if b <= 4 else "dsp" for b in plan.values()]
