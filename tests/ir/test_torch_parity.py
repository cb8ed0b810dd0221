# SPDX-License-Identifier: Apache-2.0
"""One semantics, two array libraries: every registered float op's torch evaluation (ir.ops.torch_kernels, used
by the planners' TorchGraph) equals its numpy kernel (the interpreter), in float and in simulated mode (values
fake-quantized, conv/linear biases on the s_x s_w grid in both). A new op needs an example here."""
import numpy as np
import pytest

from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.ops import OPS
from dyadiq.ir.types import QuantType

torch = pytest.importorskip("torch")
from dyadiq.ir.ops.torch_kernels import TORCH_OPS, missing_torch_ops  # noqa: E402
from dyadiq.passes.torch_eval import TorchGraph  # noqa: E402

RNG = np.random.default_rng(11)
X4 = (2, 4, 7, 6)
FQ = {"scale": (0.05,), "zero_point": (3,), "bits": 8, "signed": True}

# op -> (inputs: shape, or ("const", array), or ("int", array)), attrs); inputs are f32 unless marked
EXAMPLES: dict[str, tuple[list, dict]] = {
    "conv2d": ([X4, ("const", RNG.normal(size=(6, 2, 3, 3))), ("const", RNG.normal(size=6))],
               {"stride": (2, 1), "pad": (1, 0, 2, 1), "dilation": (1, 2), "groups": 2}),
    "linear": ([(3, 5), ("const", RNG.normal(size=(4, 5))), ("const", RNG.normal(size=4))], {}),
    "matmul": ([(2, 3, 5), (5, 4)], {}),
    "batchnorm": ([X4, ("const", RNG.normal(size=4)), ("const", RNG.normal(size=4)), ("const", RNG.normal(size=4)),
                   ("const", RNG.uniform(0.5, 2, size=4))], {"eps": 1e-5}),
    "layernorm": ([(2, 3, 8), ("const", RNG.normal(size=8)), ("const", RNG.normal(size=8))], {"axis": -1, "eps": 1e-5}),
    "softmax": ([(2, 3, 8)], {"axis": -1}),
    "maxpool": ([X4], {"kernel": (3, 2), "stride": (2, 2), "pad": (1, 0, 1, 1), "ceil_mode": True}),
    "avgpool": ([(1, 3, 8, 8)], {"kernel": (2, 2), "stride": (2, 2), "dilation": (2, 2), "ceil_mode": True}),
    "global_avgpool": ([X4], {}),
    "mean": ([X4], {"axes": (2, 3), "keepdims": True}),
    "reduce_sum": ([X4], {"axes": (1,), "keepdims": False}),
    "reduce_max": ([X4], {"axes": (-1,), "keepdims": True}),
    "reduce_min": ([X4], {"axes": (0, 2), "keepdims": False}),
    "reshape": ([X4], {"shape": (2, 4, 42)}),
    "transpose": ([X4], {"perm": (0, 2, 3, 1)}),
    "concat": ([X4, X4], {"axis": 1}),
    "slice": ([X4], {"starts": (1, 0), "ends": (4, 6), "axes": (1, 3), "steps": (2, 3)}),
    "pad": ([X4], {"pads": (0, 1, 2, 0, 0, 0, 1, 3), "mode": "reflect"}),
    "gather": ([X4, ("int", np.array([2, 0, -1], np.int64))], {"axis": 1}),
    "leaky_relu": ([X4], {"alpha": 0.2}),
    "clip": ([X4], {"min": -0.5, "max": 1.0}),
    "hardsigmoid": ([X4], {"alpha": 0.25, "beta": 0.4}),
    "gelu": ([X4], {"approximate": "tanh"}),
    "quantize_linear": ([X4], FQ),
    "dequantize_linear": ([("int", RNG.integers(-128, 128, size=X4).astype(np.int8))], FQ),
    "fake_quant": ([X4], FQ),
    "log": ([("pos", X4)], {}), "sqrt": ([("pos", X4)], {}), "reciprocal": ([("pos", X4)], {}),
    "pow": ([("pos", X4), ("pos", X4)], {}), "div": ([X4, ("pos", X4)], {}),
}
UNARY_DEFAULT = ([X4], {})
BINARY_DEFAULT = ([X4, (4, 1, 6)], {})


def _example(op: str):
    if op in EXAMPLES:
        return EXAMPLES[op]
    return BINARY_DEFAULT if OPS[op].arity == (2, 2) else UNARY_DEFAULT


def _graph(op: str):
    ins, attrs = _example(op)
    b = GraphBuilder()
    names, feeds = [], []
    for i, spec in enumerate(ins):
        if isinstance(spec, tuple) and spec and spec[0] == "const":
            names.append(b.const(f"c{i}", np.asarray(spec[1], np.float32)))
        elif isinstance(spec, tuple) and spec and spec[0] == "int":
            a = spec[1]
            names.append(b.input(f"x{i}", a.shape, {np.int8: "i8", np.int64: "i64"}[a.dtype.type]))
            feeds.append(a)
        else:
            pos = isinstance(spec, tuple) and spec and spec[0] == "pos"
            shape = spec[1] if pos else spec
            a = (RNG.uniform(0.2, 3.0, size=shape) if pos else RNG.normal(size=shape)).astype(np.float32)
            names.append(b.input(f"x{i}", shape, "f32"))
            feeds.append(a)
    y = b.op(op, names, **attrs)
    return b.build([y]), feeds


FLOAT_OPS = sorted(n for n, d in OPS.items() if not d.integer)


def test_every_registered_float_op_has_a_torch_evaluation():
    assert missing_torch_ops() == []


@pytest.mark.parametrize("op", FLOAT_OPS)
def test_float_mode_parity(op):
    if op not in TORCH_OPS:
        pytest.fail(f"{op} has no torch evaluation")
    g, feeds = _graph(op)
    want = np.asarray(run(g, feeds))
    got = TorchGraph(g)({k: v for k, v in zip(g.inputs, feeds)})
    got = got.detach().numpy()
    assert got.shape == want.shape and got.dtype.kind == want.dtype.kind
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    else:
        np.testing.assert_array_equal(got, want)


def _act(v: np.ndarray) -> QuantType:
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    scale = max(hi - lo, 1e-3) / 255
    return QuantType.make(8, True, scale, int(np.clip(-128 - np.rint(lo / scale), -128, 127)))


SIMULATED = ["conv2d", "linear", "matmul", "add", "mul", "avgpool", "maxpool", "softmax", "layernorm", "hardswish",
             "concat", "gelu", "sigmoid", "mean"]


@pytest.mark.parametrize("op", SIMULATED)
def test_simulated_mode_parity_with_quantized_values_and_biases_on_the_integer_grid(op):
    """Inputs and weights quantized, the output left in float so that a bias off the s_x s_w grid (an error of
    up to half a step, ~1e-4 here) would show."""
    g, feeds = _graph(op)
    for name, v in zip(g.inputs, feeds):
        g = g.with_quant(name, _act(v))
    for k, w in g.constants.items():
        if w.ndim >= 2:                                               # layer weights: per-channel, symmetric
            s = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127
            g = g.with_quant(k, QuantType.make(8, True, s, 0, 0))
    want = np.asarray(run(g, feeds, "simulated"))
    got = TorchGraph(g, simulated=True)({k: v for k, v in zip(g.inputs, feeds)}).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
