# SPDX-License-Identifier: Apache-2.0
"""One semantics, two array libraries: every registered float op's torch evaluation (ir.ops.torch_kernels, used
by the planners' TorchGraph) equals its numpy kernel (the interpreter), in float and in simulated mode (values
fake-quantized, conv/linear biases on the s_x s_w grid in both). A new op needs an example here."""
import numpy as np
import pytest

from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.ops import OPS
from dyadiq.ir.types import QuantType, dtype_of

torch = pytest.importorskip("torch")
from dyadiq.ir.ops.torch_kernels import missing_torch_ops, torch_op  # noqa: E402
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


def _ints(lo, hi, shape, dtype=np.float32):
    """Small integers (ties, exact zeros, half steps when divided) in ``dtype``."""
    return RNG.integers(lo, hi, size=shape).astype(dtype)


def _bools(shape):
    return RNG.random(shape) > 0.5


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -1.5, 2.0], np.float32)
WT = RNG.normal(size=(4, 3, 3, 2))                                   # conv_transpose2d: [C_in, C_out/groups, KH, KW]
EXAMPLES.update({
    # activations (coverage.UNARY)
    "elu": ([X4], {"alpha": 0.7}), "celu": ([X4], {"alpha": 1.3}), "selu": ([X4], {}),
    "shrink": ([X4], {"lambd": 0.6, "bias": 0.2}), "thresholded_relu": ([X4], {"alpha": 0.3}),
    "asin": ([("uniform", -0.95, 0.95, X4)], {}), "acos": ([("uniform", -0.95, 0.95, X4)], {}),
    "atanh": ([("uniform", -0.95, 0.95, X4)], {}), "acosh": ([("uniform", 1.05, 4.0, X4)], {}),
    "round": ([("arr", _ints(-9, 9, X4) / np.float32(2))], {}),     # halves: half to even
    "sign": ([("arr", _ints(-2, 3, X4))], {}),
    # predicates -> i1 (ties on purpose), selection, integer arithmetic
    **{op: ([("arr", _ints(-2, 3, X4)), ("arr", _ints(-2, 3, (4, 1, 6)))], {})
       for op in ("equal", "less", "less_equal", "greater", "greater_equal")},
    **{op: ([("arr", _bools(X4)), ("arr", _bools((4, 1, 6)))], {}) for op in ("logical_and", "logical_or", "logical_xor")},
    "logical_not": ([("arr", _bools(X4))], {}),
    "isnan": ([("arr", np.resize(SPECIAL, X4))], {}),
    "isinf": ([("arr", np.resize(SPECIAL, X4))], {"detect_negative": False}),
    "where": ([("arr", _bools(X4)), X4, (4, 1, 6)], {}),
    "mod": ([("arr", RNG.uniform(-5, 5, size=X4).astype(np.float32)), ("arr", np.resize(np.float32([1.5, -2.25, 0.75]),
                                                                                           (4, 1, 6)))], {}),
    "bitshift": ([("arr", _ints(0, 256, X4, np.uint8)), ("arr", _ints(0, 10, X4, np.uint8))], {"direction": "LEFT"}),
    "bitwise_and": ([("arr", _ints(-128, 128, X4, np.int8)), ("arr", _ints(-128, 128, (4, 1, 6), np.int8))], {}),
    "bitwise_or": ([("arr", _ints(-2**31, 2**31, X4, np.int32)), ("arr", _ints(-2**31, 2**31, X4, np.int32))], {}),
    "bitwise_xor": ([("arr", _ints(0, 256, X4, np.uint8)), ("arr", _ints(0, 256, (6,), np.uint8))], {}),
    "bitwise_not": ([("arr", _ints(-128, 128, X4, np.int8))], {}),
    "cast": ([("uniform", -100.0, 100.0, X4)], {"to": "i8"}),            # float -> int truncates toward zero
    # reductions and selections along an axis
    "argmax": ([("arr", _ints(0, 3, X4))], {"axis": 1, "keepdims": False}),
    "argmin": ([("arr", _ints(0, 3, X4))], {"axis": -1}),
    "reduce_prod": ([("uniform", 0.5, 1.5, X4)], {"axes": (1, -1), "keepdims": False}),
    "cumsum": ([X4], {"axis": 2}),
    "hardmax": ([("arr", _ints(0, 3, X4))], {"axis": 1}),
    "topk": ([("arr", _ints(0, 4, X4))], {"k": 4, "axis": -1}),
    "gather_elements": ([X4, ("arr", _ints(-7, 7, (2, 4, 3, 6), np.int64))], {"axis": 2}),
    "einsum": ([X4, (4, 5)], {"equation": "nchw,cd->ndwh"}),
    "resize": ([(1, 3, 5, 7)], {"size": (1, 3, 9, 4), "mode": "linear", "coord": "half_pixel"}),
    "reverse_sequence": ([X4], {"batch_axis": 0, "time_axis": 2, "lens": (3, 7)}),
    "conv_transpose2d": ([X4, ("const", WT), ("const", RNG.normal(size=6))],
                         {"stride": (2, 3), "pad": (1, 0, 2, 1), "dilation": (1, 2), "output_padding": (1, 2),
                          "groups": 2}),
})
# further variants: (id, op, inputs, attrs)
VARIANTS: list[tuple[str, str, list, dict]] = [
    ("isinf-both", "isinf", [("arr", np.resize(SPECIAL, X4))], {}),
    ("isinf-negative", "isinf", [("arr", np.resize(SPECIAL, X4))], {"detect_positive": False}),
    ("greater_equal-i8", "greater_equal", [("arr", _ints(-3, 3, X4, np.int8)), ("arr", _ints(-3, 3, (6,), np.int8))], {}),
    ("equal-i1", "equal", [("arr", _bools(X4)), ("arr", _bools(X4))], {}),
    ("mod-fmod", "mod", [("arr", RNG.uniform(-5, 5, size=X4).astype(np.float32)),
                         ("arr", np.resize(np.float32([1.5, -2.25, 0.75]), (4, 1, 6)))], {"fmod": True}),
    ("mod-i8-zero", "mod", [("arr", _ints(-128, 128, X4, np.int8)), ("arr", _ints(-3, 4, X4, np.int8))], {}),
    ("mod-i8-fmod", "mod", [("arr", _ints(-128, 128, X4, np.int8)), ("arr", _ints(-3, 4, X4, np.int8))],
     {"fmod": True}),
    ("mod-i64", "mod", [("arr", _ints(-1000, 1000, X4, np.int64)), ("arr", _ints(-9, 9, (6,), np.int64))], {}),
    ("bitshift-right-i8", "bitshift", [("arr", _ints(-128, 128, X4, np.int8)), ("arr", _ints(0, 10, X4, np.int8))],
     {"direction": "RIGHT"}),
    ("bitshift-i32", "bitshift", [("arr", _ints(-2**31, 2**31, X4, np.int32)), ("arr", _ints(0, 33, X4, np.int32))],
     {"direction": "LEFT"}),
    ("bitwise_and-u16", "bitwise_and", [("arr", _ints(0, 2**16, X4, np.uint16)), ("arr", _ints(0, 2**16, X4, np.uint16))],
     {}),
    ("mod-u16", "mod", [("arr", _ints(0, 2**16, X4, np.uint16)), ("arr", _ints(0, 9, X4, np.uint16))], {}),
    ("less-u16", "less", [("arr", _ints(0, 4, X4, np.uint16)), ("arr", _ints(0, 4, (6,), np.uint16))], {}),
    ("bitshift-u16", "bitshift", [("arr", _ints(0, 2**16, X4, np.uint16)), ("arr", _ints(0, 18, X4, np.uint16))],
     {"direction": "LEFT"}),
    ("where-u16", "where", [("arr", _bools(X4)), ("arr", _ints(0, 2**16, X4, np.uint16)),
                            ("arr", _ints(0, 2**16, (6,), np.uint16))], {}),
    ("argmax-u16", "argmax", [("arr", _ints(0, 4, X4, np.uint16))], {"axis": 1, "select_last_index": True}),
    ("hardmax-u16", "hardmax", [("arr", _ints(0, 4, X4, np.uint16))], {"axis": 2}),
    ("cumsum-u16", "cumsum", [("arr", _ints(0, 2**16, X4, np.uint16))], {"axis": 1, "exclusive": True}),
    ("topk-u16", "topk", [("arr", _ints(0, 2**16, X4, np.uint16))], {"k": 2, "axis": 1}),
    ("gather_elements-u16", "gather_elements", [("arr", _ints(0, 2**16, X4, np.uint16)),
                                                ("arr", _ints(-4, 4, (2, 3, 7, 6), np.int64))], {"axis": 1}),
    ("einsum-u16", "einsum", [("arr", _ints(0, 9, (3, 4), np.uint16)), ("arr", _ints(0, 9, (4, 5), np.uint16))],
     {"equation": "ij,jk->ik"}),
    ("resize-linear-u16", "resize", [("arr", _ints(0, 2**16, (1, 2, 4, 5), np.uint16))],
     {"size": (1, 2, 7, 3), "mode": "linear"}),
    ("resize-nearest-u16", "resize", [("arr", _ints(0, 2**16, (1, 2, 4, 5), np.uint16))],
     {"size": (1, 2, 7, 3), "mode": "nearest"}),
    ("cast-u16", "cast", [("uniform", 0.0, 60000.0, X4)], {"to": "u16"}),
    ("bitwise_not-i1", "bitwise_not", [("arr", _bools(X4))], {}),
    ("where-i8", "where", [("arr", _bools((7, 1))), ("arr", _ints(-9, 9, X4, np.int8)),
                           ("arr", _ints(-9, 9, (6,), np.int8))], {}),
    ("cast-i1", "cast", [("arr", _ints(-1, 2, X4))], {"to": "i1"}),
    ("cast-f64", "cast", [X4], {"to": "f64"}),
    ("cast-i64", "cast", [("uniform", -1e6, 1e6, X4)], {"to": "i64"}),
    ("cast-u8-to-f32", "cast", [("arr", _ints(0, 256, X4, np.uint8))], {"to": "f32"}),
    ("cast-i8-to-i32", "cast", [("arr", _ints(-128, 128, X4, np.int8))], {"to": "i32"}),
    ("argmax-last", "argmax", [("arr", _ints(0, 3, X4))], {"axis": 2, "select_last_index": True}),
    ("argmin-last", "argmin", [("arr", _ints(0, 3, X4))], {"axis": 0, "select_last_index": True, "keepdims": False}),
    ("argmax-i8", "argmax", [("arr", _ints(-128, 128, X4, np.int8))], {"axis": 3}),
    ("reduce_prod-all", "reduce_prod", [("uniform", 0.8, 1.2, X4)], {}),
    ("reduce_prod-i8", "reduce_prod", [("arr", _ints(-4, 5, X4, np.int8))], {"axes": (2,), "keepdims": True}),
    ("cumsum-exclusive-reverse", "cumsum", [X4], {"axis": -1, "exclusive": True, "reverse": True}),
    ("cumsum-exclusive", "cumsum", [X4], {"axis": 1, "exclusive": True}),
    ("cumsum-i64", "cumsum", [("arr", _ints(-9, 9, X4, np.int64))], {"axis": 0, "reverse": True}),
    ("hardmax-last", "hardmax", [("arr", _ints(0, 3, X4))], {}),
    ("topk-smallest", "topk", [("arr", _ints(0, 4, X4))], {"k": 2, "axis": 1, "largest": False}),
    ("topk-float", "topk", [X4], {"k": 7, "axis": 2}),
    ("topk-u8", "topk", [("arr", _ints(0, 256, X4, np.uint8))], {"k": 3, "axis": -1}),
    ("gather_elements-i32", "gather_elements", [X4, ("arr", _ints(-6, 6, (2, 4, 7, 3), np.int32))], {"axis": -1}),
    ("einsum-one", "einsum", [X4], {"equation": "nchw->nhc"}),
    ("einsum-three", "einsum", [(3, 4), (4, 5), (5,)], {"equation": "ij,jk,k->i"}),
    ("resize-cubic-align_corners", "resize", [(1, 3, 5, 7)],
     {"size": (1, 3, 8, 11), "mode": "cubic", "coord": "align_corners"}),
    ("resize-cubic-exclude-pytorch", "resize", [(1, 3, 5, 7)],
     {"size": (1, 3, 1, 11), "mode": "cubic", "coord": "pytorch_half_pixel", "cubic_a": -0.5,
      "exclude_outside": True}),
    ("resize-nearest-asymmetric-floor", "resize", [(1, 3, 5, 7)],
     {"size": (1, 3, 11, 3), "mode": "nearest", "coord": "asymmetric", "nearest_mode": "floor"}),
    ("resize-nearest-ceil-u8", "resize", [("arr", _ints(0, 256, (1, 2, 4, 5), np.uint8))],
     {"size": (1, 2, 9, 7), "mode": "nearest", "nearest_mode": "round_prefer_ceil"}),
    ("resize-linear-i8", "resize", [("arr", _ints(-128, 128, (1, 2, 4, 5), np.int8))],
     {"size": (1, 2, 7, 3), "mode": "linear"}),
    ("resize-linear-antialias", "resize", [(1, 2, 12, 9)],
     {"size": (1, 2, 5, 4), "mode": "linear", "antialias": True}),
    ("resize-cubic-antialias-scales", "resize", [(1, 2, 12, 9)],
     {"size": (1, 2, 5, 4), "scales": (1.0, 1.0, 0.45, 0.5), "mode": "cubic", "antialias": True}),
    ("resize-symmetric", "resize", [(1, 2, 4, 5)],
     {"size": (1, 2, 7, 9), "scales": (1.0, 1.0, 1.8, 1.9), "mode": "linear", "coord": "half_pixel_symmetric"}),
    ("resize-tf_crop_and_resize", "resize", [(1, 2, 6, 5)],
     {"size": (1, 2, 4, 7), "mode": "linear", "coord": "tf_crop_and_resize",
      "roi": (0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3), "extrapolation": -3.5}),
    ("reverse_sequence-time0", "reverse_sequence", [X4], {"batch_axis": -3, "time_axis": 0, "lens": (0, 2, 1, 2)}),
    ("conv_transpose2d-nobias", "conv_transpose2d", [X4, ("const", RNG.normal(size=(4, 5, 3, 3)))],
     {"pad": (1, 1, 1, 1)}),
    ("conv_transpose2d-stride", "conv_transpose2d", [(1, 4, 5, 5), ("const", RNG.normal(size=(4, 2, 2, 3))),
                                                     ("const", RNG.normal(size=2))],
     {"stride": (2, 2), "pad": (0, 2, 1, 0), "output_padding": (1, 0)}),
]
UNARY_DEFAULT = ([X4], {})
BINARY_DEFAULT = ([X4, (4, 1, 6)], {})


def _example(op: str):
    if op in EXAMPLES:
        return EXAMPLES[op]
    return BINARY_DEFAULT if OPS[op].arity == (2, 2) else UNARY_DEFAULT


def _feed(spec) -> np.ndarray:
    """One input's value: a shape (normal f32), ("pos", shape), ("uniform", lo, hi, shape), or ("int" | "arr", array)
    (as given, in its dtype; a fresh draw permutes it, keeping its values)."""
    kind = spec[0] if isinstance(spec, tuple) and spec and isinstance(spec[0], str) else None
    if kind == "pos":
        return RNG.uniform(0.2, 3.0, size=spec[1]).astype(np.float32)
    if kind == "uniform":
        return RNG.uniform(spec[1], spec[2], size=spec[3]).astype(np.float32)
    if kind in ("int", "arr"):
        a = np.asarray(spec[1])
        return a if a.ndim == 0 else RNG.permutation(a.reshape(-1)).reshape(a.shape)
    return RNG.normal(size=spec).astype(np.float32)


def _graph(op: str, case=None):
    """(graph of one ``op`` node, feeds, feed specs); ``case`` = (inputs, attrs), default the op's example."""
    ins, attrs = case if case is not None else _example(op)
    b = GraphBuilder()
    names, feeds, specs = [], [], []
    for i, spec in enumerate(ins):
        if isinstance(spec, tuple) and spec and spec[0] == "const":
            names.append(b.const(f"c{i}", np.asarray(spec[1], np.float32)))
            continue
        if isinstance(spec, tuple) and spec and spec[0] in ("int", "arr"):
            a = np.asarray(spec[1])                                   # the given array itself first
        else:
            a = _feed(spec)
        names.append(b.input(f"x{i}", a.shape, dtype_of(a)))
        feeds.append(a)
        specs.append(spec)
    n_out = len(OPS[op].infer([b.type_of(v) for v in names], attrs))
    ys = b.op_multi(op, names, n_outputs=n_out, **attrs)
    return b.build(ys), feeds, specs


def _direct(g, args):
    """The graph's one node, by its torch evaluation (any output dtype, any number of outputs): a list."""
    (n,) = g.nodes
    y = torch_op(n.op)(n, g)(args)
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _torch_eval(g, feeds) -> list[np.ndarray]:
    """TorchGraph where it takes the node (float outputs, one output), else the node's torch function itself:
    TorchGraph evaluates float-valued nodes only and binds a node's first output only."""
    (n,) = g.nodes
    if len(n.outputs) == 1 and g.type_of(n.outputs[0]).is_float:
        return [TorchGraph(g)({k: v for k, v in zip(g.inputs, feeds)}).detach().numpy()]
    env = {k: torch.from_numpy(np.array(v)) for k, v in g.constants.items()}
    env.update({k: torch.from_numpy(np.array(v)) for k, v in zip(g.inputs, feeds)})
    return [y.detach().numpy() for y in _direct(g, [env[i] for i in n.inputs])]


def _check(got: list[np.ndarray], want) -> None:
    want = want if isinstance(want, list) else [want]
    assert len(got) == len(want)
    for gv, wv in zip(got, want):
        wv = np.asarray(wv)
        assert gv.shape == wv.shape and gv.dtype == wv.dtype, (gv.shape, gv.dtype, wv.shape, wv.dtype)
        if wv.dtype.kind == "f":
            np.testing.assert_allclose(gv, wv, rtol=2e-5, atol=2e-5)
        else:
            np.testing.assert_array_equal(gv, wv)


FLOAT_OPS = sorted(n for n, d in OPS.items() if not d.integer)


def test_every_registered_float_op_has_a_torch_evaluation():
    assert missing_torch_ops() == []


CASES = [pytest.param(op, None, id=op) for op in FLOAT_OPS] + \
        [pytest.param(op, (ins, attrs), id=name) for name, op, ins, attrs in VARIANTS]


@pytest.mark.parametrize("op,case", CASES)
def test_float_mode_parity(op, case):
    """Same values (floats within 2e-5; integers and booleans exactly), same dtypes and shapes, every output."""
    if torch_op(op) is None:
        pytest.fail(f"{op} has no torch evaluation")
    g, feeds, _ = _graph(op, case)
    _check(_torch_eval(g, feeds), run(g, feeds))


@pytest.mark.parametrize("op,case", CASES)
def test_vmap_parity(op, case):
    """Under ``torch.func.vmap`` over two samples (as TorchGraph runs N > B): the numpy kernel on each sample."""
    if torch_op(op) is None:
        pytest.fail(f"{op} has no torch evaluation")
    g, feeds, specs = _graph(op, case)
    feeds2 = [_feed(sp) for sp in specs]
    (n,) = g.nodes
    consts = {k: torch.from_numpy(np.array(v)) for k, v in g.constants.items()}
    batched = {k: torch.stack([torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))])
               for k, a, b in zip(g.inputs, feeds, feeds2)}
    fn = torch_op(op)(n, g)
    args = [batched[i] if i in batched else consts[i] for i in n.inputs]
    dims = tuple(0 if i in batched else None for i in n.inputs)
    out = torch.func.vmap(lambda *xs: fn(list(xs)), in_dims=dims)(*args)
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    for k, fs in enumerate((feeds, feeds2)):
        _check([y[k].detach().numpy() for y in out], run(g, fs))


DIFFERENTIABLE = ["elu", "selu", "celu", "mish", "softplus", "softsign", "shrink", "thresholded_relu", "sin", "cos",
                  "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "where", "mod", "cumsum",
                  "reduce_prod", "topk-float", "gather_elements", "einsum", "resize", "conv_transpose2d",
                  "resize-cubic-align_corners", "resize-linear-antialias", "resize-nearest-asymmetric-floor",
                  "resize-tf_crop_and_resize", "cumsum-exclusive-reverse", "conv_transpose2d-stride", "cast-f64"]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradients_of_the_differentiable_coverage_ops(name):
    """Float64 gradcheck (fast mode: random projections) of the first (float) output with respect to every float input and constant."""
    var = {v[0]: v for v in VARIANTS}
    op, case = (var[name][1], (var[name][2], var[name][3])) if name in var else (name, None)
    g, feeds, _ = _graph(op, case)
    (n,) = g.nodes
    env = {k: torch.from_numpy(np.array(v)) for k, v in g.constants.items()}
    env.update({k: torch.from_numpy(np.array(v)) for k, v in zip(g.inputs, feeds)})
    args = [env[i].double().requires_grad_() if env[i].is_floating_point() else env[i] for i in n.inputs]
    fn = torch_op(op)(n, g)

    def first(*xs):
        y = fn(list(xs))
        return y[0] if isinstance(y, (tuple, list)) else y
    assert torch.autograd.gradcheck(first, tuple(args), eps=1e-6, atol=1e-5, fast_mode=True)


def _act(v: np.ndarray) -> QuantType:
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    scale = max(hi - lo, 1e-3) / 255
    return QuantType.make(8, True, scale, int(np.clip(-128 - np.rint(lo / scale), -128, 127)))


SIMULATED = {"conv2d", "linear", "matmul", "add", "mul", "avgpool", "maxpool", "softmax", "layernorm", "hardswish",
             "concat", "gelu", "sigmoid", "mean", "elu", "mish", "resize", "conv_transpose2d", "cumsum", "einsum",
             "reduce_prod"}


@pytest.mark.parametrize("op", sorted(SIMULATED))
def test_simulated_mode_parity_with_quantized_values_and_biases_on_the_integer_grid(op):
    """Inputs and weights quantized, the output left in float so that a bias off the s_x s_w grid (an error of
    up to half a step, ~1e-4 here) would show."""
    g, feeds, _ = _graph(op)
    for name, v in zip(g.inputs, feeds):
        g = g.with_quant(name, _act(v))
    for k, w in g.constants.items():
        if w.ndim >= 2:                                               # layer weights: per-channel, symmetric
            s = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127
            g = g.with_quant(k, QuantType.make(8, True, s, 0, 0))
    want = np.asarray(run(g, feeds, "simulated"))
    got = TorchGraph(g, simulated=True)({k: v for k, v in zip(g.inputs, feeds)}).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _has_float_input(op: str) -> bool:
    g, _, _ = _graph(op)
    return any(g.type_of(i).is_float for i in g.inputs)


NOT_QUANTIZABLE = {"isinf", "isnan"}      # their examples feed inf / nan: a quantized value is always finite


@pytest.mark.parametrize("op", [op for op in FLOAT_OPS
                                if op not in SIMULATED | NOT_QUANTIZABLE and _has_float_input(op)])
def test_simulated_mode_parity_of_every_other_float_op(op):
    """Every other float op with float inputs, its inputs fake-quantized the same way in both evaluators (tan
    near its poles amplifies float32 vs float64 rounding: 1e-3 relative there)."""
    g, feeds, _ = _graph(op)
    for name, v in zip(g.inputs, feeds):
        if g.type_of(name).is_float:
            g = g.with_quant(name, _act(v))
    want = run(g, feeds, "simulated")
    got = TorchGraph(g, simulated=True)({k: v for k, v in zip(g.inputs, feeds)})
    want, got = (want if isinstance(want, list) else [want]), (got if isinstance(got, list) else [got])
    for w, t in zip(want, got):
        t = t.detach().numpy()
        assert t.shape == np.shape(w)
        if np.asarray(w).dtype.kind == "f":
            np.testing.assert_allclose(t, w, rtol=1e-3 if op == "tan" else 1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(t, w)
