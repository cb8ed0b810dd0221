# SPDX-License-Identifier: Apache-2.0
"""Calibration: each range method against a plain numpy reference, histograms, data validation."""
import numpy as np
import pytest
from scipy import stats

from dyadiq.errors import InputError, PassError
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.calibrate import (NBINS, Histogram, collect_ranges, kl_divergence, prepare_calib,
                                     quant_mse)


def identity_graph(shape=(4, 500)):
    b = GraphBuilder()
    x = b.input("x", shape)
    return b.build([b.op("identity", [x], "y")])


def relu_graph(batch=2):
    b = GraphBuilder()
    x = b.input("x", (batch, 3))
    w = b.const("w", np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]], np.float32))
    h = b.op("linear", [x, w], "h")
    return b.build([b.op("relu", [h], "r")])


def fq(x, lo, hi, bits=8):
    """Plain numpy fake quantization to the asymmetric range [lo, hi] (the contract's formulas)."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    s = (hi - lo) / (qmax - qmin)
    z = np.clip(qmin - np.rint(lo / s), qmin, qmax)
    return s * (np.clip(np.rint(x / s) + z, qmin, qmax) - z)


def mse(x, lo, hi, bits=8):
    return float(np.sum((x - fq(x, min(lo, 0.0), max(hi, 0.0), bits)) ** 2))


@pytest.fixture(scope="module")
def heavy_tailed():
    rng = np.random.default_rng(0)
    x = rng.laplace(size=(120, 500)).astype(np.float32)
    x[3, 7], x[100, 2] = 45.0, -30.0              # rare outliers
    return x


# ---- minmax ---------------------------------------------------------------------------------------
def test_minmax_is_the_observed_range_widened_to_zero():
    g = relu_graph()
    x = np.abs(np.random.default_rng(1).normal(size=(10, 3))).astype(np.float32) + 0.5
    r = collect_ranges(g, x, "minmax")
    h = x @ np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]], np.float32).T
    assert r["x"] == (0.0, pytest.approx(float(x.max())))       # x > 0 everywhere: lo widened to 0
    assert r["h"] == (pytest.approx(float(h.min())), pytest.approx(float(h.max())))
    assert r["r"] == (0.0, pytest.approx(float(np.maximum(h, 0).max())))
    assert "w" not in r                                          # constants are not calibrated


# ---- histogram ------------------------------------------------------------------------------------
def test_histogram_merges_batches_exactly(heavy_tailed):
    h = Histogram()
    for k, chunk in enumerate(np.array_split(heavy_tailed.ravel(), 9)):
        h.add(chunk * (0.01 if k == 0 else 1.0))   # a narrow first batch forces several merges
    data = np.concatenate([c * (0.01 if k == 0 else 1.0)
                           for k, c in enumerate(np.array_split(heavy_tailed.ravel(), 9))]).astype(np.float64)
    want = np.bincount(np.clip(np.floor(data / h.width).astype(np.int64) + h.zero, 0, NBINS - 1),
                       minlength=NBINS)
    assert h.counts.size == NBINS and np.array_equal(h.counts, want)
    assert h.edges[h.zero] == 0.0 and h.edges[0] <= data.min() and h.edges[-1] >= data.max()
    assert h.width < 2 * (data.max() - data.min()) / (NBINS / 2)     # resolution kept after merges


def test_histogram_of_all_zeros_then_data():
    h = Histogram()
    h.add(np.zeros(10))
    h.add(np.array([1.0, 2.0]))
    assert h.counts.sum() == 12 and h.counts[h.zero] == 10 and h.zeros == 10


# ---- percentile -----------------------------------------------------------------------------------
def test_percentile_matches_numpy_percentile(heavy_tailed):
    g = identity_graph((4, 500))
    lo, hi = collect_ranges(g, heavy_tailed, "percentile", percentile=99.9)["y"]
    ref_lo, ref_hi = np.percentile(heavy_tailed.astype(np.float64), [0.1, 99.9])
    bin_width = (heavy_tailed.max() - heavy_tailed.min()) / (NBINS / 2)
    assert abs(lo - ref_lo) <= bin_width and abs(hi - ref_hi) <= bin_width


# ---- mse ------------------------------------------------------------------------------------------
def test_histogram_mse_model_is_close_to_the_real_error(heavy_tailed):
    x = heavy_tailed.ravel().astype(np.float64)
    h = Histogram()
    h.add(x)
    for lo, hi in [(-5.0, 6.0), (-30.0, 45.0), (-2.0, 20.0)]:
        est = quant_mse(h.counts.astype(np.float64), h.edges, [lo], [hi], 8)[0]
        assert est == pytest.approx(mse(x, lo, hi), rel=0.05)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_range_is_as_good_as_a_brute_force_search(heavy_tailed, bits):
    g = identity_graph((4, 500))
    lo, hi = collect_ranges(g, heavy_tailed, "mse", bits=bits)["y"]
    x = heavy_tailed.ravel().astype(np.float64)
    grid = [(mse(x, a, b, bits), a, b) for a in np.linspace(x.min(), 0, 31)[:-1]
            for b in np.linspace(0, x.max(), 31)[1:]]
    best = min(grid)[0]
    assert mse(x, lo, hi, bits) <= 1.01 * best
    assert mse(x, lo, hi, bits) < mse(x, x.min(), x.max(), bits)


# ---- entropy --------------------------------------------------------------------------------------
def kl_reference(hist, start, stop, levels):
    """TensorRT's KL calibration step as in MXNet/TVM, written with loops (unnormalized smoothing)."""
    sliced = hist[start:stop].astype(np.float64)
    p = sliced.copy()
    p[0] += hist[:start].sum()
    p[-1] += hist[stop:].sum()
    nonzero = (p != 0).astype(np.int64)
    merged = sliced.size // levels
    qbins = np.zeros(levels)
    for j in range(levels):
        qbins[j] = sliced[j * merged:(j + 1) * merged].sum()
    qbins[-1] += sliced[levels * merged:].sum()
    q = np.zeros(sliced.size)
    for j in range(levels):
        a = j * merged
        b = sliced.size if j == levels - 1 else a + merged
        norm = nonzero[a:b].sum()
        if norm:
            q[a:b] = qbins[j] / norm
    q[p == 0] = 0

    def smooth(d, eps=1e-4):
        z = d == 0
        n0, n1 = z.sum(), d.size - z.sum()
        return d + eps * z - eps * n0 / n1 * ~z
    return stats.entropy(smooth(p), smooth(q))


def test_kl_divergence_matches_the_loop_reference(heavy_tailed):
    h = Histogram()
    h.add(np.abs(heavy_tailed))
    rng = np.random.default_rng(2)
    for _ in range(20):
        start = int(rng.integers(0, 50))
        stop = int(rng.integers(start + 255, NBINS + 1))
        assert kl_divergence(h.counts, start, stop, 255) == pytest.approx(
            kl_reference(h.counts, start, stop, 255), rel=1e-9, abs=1e-12)


def test_entropy_threshold_is_near_the_reference_optimum(heavy_tailed):
    x = np.abs(heavy_tailed.ravel()).astype(np.float64)     # one-sided, as TensorRT's |x| histogram
    g = identity_graph((4, 500))
    lo, hi = collect_ranges(g, np.abs(heavy_tailed), "entropy")["y"]
    h = Histogram()
    h.add(x)
    top = int(np.ceil(x.max() / h.width))
    kls = {stop: kl_reference(h.counts, 0, stop, 255) for stop in range(255, top + 1, 16)}
    best = min(kls.values())
    mine = kl_reference(h.counts, 0, int(round(hi / h.width)), 255)
    assert lo == 0.0
    assert mine <= best * 1.05 + 1e-6
    assert hi < 0.5 * x.max()                                # the outlier is clipped


@pytest.mark.parametrize("kind", ["relu", "digits"])
def test_entropy_keeps_the_bulk_of_the_data(kind):
    """A ReLU output (60% exact zeros, a half-Laplace rest) and 17-level images (half zeros): exact zeros
    cost nothing at any range, so they do not drag the range in, and at most 1% of the other values
    may be clipped (the divergence alone preferred piling them into the end bin: ranges of 0.06 of 1)."""
    rng = np.random.default_rng(3)
    if kind == "relu":
        x = np.abs(rng.laplace(size=(64, 500))) * (rng.random((64, 500)) > 0.6)
    else:
        x = rng.integers(0, 17, size=(64, 500)) / 16.0 * (rng.random((64, 500)) > 0.5)
    x = x.astype(np.float32)
    lo, hi = collect_ranges(identity_graph((4, 500)), x, "entropy")["y"]
    nz = x[x != 0]
    assert lo == 0.0 and np.mean(nz > hi * 1.0001) <= 0.01


def test_entropy_falls_back_to_minmax_at_16_bits(heavy_tailed):
    g = identity_graph((4, 500))
    lo, hi = collect_ranges(g, heavy_tailed, "entropy", bits=16)["y"]
    assert (lo, hi) == (pytest.approx(float(heavy_tailed.min())), pytest.approx(float(heavy_tailed.max())))


# ---- data, batching and errors ------------------------------------------------------------------
def test_samples_are_fed_in_slices_of_the_batch_and_the_remainder_dropped():
    g = relu_graph(batch=2)
    x = np.arange(33, dtype=np.float32).reshape(11, 3)
    cs = prepare_calib(g, x)
    assert (cs.batch, cs.n, cs.dropped, cs.n_batches) == (2, 10, 1, 5)
    seen = []
    collect_ranges(g, x, progress=lambda stage, k, n: seen.append((stage, k, n)))
    assert seen == [("calibrate", k, 5) for k in range(1, 6)]
    assert collect_ranges(g, x)["x"][1] == 29.0               # the 11th sample is not used


def test_multi_input_graphs_take_a_dict():
    b = GraphBuilder()
    x, y = b.input("x", (1, 4)), b.input("y", (1, 4))
    g = b.build([b.op("add", [x, y], "s")])
    r = collect_ranges(g, {"x": np.ones((3, 4), np.float32), "y": -3 * np.ones((3, 4), np.float32)})
    assert r["s"] == (-2.0, 0.0) and r["x"] == (0.0, 1.0)
    with pytest.raises(InputError, match="one array per graph input"):
        collect_ranges(g, {"x": np.ones((3, 4), np.float32)})
    with pytest.raises(InputError, match="dict"):
        collect_ranges(g, np.ones((3, 4), np.float32))


@pytest.mark.parametrize("data, match", [
    (np.zeros((0, 3), np.float32), "calibration set is empty"),
    ({}, "one array per graph input"),
    (np.zeros((4, 5), np.float32), r"expected samples of shape \[N, 3\] \(f32\), got \[4, 5\]"),
    (np.zeros((4, 3), np.uint8), "expected f32 samples of shape \\[N, 3\\], got uint8"),
    (np.zeros((1, 3), np.float32), "1 samples but the model's batch size is 2"),
])
def test_bad_calibration_data_is_an_input_error(data, match):
    with pytest.raises(InputError, match=match):
        collect_ranges(relu_graph(batch=2), data)


@pytest.mark.filterwarnings("ignore:invalid value")
def test_bad_options_and_non_finite_values_are_pass_errors():
    g = relu_graph()
    x = np.ones((2, 3), np.float32)
    with pytest.raises(PassError, match="unknown calibration method 'kl'"):
        collect_ranges(g, x, "kl")
    with pytest.raises(PassError, match="activation bits must be 2..16"):
        collect_ranges(g, x, bits=17)
    x[0, 0] = np.inf
    with pytest.raises(PassError, match="not finite"):
        collect_ranges(g, x)


def test_calibration_is_deterministic(heavy_tailed):
    g = identity_graph((4, 500))
    for method in ("percentile", "mse", "entropy"):
        assert collect_ranges(g, heavy_tailed, method) == collect_ranges(g, heavy_tailed, method)
