# SPDX-License-Identifier: Apache-2.0
"""Issue 16: integer-only transformers end to end.

- the zoo transformer layer lowers to integer ops only (qsoftmax, qlayernorm, qmatmul of two activations,
  GELU table) and its cpu artifact is bit-exact with the integer interpreter;
- a ViT trained on the digits set: integer accuracy within 1 point of float, cpu artifact bit-exact;
- an ONNX transformer with dynamic batch and sequence dims goes through the CLI with --input-shape;
- (slow) MiniLM-L6 with the real weights: integer-only from the ids to the pooled output, cosine to the
  float sentence embeddings >= 0.99, artifact bit-exact.
"""
import numpy as np
import pytest
import torch

import dyadiq
from dyadiq.interp import run
from dyadiq.interp.run import run_batched
from dyadiq.ir.ops import op_def

DATA_MOVES = {"reshape", "transpose", "concat", "slice", "pad", "identity", "gather"}


def _assert_integer_only(ig):
    """No float op or value between the (quantized or integer) inputs and the output dequantize."""
    for n in ig.nodes:
        if n.op == "quantize":
            assert n.inputs[0] in ig.inputs
        elif n.op == "dequantize":
            assert n.name in ig.outputs
        else:
            assert op_def(n.op).integer or n.op in DATA_MOVES, n
            assert not any(ig.type_of(v).is_float for v in (*n.inputs, *n.outputs)), n


def test_transformer_layer_is_integer_only_and_bit_exact_on_cpu():
    from dyadiq.zoo.blocks import transformer_layer
    model, x = transformer_layer()
    g = dyadiq.from_torch(model, (x,))
    calib = np.random.default_rng(0).standard_normal((32, 8, 32)).astype(np.float32)
    q, _ = dyadiq.quantize(g, calib, calib_method="minmax", rounding="nearest")
    ig = dyadiq.integerize(q)
    _assert_integer_only(ig)
    assert {"qsoftmax", "qlayernorm", "qmatmul", "lut"} <= {n.op for n in ig.nodes}
    art = dyadiq.compile(ig, target="cpu")
    for xi in calib[:8, None]:                       # inside the calibrated ranges
        want = np.asarray(run(ig, {ig.inputs[0]: xi}, mode="integer"))
        assert np.array_equal(np.asarray(art.run(xi)), want)
        with torch.no_grad():
            ref = model(torch.from_numpy(xi)).numpy()
        assert np.sqrt(((want - ref) ** 2).mean()) < 0.05 * np.sqrt((ref ** 2).mean())


def test_digits_vit_integer_within_one_point_of_float_and_bit_exact():
    from dyadiq.zoo.digits import accuracy, digits_data
    from dyadiq.zoo.minilm import wide_values
    from dyadiq.zoo.vit import digits_vit
    model, d = digits_vit(), digits_data()
    float_acc = accuracy(model, d.x_test, d.y_test)
    assert float_acc > 0.93
    g = dyadiq.from_torch(model, (torch.from_numpy(d.x_test[:1]),))
    q, _ = dyadiq.quantize(g, d.x_train[:128], calib_method="minmax", rounding="nearest",
                           act_bits_by_value=wide_values(g, operands=False))
    ig = dyadiq.integerize(q)
    _assert_integer_only(ig)
    yi = run_batched(ig, d.x_test, mode="integer")
    assert abs(float((yi.argmax(1) == d.y_test).mean()) - float_acc) <= 0.01
    art = dyadiq.compile(ig, target="cpu")
    ya = np.concatenate([np.asarray(art.run(d.x_test[i:i + 1])) for i in range(len(d.x_test))])
    assert np.array_equal(ya, yi)


def test_onnx_transformer_with_dynamic_batch_and_sequence_through_the_cli(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from dyadiq import cli
    from dyadiq.zoo.blocks import transformer_layer
    model, x = transformer_layer()
    path = tmp_path / "t.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}}, dynamo=False)
    dims = [d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == ["batch", "seq"]
    assert "layernormalization" in {n.op_type.lower() for n in onnx.load(str(path)).graph.node}
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((16, 12, 32)).astype(np.float32))
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((1, 12, 32)).astype(np.float32))
    steps = [("quantize", path, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "q.dyq", "--input-shape",
              "x=1,12,32", "--rounding", "nearest", "--calib-method", "minmax"),
             ("compile", tmp_path / "q.dyq", "--target", "cpu", "-o", tmp_path / "art"),
             ("run", tmp_path / "art", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")]
    for argv in steps:
        rc = cli.main([str(a) for a in argv])
        assert rc == 0, capsys.readouterr().err
    from dyadiq.api import load
    ig = dyadiq.integerize(load(tmp_path / "q.dyq"))
    _assert_integer_only(ig)
    want = np.asarray(run(ig, {ig.inputs[0]: np.load(tmp_path / "x.npy")}, mode="integer"))
    assert np.array_equal(np.load(tmp_path / "y.npy"), want)


@pytest.mark.slow
def test_minilm_integer_embeddings():
    from dyadiq.passes.smooth_quant import smooth_quant
    from dyadiq.zoo.minilm import minilm, reference_embeddings, sentences, tokenize, wide_values
    model = minilm()
    cal, ids = tokenize(sentences(32, skip=300)), tokenize(sentences(32))
    g = dyadiq.from_torch(model, (torch.from_numpy(cal[:1]),))
    g = smooth_quant(g, [{g.inputs[0]: cal[i:i + 1]} for i in range(8)])
    bits = {**wide_values(g), **{n.name: 12 for n in g.nodes if n.op == "gelu"}}   # as bench/transformer.py
    q, _ = dyadiq.quantize(g, cal, calib_method="minmax", rounding="nearest", act_bits_by_value=bits)
    ig = dyadiq.integerize(q)
    _assert_integer_only(ig)
    assert ig.type_of(ig.inputs[0]).dtype == "i64"
    art = dyadiq.compile(ig, target="cpu")
    got = np.concatenate([np.asarray(art.run(ids[i:i + 1])) for i in range(len(ids))]).astype(np.float64)
    for i in range(2):
        assert np.array_equal(np.asarray(run(ig, {ig.inputs[0]: ids[i:i + 1]}, mode="integer")), got[i:i + 1])
    ref = reference_embeddings(model, ids)
    cos = (got / np.linalg.norm(got, axis=1, keepdims=True) * ref).sum(1)
    assert cos.mean() >= 0.99
    nn = [(e @ e.T - 2 * np.eye(len(e))).argmax(1) for e in (ref, got / np.linalg.norm(got, axis=1, keepdims=True))]
    assert (nn[0] == nn[1]).mean() >= 0.9
