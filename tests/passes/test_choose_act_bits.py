# SPDX-License-Identifier: Apache-2.0
"""choose_act_bits: which activations get 16 bits.

- the ILP's choice equals brute-force enumeration of all subsets within the budget;
- the second-order sensitivity predicts the measured KL of quantizing one activation (right order);
- an activation whose reader could overflow an int32 accumulator at 16 bits is never a candidate;
- ``quantize(wide_acts=f)`` widens exactly the planned values and stays within the budget.
"""
import itertools

import numpy as np
import pytest
import torch

import dyadiq
from dyadiq.interp.run import run_batched
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.choose_act_bits import ActChoice, activation_traces, choices, plan_act_bits, relative_cost
from dyadiq.passes.pipeline import quantize
from dyadiq.zoo.blocks import BLOCKS


def _brute(cands, tb, tbits, budget):
    best, best_val = (), -1.0
    for r in range(len(cands) + 1):
        for sub in itertools.combinations(cands, r):
            if sum(relative_cost(c, tb, tbits) for c in sub) <= budget + 1e-12:
                val = sum(c.s8 - c.s16 for c in sub)
                if val > best_val + 1e-12:
                    best, best_val = sub, val
    return best_val


@pytest.mark.parametrize("seed", range(5))
def test_ilp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    cands = [ActChoice(f"a{i}", float(s), float(s) / 256**2, float(rng.uniform(0, 1e6)), int(rng.integers(1, 1000)))
             for i, s in enumerate(rng.uniform(0, 1, 9))]
    chosen = set(plan_act_bits(cands, 1e7, 1e4, 0.08))
    got = sum(c.s8 - c.s16 for c in cands if c.name in chosen)
    assert sum(relative_cost(c, 1e7, 1e4) for c in cands if c.name in chosen) <= 0.08 + 1e-9
    assert got == pytest.approx(_brute(cands, 1e7, 1e4, 0.08), rel=1e-9)


def _mlp(bias: bool = False):
    rng = np.random.default_rng(1)
    b = GraphBuilder("mlp")
    x = b.input("x", (8, 16), "f32")
    w1 = [b.const("w1", rng.standard_normal((32, 16)).astype(np.float32) / 4)]
    if bias:
        w1.append(b.const("b1", np.full(32, 0.5, np.float32)))
    h = b.op("relu", [b.op("linear", [x, *w1])])
    y = b.op("linear", [h, b.const("w2", rng.standard_normal((10, 32)).astype(np.float32) / 4)])
    return b.build([y]), rng.standard_normal((64, 16)).astype(np.float32)


def _kl(p_logits, q_logits):
    lp = torch.log_softmax(torch.from_numpy(p_logits).double(), -1)
    lq = torch.log_softmax(torch.from_numpy(q_logits).double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def test_second_order_sensitivity_predicts_the_measured_kl():
    g, calib = _mlp()
    q, _ = quantize(g, calib, act_bits=6, bias_correct=False, calib_method="minmax", rounding="nearest")
    hidden = next(k for k, v in q.values.items() if v.quant is not None and not q.is_const(k) and k not in g.inputs
                  and k not in g.outputs)
    traces = activation_traces(g, calib, [hidden], samples=64, probes=16)
    codes = {n.inputs[1]: np.zeros(g.type_of(n.inputs[1]).shape, np.int8) for n in g.nodes if n.op == "linear"}
    (c,) = [c for c in choices(q, traces, weight_bits={}, codes=codes) if c.name == hidden]
    only = g.with_quant(hidden, q.quant_of(hidden))          # float model, that one activation quantized
    measured = _kl(run_batched(g, calib, "float"), run_batched(only, calib, "simulated"))
    assert 0.5 < c.s8 / measured < 2.0


def test_a_reader_that_could_overflow_int32_is_not_a_candidate():
    g, calib = _mlp()
    q, _ = quantize(g, calib, bias_correct=False, calib_method="minmax", rounding="nearest")
    acts = [k for k, v in q.values.items() if v.quant is not None and not q.is_const(k)]
    traces = dict.fromkeys(acts, 1.0)
    small = {n.inputs[1]: np.ones(g.type_of(n.inputs[1]).shape, np.int8) for n in g.nodes if n.op == "linear"}
    assert "x" in {c.name for c in choices(q, traces, weight_bits={}, codes=small)}
    big = dict(small)             # rows with sum |w_q| = 16 * 127 * 1000: 2^15 times that is > 2^31
    big["w1"] = np.full((32, 16), 127, np.int64) * 1000
    assert "x" not in {c.name for c in choices(q, traces, weight_bits={}, codes=big)}


def test_a_reader_whose_integer_bias_would_overflow_int32_is_not_a_candidate():
    """The integer bias is b / (s_x * s_w): a channel with tiny weights (so a tiny per-channel scale) and a
    bias leaves int32 once s_x is a 16-bit step (EfficientNet-Lite0's stem has such channels)."""
    g, calib = _mlp(bias=True)
    q, _ = quantize(g, calib, bias_correct=False, calib_method="minmax", rounding="nearest")
    acts = [k for k, v in q.values.items() if v.quant is not None and not q.is_const(k)]
    traces = dict.fromkeys(acts, 1.0)
    reader = next(n for n in q.nodes if n.op == "linear" and n.inputs[0] == "x")
    assert len(reader.inputs) == 3 and np.abs(q.const(reader.inputs[2])).max() > 0
    codes = {n.inputs[1]: np.ones(g.type_of(n.inputs[1]).shape, np.int8) for n in g.nodes if n.op == "linear"}
    scales = {w: np.ones(codes[w].shape[0]) for w in codes}
    assert "x" in {c.name for c in choices(q, traces, weight_bits={}, codes=codes, scales=scales)}
    scales[reader.inputs[1]] = np.full(codes[reader.inputs[1]].shape[0], 1e-12)
    assert "x" not in {c.name for c in choices(q, traces, weight_bits={}, codes=codes, scales=scales)}


def test_factors_of_a_product_of_two_activations_stay_8_bit_and_the_model_lowers():
    """GPT-2's GELU is x * (1 + tanh(..)): two 16-bit factors could leave int32 in the integer product, so
    neither is a candidate, and --wide-acts with every other value widened still integerizes."""
    class Gated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc, self.out = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

        def forward(self, x):
            h = self.fc(x)
            return self.out(h * (1.0 + torch.tanh(h * 0.8)))
    x = torch.randn(4, 16)
    g = dyadiq.from_torch(Gated(), (x[:1],))
    calib = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32) * 4
    q, _ = quantize(g, calib, bias_correct=False, calib_method="minmax", rounding="nearest")
    mul = next(n for n in q.nodes if n.op == "mul" and not any(q.is_const(i) for i in n.inputs))
    acts = [k for k, v in q.values.items() if v.quant is not None and not q.is_const(k)]
    codes = {n.inputs[1]: np.ones(g.type_of(n.inputs[1]).shape, np.int8) for n in g.nodes if n.op == "linear"}
    names = {c.name for c in choices(q, dict.fromkeys(acts, 1.0), weight_bits={}, codes=codes)}
    assert names and not names & set(mul.inputs)
    wide, _ = quantize(g, calib, bias_correct=False, calib_method="minmax", rounding="nearest", wide_acts=1.0)
    assert {wide.quant_of(i).bits for i in mul.inputs} == {8}
    dyadiq.integerize(wide)


def test_quantize_widens_the_planned_values_within_the_budget():
    torch.manual_seed(0)
    model, x = BLOCKS["mbv2_block"]()
    g = dyadiq.from_torch(model, (x,))
    calib = np.random.default_rng(0).standard_normal((16, *x.shape[1:])).astype(np.float32)
    q, report = dyadiq.quantize(g, calib, wide_acts=0.5, calib_method="minmax", rounding="nearest")
    wide = report["activations"]["wide"]
    assert wide["chosen"] and wide["cost"] <= 0.5
    got = sorted(k for k, v in q.values.items() if v.quant is not None and not q.is_const(k) and v.quant.bits == 16)
    assert got == wide["chosen"]
    q0, r0 = dyadiq.quantize(g, calib, wide_acts=0.0, calib_method="minmax", rounding="nearest")
    assert r0["activations"]["wide"]["chosen"] == []
    assert all(v.quant.bits == 8 for k, v in q0.values.items() if v.quant is not None and not q0.is_const(k))
