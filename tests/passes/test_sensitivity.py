# SPDX-License-Identifier: Apache-2.0
"""torch_eval agrees with the interpreter; Hessian traces are right; sensitivities fall with the width."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dyadiq.errors import PassError  # noqa: E402
from dyadiq.interp import run  # noqa: E402
from dyadiq.interp.run import run_batched  # noqa: E402
from dyadiq.ir.builder import GraphBuilder  # noqa: E402
from dyadiq.passes.quantize_weights import weighted_layers  # noqa: E402
from dyadiq.passes.sensitivity import (CANDIDATES, SensitivityOptions, hessian_traces, prepare_graph,  # noqa: E402
                                       sensitivities, weight_errors)
from dyadiq.passes.torch_eval import TorchGraph  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def f32(rng, *shape, s=1.0):
    return (rng.normal(size=shape) * s).astype(np.float32)


# ---- graphs -------------------------------------------------------------------------------------------
def cnn_ops(batch=2):
    """Convolutions and pools with every padding / ceil-mode / dilation / groups flavour."""
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input("x", (batch, 3, 9, 9))
    h = b.op("pad", [x], pads=(0, 0, 1, 2, 0, 0, 2, 1), mode="reflect")                 # 12 x 12
    h = b.op("conv2d", [h, b.const("w1", f32(rng, 8, 3, 3, 3)), b.const("b1", f32(rng, 8))],
             pad=(0, 1, 1, 0), stride=(2, 2))
    h = b.op("batchnorm", [h, *(b.const(k, np.abs(f32(rng, 8)) + 0.5) for k in ("g", "be", "mu", "var"))], eps=1e-3)
    h = b.op("leaky_relu", [h], alpha=0.1)
    h = b.op("maxpool", [h], kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1), ceil_mode=True)
    h = b.op("avgpool", [h], kernel=(2, 2), stride=(1, 1), pad=(1, 0, 0, 1), ceil_mode=True,
             count_include_pad=False)
    h = b.op("hardswish", [h])
    h = b.op("conv2d", [h, b.const("w2", f32(rng, 8, 2, 3, 3))], pad=(2, 2, 2, 2), dilation=(2, 2), groups=4)
    s = b.op("hardsigmoid", [h], alpha=0.2, beta=0.5)
    h = b.op("mul", [h, s])
    h = b.op("pad", [h], pads=(0, 0, 1, 0, 0, 0, 0, 1), mode="edge")
    h = b.op("avgpool", [h], kernel=(2, 2), stride=(2, 2), pad=(1, 1, 0, 0), count_include_pad=True)
    h = b.op("silu", [h])
    h = b.op("global_avgpool", [h])
    h = b.op("reshape", [h], shape=(batch, 8))
    h = b.op("linear", [h, b.const("w3", f32(rng, 5, 8)), b.const("b3", f32(rng, 5))])
    return b.build([b.op("softmax", [h], axis=-1)])


def sequence_ops(batch=2):
    """Norms, shapes, reductions and the elementwise zoo."""
    rng = np.random.default_rng(1)
    b = GraphBuilder()
    x = b.input("x", (batch, 4, 6))
    h = b.op("layernorm", [x, b.const("lg", f32(rng, 6)), b.const("lb", f32(rng, 6))], axis=-1)
    t = b.op("transpose", [h], perm=(0, 2, 1))                                           # [B, 6, 4]
    s = b.op("slice", [t], starts=(1, 0), ends=(6, 4), axes=(1, 2), steps=(2, 1))       # [B, 3, 4]
    s2 = b.op("slice", [t], starts=(-1,), ends=(-7,), axes=(1,), steps=(-2,))           # [B, 3, 4]
    c = b.op("concat", [s, s2], axis=1)                                                  # [B, 6, 4]
    c = b.op("gelu", [c], approximate="tanh")
    e = b.op("gelu", [t])
    y = b.op("add", [c, e])
    y = b.op("matmul", [y, b.const("m", f32(rng, 4, 5))])                                 # [B, 6, 5]
    a = b.op("abs", [y])
    parts = [b.op("exp", [b.op("neg", [a])]), b.op("log", [b.op("add", [a, b.const("one", np.float32(1.0))])]),
             b.op("sqrt", [a]), b.op("reciprocal", [b.op("add", [a, b.const("two", np.float32(2.0))])]),
             b.op("erf", [y]), b.op("tanh", [y]), b.op("sigmoid", [y]), b.op("relu", [y]),
             b.op("clip", [y], min=-0.5, max=0.7), b.op("identity", [y]),
             b.op("pow", [y, b.const("p2", np.float32(2.0))]), b.op("div", [y, b.const("d", np.float32(3.0))])]
    z = parts[0]
    for k, p in enumerate(parts[1:]):
        z = b.op(("add", "sub", "mul", "maximum", "minimum")[k % 5], [z, p])
    g = b.op("gather", [z, b.const("idx", np.array([4, 0, -1], np.int64))], axis=2)       # [B, 6, 3]
    r = [b.op(op, [g], axes=(1,), keepdims=False) for op in ("mean", "reduce_sum", "reduce_max", "reduce_min")]
    out = b.op("concat", r, axis=1)                                                       # [B, 12]
    return b.build([b.op("linear", [out, b.const("w", f32(rng, 3, 12))])])


def small_cnn(batch=1, seed=0):
    """conv -> relu6 -> depthwise conv -> silu -> pool -> classifier."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", (batch, 3, 12, 12))
    h = b.op("conv2d", [x, b.const("w1", f32(rng, 8, 3, 3, 3, s=0.3)), b.const("b1", f32(rng, 8, s=0.1))],
             name="c1", pad=(1, 1, 1, 1))
    h = b.op("clip", [h], min=0.0, max=6.0)
    h = b.op("conv2d", [h, b.const("w2", f32(rng, 8, 1, 3, 3, s=0.3))], name="dw", pad=(0, 0, 1, 1), groups=8,
             stride=(2, 2))
    h = b.op("silu", [h])
    h = b.op("global_avgpool", [h])
    h = b.op("reshape", [h], shape=(batch, 8))
    return b.build([b.op("linear", [h, b.const("w3", f32(rng, 10, 8, s=0.5))], name="fc")])


def mlp(batch=1):
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    x = b.input("x", (batch, 6))
    h = b.op("linear", [x, b.const("w1", f32(rng, 5, 6, s=0.7)), b.const("b1", f32(rng, 5))], name="l1")
    h = b.op("tanh", [h])
    return b.build([b.op("linear", [h, b.const("w2", f32(rng, 4, 5, s=1.5))], name="l2")])


# ---- torch_eval ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [cnn_ops, sequence_ops, small_cnn, mlp])
def test_torch_eval_matches_the_interpreter_in_float_mode(build):
    g = build(batch=2)
    x = f32(np.random.default_rng(5), *g.type_of("x").shape)
    with torch.no_grad():
        got = TorchGraph(g)(x).numpy()
    np.testing.assert_allclose(got, run(g, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", [cnn_ops, sequence_ops])
def test_torch_eval_runs_many_batches_at_once_like_run_batched(build):
    g = build(batch=2)                                   # static reshapes: vmapped over 3 chunks of 2
    x = f32(np.random.default_rng(6), 6, *g.type_of("x").shape[1:])
    with torch.no_grad():
        got = TorchGraph(g)(x).numpy()
    np.testing.assert_allclose(got, run_batched(g, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["pool_concat_cnn", "transformer_layer"])
def test_torch_eval_matches_the_interpreter_on_imported_blocks(name):
    import dyadiq
    from dyadiq.zoo import BLOCKS
    model, example = BLOCKS[name]()
    g = dyadiq.from_torch(model, (example,))
    x = example.numpy()
    with torch.no_grad():
        got = TorchGraph(g)(x).numpy()
    np.testing.assert_allclose(got, run(g, x), rtol=1e-4, atol=1e-5)


def test_torch_eval_simulated_matches_the_interpreter_up_to_rare_rounding_flips():
    import dyadiq
    g = small_cnn(batch=2)
    rng = np.random.default_rng(3)
    q, _ = dyadiq.quantize(g, f32(rng, 8, 3, 12, 12), weight_bits={"c1": 4, "dw": 6, "fc": 3}, calib_method="minmax", rounding="nearest")
    x = f32(rng, 8, 3, 12, 12)
    with torch.no_grad():
        got = TorchGraph(q, simulated=True)(x).numpy()
    ref = run_batched(q, x, "simulated")
    lsb = q.quant_of(q.outputs[0]).scale[0]
    assert np.abs(got - ref).max() <= 2 * lsb + 1e-6      # a float-order rounding flip moves a value 1 level
    assert (got != ref).mean() < 0.05
    assert not np.array_equal(got, TorchGraph(g)(x).detach().numpy())   # it did quantize


def test_torch_eval_refuses_integer_graphs():
    import dyadiq
    g = small_cnn(batch=1)
    q, _ = dyadiq.quantize(g, f32(np.random.default_rng(0), 2, 3, 12, 12), calib_method="minmax",
                           rounding="nearest")
    with pytest.raises(PassError, match="no torch evaluation"):
        TorchGraph(dyadiq.integerize(q))


# ---- Hessian traces ------------------------------------------------------------------------------------
def exact_traces(g, x) -> dict[str, float]:
    """Tr of each layer's diagonal Hessian block of mean KL(p_float || q(W)), by full autograd."""
    tg = TorchGraph(g)
    out = {}
    for n in weighted_layers(g):
        w0 = torch.tensor(np.array(g.const(n.inputs[1])), dtype=torch.float32)
        with torch.no_grad():
            logp = torch.log_softmax(tg(x), -1)

        def loss(wf, n=n, logp=logp, shape=w0.shape):
            z = tg(x, {n.inputs[1]: wf.reshape(shape)})
            return (logp.exp() * (logp - torch.log_softmax(z, -1))).sum(-1).mean()
        out[n.name] = float(torch.autograd.functional.hessian(loss, w0.reshape(-1)).diagonal().sum())
    return out


def test_single_linear_layer_trace_has_a_closed_form():
    rng = np.random.default_rng(4)
    b = GraphBuilder()
    x = b.input("x", (1, 5))
    g = b.build([b.op("linear", [x, b.const("w", f32(rng, 4, 5))], name="fc")])
    data = f32(rng, 16, 5)
    z = data @ g.const("w").T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # d z_k / d W_kj = x_j: Tr(J^T (diag p - p p^T) J) = ||x||^2 * sum_k p_k (1 - p_k), averaged over samples
    exact = float(np.mean((data ** 2).sum(1) * (p * (1 - p)).sum(1)))
    assert exact_traces(g, data)["fc"] == pytest.approx(exact, rel=1e-4)
    est = hessian_traces(g, data, probes=400, samples=16, equalize=False)["fc"]
    assert est == pytest.approx(exact, rel=0.1)


@pytest.mark.parametrize("estimator", ["output", "parameter"])
def test_hutchinson_trace_is_close_to_the_exact_trace(estimator):
    g = mlp(batch=1)
    data = f32(np.random.default_rng(7), 16, 6)
    exact = exact_traces(g, data)
    est = hessian_traces(g, data, probes=400, samples=16, estimator=estimator, equalize=False)
    for name, v in exact.items():
        assert est[name] == pytest.approx(v, rel=0.15), (name, est, exact)


def test_hessian_sensitivity_is_half_the_mean_trace_times_the_weight_error():
    g = small_cnn()
    data = f32(np.random.default_rng(8), 8, 3, 12, 12)
    sens = sensitivities(g, data, "hessian", probes=4, samples=8, equalize=False)
    traces = hessian_traces(g, data, probes=4, samples=8, equalize=False)
    err = weight_errors(g)
    for n in weighted_layers(g):
        for bits in CANDIDATES:
            numel = g.const(n.inputs[1]).size
            assert sens[n.name][bits] == pytest.approx(0.5 * traces[n.name] / numel * err[n.name][bits], rel=1e-9)
        assert traces[n.name] > 0


# ---- sensitivities -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["measured", "hessian"])
def test_sensitivity_decreases_with_bits(method):
    g = small_cnn()
    data = f32(np.random.default_rng(9), 16, 3, 12, 12)
    sens = sensitivities(g, data, method, equalize=False)
    assert list(sens) == ["c1", "dw", "fc"]
    for name, s in sens.items():
        vals = [s[b] for b in CANDIDATES]
        assert all(a > b for a, b in zip(vals, vals[1:])), (name, vals)
        assert vals[-1] > 0


def test_measured_sensitivity_is_the_kl_with_one_layer_quantized():
    """Direct check: quantize only ``dw`` with the pipeline's quantizer and measure the mean KL by hand."""
    from dyadiq.ir.numerics import fake_quant
    from dyadiq.passes.quantize_weights import weight_quant
    g = small_cnn()
    data = f32(np.random.default_rng(10), 8, 3, 12, 12)
    sens = sensitivities(g, data, "measured", candidates=(3,), equalize=False, bias_correct=False)
    w = g.const("w2")
    wq = fake_quant(w, weight_quant(w, 3))
    gq = g.replace(constants={**g.constants, "w2": wq})
    zf, zq = run_batched(g, data), run_batched(gq, data)
    lp = zf - np.log(np.exp(zf).sum(1, keepdims=True))
    lq = zq - np.log(np.exp(zq).sum(1, keepdims=True))
    kl = float((np.exp(lp) * (lp - lq)).sum(1).mean())
    assert sens["dw"][3] == pytest.approx(kl, rel=1e-3)


def test_bias_correction_removes_the_mean_shift_from_measured_sensitivity():
    g = small_cnn()
    data = f32(np.random.default_rng(11), 16, 3, 12, 12)
    plain = sensitivities(g, data, "measured", candidates=(2,), equalize=False, bias_correct=False)
    corrected = sensitivities(g, data, "measured", candidates=(2,), equalize=False, bias_correct=True)
    assert sum(v[2] for v in corrected.values()) < sum(v[2] for v in plain.values())


def test_second_order_prediction_matches_the_measured_kl_at_high_bits():
    g = mlp()
    data = f32(np.random.default_rng(12), 64, 6)
    pred = sensitivities(g, data, "hessian", candidates=(8,), probes=64, samples=64, equalize=False)
    meas = sensitivities(g, data, "measured", candidates=(8,), samples=64, equalize=False, bias_correct=False)
    for name in pred:
        assert 1 / 3 < pred[name][8] / meas[name][8] < 3, (name, pred, meas)


def test_layer_names_are_the_pipelines_and_a_plan_quantizes():
    import dyadiq
    from dyadiq.passes.choose_bits import Budget, choose_bits, layer_costs, plan_stats
    g = cnn_ops(batch=2)
    data = f32(np.random.default_rng(13), 8, 3, 9, 9)
    sens = sensitivities(g, data, "hessian", probes=2)
    prepared = prepare_graph(g)
    assert list(sens) == [n.name for n in weighted_layers(prepared)]
    costs = layer_costs(prepared)
    plan = choose_bits(sens, costs, Budget(size_bytes=plan_stats({n: 4 for n in costs}, costs)["size_bytes"]))
    q, report = dyadiq.quantize(g, data, weight_bits=plan, calib_method="minmax", rounding="nearest")
    assert {d["name"]: d["bits"] for d in report["layers"]} == plan


def test_progress_reports_every_step():
    g = small_cnn()
    data = f32(np.random.default_rng(14), 8, 3, 12, 12)
    seen = []
    sensitivities(g, data, "measured", candidates=(4, 8), progress=lambda *a: seen.append(a), equalize=False)
    assert seen[0] == ("measured", 0, 6) and seen[-1] == ("measured", 6, 6)
    seen.clear()
    sensitivities(g, data, "hessian", probes=3, chunk=4, progress=lambda *a: seen.append(a), equalize=False)
    assert seen[0] == ("hessian", 0, 6) and seen[-1] == ("hessian", 6, 6)


@pytest.mark.parametrize("bad, match", [(dict(method="magic"), "unknown sensitivity method"),
                                        (dict(estimator="x"), "unknown Hessian estimator"),
                                        (dict(candidates=(4, 9)), "weight bits must be 2..8"),
                                        (dict(probes=0), "probes must be a positive int")])
def test_bad_options_are_refused(bad, match):
    with pytest.raises(PassError, match=match):
        SensitivityOptions(**bad)


def test_the_graph_is_prepared_as_the_pipeline_prepares_it():
    from dyadiq.passes.canonicalize import canonicalize
    from dyadiq.passes.sensitivity import pipeline_equalizes
    assert [pipeline_equalizes(e, pc) for e, pc in ((None, True), (None, False), (True, True), (False, False))] \
        == [False, True, True, False]
    g = small_cnn()
    assert prepare_graph(g) == canonicalize(g)                       # per-channel default: no equalization
    eq = prepare_graph(g, equalize=None, per_channel=False)
    assert [n.name for n in weighted_layers(eq)] == ["c1", "dw", "fc"]
    assert not np.array_equal(eq.const("w1"), g.const("w1"))         # c1 -> dw were equalized
