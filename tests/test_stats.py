# SPDX-License-Identifier: Apache-2.0
"""graph_stats: parameters, MACs and weight bytes match hand counts (and torch on EfficientNet-Lite0)."""
from __future__ import annotations

import numpy as np
import pytest

from dyadiq.ir import GraphBuilder, QuantType
from dyadiq.stats import graph_stats

R = np.random.RandomState(0)


def f32(*shape):
    return R.randn(*shape).astype(np.float32)


def layer(stats, name):
    (row,) = [r for r in stats["layers"] if r["name"] == name]
    return row


def test_conv2d_macs_are_output_elements_times_kernel_volume():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 8, 8))
    y = b.op("conv2d", [x, b.const("w", f32(4, 3, 3, 3)), b.const("b", f32(4))], name="conv", pad=(1, 1, 1, 1))
    s = graph_stats(b.build([y]))
    row = layer(s, "conv")
    assert row["output_shape"] == [2, 4, 8, 8]
    assert row["macs"] == 2 * 8 * 8 * 4 * 3 * 3 * 3          # N*OH*OW*O*(C/groups)*KH*KW = 13824
    assert row["params"] == 4 * 3 * 3 * 3 + 4
    assert row["weight_bytes"] == 4 * (108 + 4) and row["weight_bits"] == 32


def test_depthwise_strided_conv_divides_by_groups():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 8, 8))
    y = b.op("conv2d", [x, b.const("w", f32(4, 1, 3, 3))], name="dw", stride=(2, 2), pad=(1, 1, 1, 1), groups=4)
    row = layer(graph_stats(b.build([y])), "dw")
    assert row["output_shape"] == [1, 4, 4, 4]
    assert row["macs"] == 4 * 4 * 4 * (4 // 4) * 3 * 3        # 576
    assert row["params"] == 36


def test_linear_and_batched_matmul():
    b = GraphBuilder()
    x = b.input("x", (2, 4))
    y = b.op("linear", [x, b.const("w", f32(10, 4)), b.const("b", f32(10))], name="fc")
    a = b.input("a", (2, 3, 5, 6))
    m = b.op("matmul", [a, b.const("k", f32(6, 7))], name="mm")
    s = graph_stats(b.build([y, m]))
    assert layer(s, "fc")["macs"] == 2 * 10 * 4 and layer(s, "fc")["params"] == 40 + 10
    assert layer(s, "mm")["macs"] == 2 * 3 * 5 * 7 * 6 and layer(s, "mm")["params"] == 42   # batch*M*N*K
    assert s["totals"] == {**s["totals"], "params": 50 + 42, "macs": 80 + 1260}


def test_matmul_of_two_activations_has_macs_but_no_params():
    b = GraphBuilder()
    q, k = b.input("q", (1, 2, 8, 16)), b.input("k", (1, 2, 16, 8))
    s = graph_stats(b.build([b.op("matmul", [q, k], name="att")]))
    assert layer(s, "att")["macs"] == 2 * 8 * 8 * 16 and layer(s, "att")["params"] == 0


def test_batchnorm_running_stats_are_buffers_not_parameters():
    b = GraphBuilder()
    x = b.input("x", (1, 6, 4, 4))
    y = b.op("batchnorm", [x] + [b.const(n, np.abs(f32(6)) + 0.1) for n in ("g", "beta", "mean", "var")],
             name="bn", eps=1e-3)
    s = graph_stats(b.build([y]))
    assert layer(s, "bn")["params"] == 12 and layer(s, "bn")["macs"] == 0
    assert s["totals"]["params"] == 12 and s["totals"]["constants"] == 4


def test_layernorm_and_onnx_style_matmul_bias():
    b = GraphBuilder()
    x = b.input("x", (1, 5, 8))
    h = b.op("layernorm", [x, b.const("g", f32(8)), b.const("beta", f32(8))], name="ln", axis=-1)
    h = b.op("matmul", [h, b.const("w", f32(8, 3))], name="proj")
    h = b.op("add", [h, b.const("bias", f32(3))], name="proj_bias")
    h = b.op("add", [h, b.const("shift", f32(1, 5, 3))], name="not_bias")       # not a per-feature bias
    s = graph_stats(b.build([h]))
    assert layer(s, "ln")["params"] == 16
    assert layer(s, "proj_bias")["params"] == 3
    assert all(r["name"] != "not_bias" for r in s["layers"])
    assert s["totals"]["params"] == 16 + 24 + 3


def test_shared_weights_count_once_in_totals():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    w = b.const("w", f32(4, 4))
    y = b.op("linear", [b.op("linear", [x, w], name="l1"), w], name="l2")
    s = graph_stats(b.build([y]))
    assert [r["params"] for r in s["layers"]] == [16, 16]
    assert s["totals"]["params"] == 16 and s["totals"]["weight_bytes"] == 64


def test_weight_bytes_use_quant_bits_then_dtype_size():
    b = GraphBuilder()
    x = b.input("x", (1, 3))
    w4 = b.const("w4", f32(3, 3), quant=QuantType.make(4, True, [0.1, 0.2, 0.3], 0, axis=0))
    wi8 = b.const("wi8", np.ones((2, 3), np.int8))
    y = b.op("linear", [x, w4], name="q4")
    z = b.op("qlinear", [b.input("xi", (1, 3), "i8"), wi8, b.const("bi", np.zeros(2, np.int32))], name="q8")
    s = graph_stats(b.build([y, z]))
    q4 = layer(s, "q4")
    assert q4["weight_bits"] == 4 and q4["weight_bytes"] == 5               # ceil(9 * 4 / 8)
    assert q4["weight_quant"]["axis"] == 0 and q4["weight"].startswith("i4")
    q8 = layer(s, "q8")
    assert q8["weight_bits"] == 8 and q8["weight_bytes"] == 6 + 2 * 4 and q8["macs"] == 6
    assert s["quant"] == [{"value": "w4", "bits": 4, "signed": True, "axis": 0,
                           "scale": [0.1, 0.2, 0.3], "zero_point": [0, 0, 0]}]


def test_op_counts():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    y = b.op("relu", [b.op("relu", [x])])
    s = graph_stats(b.build([b.op("sigmoid", [y])]))
    assert s["ops"] == {"relu": 2, "sigmoid": 1} and s["nodes"] == 3 and s["layers"] == []


@pytest.mark.slow
def test_efficientnet_lite0_params_and_macs_match_torch():
    torch = pytest.importorskip("torch")
    from dyadiq.frontend import from_torch
    from dyadiq.zoo import efficientnet_lite0

    model = efficientnet_lite0()
    hook_macs = []

    def count(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            hook_macs.append(out.numel() * mod.in_channels // mod.groups * kh * kw)
        else:
            hook_macs.append(out.numel() * mod.in_features)

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    s = graph_stats(from_torch(model, (x,)))
    assert s["totals"]["params"] == sum(p.numel() for p in model.parameters()) == 4_652_008
    assert s["totals"]["macs"] == sum(hook_macs) == 385_187_552
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert s["ops"]["conv2d"] == n_conv == 49 and s["ops"]["linear"] == 1   # stem, 15 expand, 16 dw + 16 proj, head
