# SPDX-License-Identifier: Apache-2.0
"""The tosa target: ``model.mlir`` verifies and round-trips with the MLIR bindings, the IREE module is
bit-exact with the integer interpreter (test graphs, the digits CNN, the zoo blocks, EfficientNet-Lite0
W8A8 / W4A8 when slow tests run), save/load verifies every file, and what TOSA cannot take fails with
one error naming it."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from quant_helpers import simple_quantize

import dyadiq
from dyadiq.passes.pipeline import FAST_OPTIONS
from dyadiq import targets
from dyadiq.errors import CodegenError, DyadiqError, InputError
from dyadiq.targets.tosa import BACKEND as TOSA
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.integerize import integerize

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")
pytest.importorskip("torch_mlir")

RNG = np.random.default_rng(0)


def zoo_cnn():
    """Every op family the TOSA lowering has: strided conv with uneven sizes, grouped and depthwise
    conv, residual add, silu (lut), maxpool and avgpool in ceil mode, concat, slice, pad, transpose,
    product of activations, global avgpool, linear."""
    b = GraphBuilder()
    w = lambda name, *shape: b.const(name, RNG.normal(size=shape).astype(np.float32))
    x = b.input("x", (1, 4, 11, 11))
    y = b.op("conv2d", [x, w("w1", 8, 4, 3, 3), w("b1", 8)], pad=(1, 1, 1, 1), stride=(2, 2))   # 6x6
    y = b.op("clip", [y], min=0.0, max=6.0)
    g = b.op("conv2d", [y, w("w2", 8, 4, 3, 3)], pad=(1, 1, 1, 1), groups=2)
    d = b.op("conv2d", [y, w("w3", 8, 1, 3, 3)], pad=(1, 1, 1, 1), groups=8)
    z = b.op("silu", [b.op("add", [g, d])])
    m = b.op("maxpool", [z], kernel=(3, 3), stride=(2, 2), ceil_mode=True)                        # 3x3
    a = b.op("avgpool", [z], kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1), ceil_mode=True)
    a = b.op("slice", [a], starts=(0, 0), ends=(3, 3), axes=(2, 3))
    c = b.op("concat", [m, a], axis=1)                                                            # 16ch
    c = b.op("mul", [c, b.op("pad", [b.op("slice", [c], starts=(1,), ends=(2,), axes=(2,))],
                             pads=(0, 0, 1, 0, 0, 0, 1, 0))])
    c = b.op("transpose", [c], perm=(0, 1, 3, 2))
    p = b.op("reshape", [b.op("global_avgpool", [c])], shape=(1, 16))
    return b.build([b.op("linear", [p, w("w4", 5, 16), w("b4", 5)])])


CNN = zoo_cnn()
CALIB = RNG.normal(size=(16, 4, 11, 11)).astype(np.float32)


def _bit_exact(art, ig, xs):
    for x in xs:
        assert np.array_equal(art.run(x), run(ig, x))


@pytest.fixture(scope="module")
def w8():
    q = simple_quantize(CNN, CALIB)
    ig = integerize(q)
    return q, ig, targets.compile(ig, target="tosa")


def test_every_op_family_is_bit_exact_through_iree(w8):
    _, ig, art = w8
    ops = {n.op for n in ig.nodes}
    assert {"qconv2d", "qadd", "lut", "maxpool", "qavgpool", "concat", "slice", "pad", "qmul", "transpose",
            "qsum", "qlinear", "reshape"} <= ops
    assert {"tosa.conv2d", "tosa.depthwise_conv2d", "tosa.rescale", "tosa.table", "tosa.max_pool2d",
            "tosa.concat", "tosa.pad", "tosa.slice", "tosa.reduce_sum"} <= {"tosa." + o for o in art.manifest["tosa_ops"]}
    _bit_exact(art, ig, [RNG.normal(size=(1, 4, 11, 11)).astype(np.float32) * s for s in (0.5, 1, 3, 20)])


@pytest.mark.parametrize("w_bits,per_channel", [(4, True), (8, False)])
def test_weight_widths_and_per_tensor_are_bit_exact(w_bits, per_channel):
    q = simple_quantize(CNN, CALIB, w_bits=w_bits, per_channel=per_channel)
    ig = integerize(q)
    _bit_exact(targets.compile(ig, target="tosa"), ig, [RNG.normal(size=(1, 4, 11, 11)).astype(np.float32)])


def test_model_mlir_verifies_and_round_trips(w8):
    from torch_mlir import ir
    text = w8[2].mlir
    with ir.Context(), ir.Location.unknown():
        m = ir.Module.parse(text)
        assert m.operation.verify()
        assert m.operation.get_asm(print_generic_op_form=True, large_elements_limit=None) == text
    assert "rounding_mode = #tosa.rounding_mode<SINGLE_ROUND>" in text and "DOUBLE_ROUND" not in text
    assert "f32" not in text and "f64" not in text                 # the integer part holds no float


def test_save_load_run(w8, tmp_path):
    _, ig, art = w8
    path = art.save(tmp_path / "cnn-tosa")
    assert {p.name for p in path.iterdir()} == {"model.mlir", "model.vmfb", "README.md", "manifest.json"}
    loaded = dyadiq.load_artifact(path)
    x = RNG.normal(size=(1, 4, 11, 11)).astype(np.float32)
    assert np.array_equal(loaded.run(x), run(ig, x))
    assert loaded.manifest["mcpu"] == "host" and loaded.manifest["iree_flags"] == ["--iree-llvmcpu-target-cpu=host"]


def test_cli_compile_run_and_inspect(w8, tmp_path):
    from dyadiq.ir.serialize import save
    q, ig, _ = w8
    save(q, tmp_path / "m.dyq")
    x = RNG.normal(size=(1, 4, 11, 11)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cli = [sys.executable, "-m", "dyadiq.cli"]
    r = subprocess.run(cli + ["compile", str(tmp_path / "m.dyq"), "--target", "tosa", "-o", str(tmp_path / "a")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cli + ["run", str(tmp_path / "a"), "--input", f"x={tmp_path / 'x.npy'}", "-o",
                              str(tmp_path / "y.npy")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), run(ig, x))
    r = subprocess.run(cli + ["inspect", str(tmp_path / "m.dyq"), "--format", "tosa"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and '"tosa.rescale"' in r.stdout and r.stdout.startswith('"builtin.module"')
    r = subprocess.run(cli + ["compile", str(tmp_path / "m.dyq"), "--target", "tosa", "--arch", "sm_90", "-o",
                              str(tmp_path / "b")], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "--arch" in r.stderr


def test_unsupported_op_is_named_before_building():
    b = GraphBuilder()
    x = b.input("x", (1, 6), "i8")
    ig = b.build([b.op("gather", [x, b.const("i", np.array([0, 2], np.int64))], axis=1),
                  b.op("qsum", [x], axes=(1,))])
    with pytest.raises(CodegenError, match="gather: no TOSA lowering"):
        targets.compile(ig, target="tosa")


def test_requantize_without_a_tosa_form_is_refused_with_the_node_named():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "i32")
    ig = b.build([b.op("requantize", [x, b.const("m", np.array([1 << 30], np.int32)),
                                      b.const("s", np.array([1], np.int32))], qmin=-128, qmax=127, dtype="i8")])
    with pytest.raises(DyadiqError, match=r"requantize.*\[2, 62\]"):
        targets.compile(ig, target="tosa")


def test_constant_operands_and_subtractions_are_bit_exact():
    """What a Conv1d + BatchNorm1d exported through torch.export leaves (per-channel ``qmul`` by a constant,
    ``qadd`` of an int32 constant) and a GRU's ``1 - z`` (``qadd`` with a negative multiplier); ``--check``
    (``unsupported``) runs the lowering, so it agrees with ``compile``."""
    b = GraphBuilder()
    x = b.input("x", (1, 6, 9), "i8")
    s = b.op("qmul", [x, b.const("sign", RNG.choice([-1, 1], size=(1, 6, 1)).astype(np.int8))], a_zp=-5, b_zp=0)
    s = b.op("requantize", [s, b.const("m", np.array([1 << 30], np.int32)), b.const("s", np.array([31], np.int32))],
             qmin=-128, qmax=127, dtype="i8")
    y = b.op("qadd", [s, b.const("codes", RNG.integers(-60, 97, size=(1, 6, 1)).astype(np.int32))],
             a_m=2145078573, a_zp=10, b_m=1 << 30, b_zp=0, shift=30, out_zp=-128, qmin=-128, qmax=127, dtype="i8")
    z = b.op("qadd", [y, x], a_m=-(1 << 30), a_zp=-128, b_m=1 << 29, b_zp=3, shift=30, out_zp=0, qmin=-128,
             qmax=127, dtype="i8")
    ig = b.build([z])
    assert TOSA.unsupported(ig) == {}
    art = targets.compile(ig, target="tosa")
    _bit_exact(art, ig, [RNG.integers(-128, 128, size=(1, 6, 9)).astype(np.int8) for _ in range(4)])


def test_a_node_the_lowering_cannot_express_is_named_by_the_check():
    b = GraphBuilder()
    x = b.input("x", (1, 4), "i8")
    ig = b.build([b.op("qadd", [x, b.const("c", np.array([[1 << 20, 0, 0, 0]], np.int32))], a_m=1 << 30, a_zp=0,
                       b_m=1 << 30, b_zp=0, shift=30, out_zp=0, qmin=-128, qmax=127, dtype="i8")])
    assert TOSA.unsupported(ig) == {"qadd": "qadd of operands wider than 16 bits has no int32 TOSA form here"}


@pytest.mark.parametrize("name", ["mbv2_block", "mlp"])
def test_16_bit_activations_are_bit_exact(name):
    """i16 convs run as two i8 convs (no i48: IREE's rescale of i48 is wrong for negative values)."""
    from dyadiq.zoo import BLOCKS
    model, x = BLOCKS[name]()
    g = dyadiq.from_torch(model, (x,))
    data = np.random.default_rng(2).normal(size=(20,) + tuple(x.shape[1:])).astype(np.float32)
    q, _ = dyadiq.quantize(g, data[:16], wide_acts=1.0, rounding="nearest")
    ig = dyadiq.integerize(q)
    assert any(ig.type_of(n.inputs[0]).dtype == "i16" for n in ig.nodes if n.op in ("qconv2d", "qlinear"))
    _bit_exact(targets.compile(ig, target="tosa"), ig, [data[i:i + 1] * s for i in range(16, 20) for s in (1, 6)])


def test_options_of_other_targets_are_refused():
    with pytest.raises(InputError, match="--arch"):
        targets.compile(integerize(simple_quantize(CNN, CALIB)), target="tosa", arch="sm_80")


# ---- real models --------------------------------------------------------------------------------------
def test_digits_cnn_is_bit_exact():
    from dyadiq.zoo import digits_cnn, digits_data
    d = digits_data()
    g = dyadiq.from_torch(digits_cnn(), (torch.from_numpy(d.x_test[:1]),))
    q, _ = dyadiq.quantize(g, d.x_train[:64], **FAST_OPTIONS)
    ig = dyadiq.integerize(q)
    _bit_exact(targets.compile(ig, target="tosa"), ig, [d.x_test[i:i + 1] for i in range(16)])


@pytest.mark.parametrize("name,bits", [("residual_block", 8), ("mbv2_block", 4), ("mlp", 8), ("pool_concat_cnn", 8),
                                       ("pool_concat_cnn", 4)])
def test_zoo_blocks_are_bit_exact(name, bits):
    from dyadiq.zoo import BLOCKS
    model, x = BLOCKS[name]()
    g = dyadiq.from_torch(model, (x,))
    data = np.random.default_rng(1).normal(size=(40,) + tuple(x.shape[1:])).astype(np.float32)
    q, _ = dyadiq.quantize(g, data[:32], weight_bits=bits, **FAST_OPTIONS)
    ig = dyadiq.integerize(q)
    _bit_exact(targets.compile(ig, target="tosa"), ig, [data[i:i + 1] * s for i in range(32, 40) for s in (1, 4)])


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_efficientnet_lite0_is_bit_exact(bits, effnet_integer):
    ig, evalx = effnet_integer(bits)
    art = targets.compile(ig, target="tosa")
    _bit_exact(art, ig, [evalx[i:i + 1] for i in range(8)])
    from torch_mlir import ir
    with ir.Context(), ir.Location.unknown():
        m = ir.Module.parse(art.mlir)
        assert m.operation.verify()
        assert m.operation.get_asm(print_generic_op_form=True, large_elements_limit=None) == art.mlir
