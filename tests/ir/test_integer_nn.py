# SPDX-License-Identifier: Apache-2.0
"""Integer transformer ops (ir/ops/integer_nn.py) against float, over the full input code range, with the
error bounds of docs/numerics.md ("Transformer ops"); their TVM lowering is bit-exact with the numpy kernels."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyadiq.ir.numerics import dequantize
from dyadiq.ir.ops.integer_nn import div_round, isqrt, layernorm_codes, softmax_codes
from dyadiq.ir.types import QuantType
from dyadiq.passes.annotate_quant import act_quant
from dyadiq.passes.integerize_nn import layernorm_attrs, softmax_attrs

FAST = settings(max_examples=60, deadline=None)


@FAST
@given(st.integers(0, 2**62 - 1))
def test_isqrt_is_floor_sqrt(q):
    assert int(isqrt(np.asarray([q]))[0]) == math.isqrt(max(q, 1))


def test_isqrt_edges():
    k = np.arange(1, 62)
    q = np.concatenate([np.arange(0, 5000), (1 << k) - 1, 1 << k, (1 << k) + 1, [2**62 - 1]]).astype(np.int64)
    r = np.arange(1, 2**31, 2**31 // 4099, dtype=np.int64)
    q = np.concatenate([q, r * r - 1, r * r, r * r + 1])
    assert np.array_equal(isqrt(q), [math.isqrt(max(int(v), 1)) for v in q])


@FAST
@given(st.integers(-10**6, 10**6), st.integers(1, 10**6))
def test_div_round_is_half_up(a, b):
    assert int(div_round(np.int64(a), np.int64(b))) == math.floor(a / b + 0.5) if abs(a) < 2**40 else True
    assert int(div_round(np.int64(a), np.int64(b))) == (2 * a + b) // (2 * b)


def _codes(rng, bits, shape, spread):
    """Codes spread over the whole range (``spread`` = 1) or a narrower band; the extremes always included."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    c = rng.integers(lo, hi + 1, shape)
    band = max(1, int((hi - lo) * spread))
    base = rng.integers(lo, hi - band + 1, shape[:-1] + (1,))
    x = np.where(rng.random(shape) < 0.5, c, base + rng.integers(0, band + 1, shape))
    x.reshape(-1)[:2] = lo, hi
    return x.astype(np.int64)


@FAST
@given(st.sampled_from([8, 16]), st.sampled_from([8, 16]), st.floats(1e-4, 0.5), st.integers(1, 512),
       st.floats(0.001, 1.0), st.integers(0, 2**32 - 1))
def test_qsoftmax_within_documented_bound(in_bits, out_bits, s_x, n, spread, seed):
    """|dequant(code) - softmax(s_x x)| <= s_y / 2 + 1e-3 p + 2^-20 for every row."""
    rng = np.random.default_rng(seed)
    x = _codes(rng, in_bits, (3, n), spread)
    qo = act_quant(0.0, 1.0, out_bits)
    a = dict(axis=-1, **softmax_attrs(s_x, qo, n))
    y = dequantize(softmax_codes(x, a), qo, np.float64)
    z = s_x * (x - x.max(axis=-1, keepdims=True)).astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    assert np.all(np.abs(y - p) <= qo.scale[0] / 2 + 1e-3 * p + 2.0**-20)


@FAST
@given(st.sampled_from([8, 16]), st.sampled_from([8, 16]), st.sampled_from([4, 32, 384, 1024]),
       st.floats(0.001, 1.0), st.floats(1e-12, 1e-3), st.integers(0, 2**32 - 1))
def test_qlayernorm_within_documented_bound(in_bits, out_bits, dim, spread, eps, seed):
    """|dequant(code) - layernorm(s_x x)| <= s_y (1/2 + 2^-8) + max|gamma| (2 sqrt(D) / r + 2^-15)."""
    rng = np.random.default_rng(seed)
    x = _codes(rng, in_bits, (4, dim), spread)
    s_x = float(rng.uniform(1e-3, 1.0))
    gamma, beta = rng.normal(1.0, 0.5, dim), rng.normal(0.0, 0.5, dim)
    xf = s_x * x.astype(np.float64)
    mu = xf.mean(-1, keepdims=True)
    ref = (xf - mu) / np.sqrt(((xf - mu) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta
    qo = act_quant(float(ref.min()), float(ref.max()), out_bits)
    qx = QuantType.make(in_bits, True, s_x, 0)
    g, b, a = layernorm_attrs(qx, qo, gamma, beta, eps, dim)
    y = dequantize(layernorm_codes(x, g, b, a), qo, np.float64)
    d = dim * x - x.sum(-1, keepdims=True)
    r = isqrt(((d * d).sum(-1, keepdims=True) << (2 * a["pre"])) // dim + a["eps_q"]).astype(np.float64)
    r = r / 2.0 ** a["pre"]          # the root in units of d
    bound = qo.scale[0] * (0.5 + 2.0**-8) + np.abs(gamma).max() * (2 * math.sqrt(dim) / (r + 1e-300) + 2.0**-15)
    assert np.all(np.abs(y - ref) <= np.minimum(bound, np.inf))


@FAST
@given(st.sampled_from([8, 16]), st.integers(1, 40), st.floats(1e-3, 0.5), st.integers(0, 2**32 - 1))
def test_masked_qsoftmax_is_the_qsoftmax_of_the_kept_codes(in_bits, n, s_x, seed):
    """Kept entries get exactly the codes of qsoftmax over the kept entries alone; masked ones (and rows with
    nothing kept) get the code of probability 0."""
    rng = np.random.default_rng(seed)
    x = _codes(rng, in_bits, (6, n), 1.0)
    keep = rng.random((6, n)) < rng.uniform(0, 1, (6, 1))
    keep[0] = False
    qo = act_quant(0.0, 1.0, 8)
    a = dict(axis=-1, **softmax_attrs(s_x, qo, n), qmin_in=-(1 << (in_bits - 1)))
    y = softmax_codes(x, a, keep)
    for row, k, out in zip(x, keep, y):
        assert np.all(out[~k] == qo.zero_point[0])
        if k.any():
            assert np.array_equal(out[k], softmax_codes(row[k][None], a)[0])


@FAST
@given(st.sampled_from([8, 16]), st.sampled_from([8, 16]), st.floats(1e-4, 1.0), st.floats(1e-4, 1.0),
       st.integers(0, 2**32 - 1))
def test_qdiv_is_the_rounded_quotient_and_division_by_zero_clamps(a_bits, b_bits, s_a, s_b, seed):
    """|dequant(qdiv) - clip(a / b)| <= s_y (1/2 + 2^-20 |a/b| / s_y) off zero; a / 0 is the range end of
    a's sign, 0 / 0 is 0."""
    from dyadiq.ir.ops.integer_nn import divide_codes
    from dyadiq.passes.integerize_nn import divide_attrs
    rng = np.random.default_rng(seed)
    a = _codes(rng, a_bits, (4, 64), 1.0) // 3
    b = _codes(rng, b_bits, (4, 64), 1.0)
    b[0, :3] = [3, 3, 3]                                    # a zero denominator at zero point 3
    a[0, :3] = [-5, 0, 5]
    fa, fb = s_a * a.astype(np.float64), s_b * (b - 3).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = fa / fb
    finite = np.isfinite(ref)
    qo = act_quant(float(np.percentile(ref[finite], 2)), float(np.percentile(ref[finite], 98)), 8)
    at = dict(a_zp=0, b_zp=3, **divide_attrs(s_a / (s_b * qo.scale[0]), qo))
    y = divide_codes(a, b, at)
    lo, hi = (qo.qrange[0] - qo.zero_point[0]) * qo.scale[0], (qo.qrange[1] - qo.zero_point[0]) * qo.scale[0]
    got = dequantize(y, qo, np.float64)
    want = np.clip(np.nan_to_num(ref, nan=0.0, posinf=hi, neginf=lo), lo, hi)
    assert np.all(np.abs(got - want) <= qo.scale[0] * (0.5 + 1e-6) + 2.0**-20 * np.abs(want))
    assert list(y[0, :3]) == [qo.qrange[0], qo.zero_point[0], qo.qrange[1]]


def test_qlayernorm_constant_rows_give_beta():
    x = np.full((2, 16), 37, np.int64)
    qx, qo = QuantType.make(8, True, 0.1, 0), act_quant(-2.0, 2.0, 8)
    beta = np.linspace(-1, 1, 16)
    g, b, a = layernorm_attrs(qx, qo, np.ones(16), beta, 1e-12, 16)
    y = dequantize(layernorm_codes(x, g, b, a), qo, np.float64)
    assert np.all(np.abs(y - beta) <= qo.scale[0] / 2 + 1e-9)


@pytest.mark.parametrize("op", ["qsoftmax", "qsoftmax_masked", "qlayernorm", "qembed", "qdiv"])
def test_tvm_lowering_is_bit_exact(op):
    """Each op alone, built for cpu, over codes spanning the whole 16-bit (softmax/layernorm) range."""
    pytest.importorskip("tvm")
    import dyadiq
    from dyadiq.ir.builder import GraphBuilder
    rng = np.random.default_rng(1)
    b = GraphBuilder("t")
    if op == "qdiv":                         # numerators and denominators over the whole int16 range, zeros
        x = _codes(rng, 16, (2, 3, 64), 1.0).astype(np.int16)
        x[0, 0, :4] = [7, 7, -32768, 32767]
        xi = b.input("x", x.shape, "i16")
        den = rng.integers(-32768, 32768, (64,)).astype(np.int16)
        den[:4] = [7, 7, 7, 7]
        from dyadiq.passes.integerize_nn import divide_attrs
        qo = act_quant(-50.0, 50.0, 8)
        y = b.op("qdiv", [xi, b.const("den", den)], "y", a_zp=7, b_zp=7, **divide_attrs(3.0 / qo.scale[0], qo))
    elif op == "qembed":
        x = rng.integers(-3, 40, (2, 9)).astype(np.int64)
        xi = b.input("x", x.shape, "i64")
        table = rng.integers(-128, 128, (32, 5)).astype(np.int8)
        y = b.op("qembed", [xi, b.const("table", table)], "y")
    else:
        x = _codes(rng, 16, (2, 3, 64), 0.05).astype(np.int16)
        xi = b.input("x", x.shape, "i16")
        qo = act_quant(0.0, 1.0, 8) if op.startswith("qsoftmax") else act_quant(-4.0, 4.0, 8)
        if op == "qsoftmax":
            y = b.op("qsoftmax", [xi], "y", axis=2, **softmax_attrs(3e-3, qo, 64))
        elif op == "qsoftmax_masked":                 # a padding mask [2, 1, 64]; batch 1 keeps nothing
            keep = np.stack([np.arange(64) < 37, np.zeros(64, bool)])[:, None, :]
            y = b.op("qsoftmax", [xi, b.const("keep", keep)], "y", axis=2, qmin_in=-32768,
                     **softmax_attrs(3e-3, qo, 64))
        else:
            g, bb, a = layernorm_attrs(QuantType.make(16, True, 1e-3, 0), qo, rng.normal(1, 0.3, 64),
                                       rng.normal(0, 0.3, 64), 1e-12, 64)
            y = b.op("qlayernorm", [xi, b.const("g", g), b.const("b", bb)], "y", **a)
    ig = b.build([y])
    from dyadiq.interp import run
    want = np.asarray(run(ig, {"x": x}, mode="integer"))
    got = dyadiq.compile(ig, target="cpu").run(x)
    assert np.array_equal(np.asarray(got), want)


@FAST
@given(st.sampled_from([8, 16]), st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_qembed_is_the_quantized_float_lookup(bits, rows, seed):
    """|dequant(qembed(ids, quantize(T))) - T[ids]| <= s_y / 2, ids clipped to the table in both."""
    from dyadiq.ir.numerics import quantize
    from dyadiq.ir.ops import op_def
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 1, (rows, 3))
    qo = act_quant(float(table.min()), float(table.max()), bits)
    ids = rng.integers(-2, rows + 2, (2, 7))
    (y,) = op_def("qembed").kernel([ids, quantize(table, qo)], {})
    want = table[np.clip(ids, 0, rows - 1)]
    assert np.all(np.abs(dequantize(y, qo, np.float64) - want) <= qo.scale[0] / 2 + 1e-12)
