# SPDX-License-Identifier: Apache-2.0
"""The hls target: g++ C-simulation is bit-exact with the integer interpreter (both io styles), the
generated C++ is warning-free, synthesizable-subset and deterministic, accumulators are exactly as wide
as needed, and the artifact folder / CLI follow the contract."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dyadiq.targets as targets
from dyadiq.codegen.hls import KERNEL_FILES, generate
from dyadiq.codegen.hls.ranges import analyze, extreme_input, signed_width
from dyadiq.errors import CodegenError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.integerize import integerize
from dyadiq.targets.hls import CXXFLAGS, ap_types_dir
from quant_helpers import simple_quantize

pytest.importorskip("hls4ml")
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "codegen" / "hls"
RNG = np.random.default_rng(0)


def _block(name, w_bits):
    from dyadiq.frontend import from_torch
    from dyadiq.passes.canonicalize import canonicalize
    from dyadiq.zoo.blocks import BLOCKS
    model, x = BLOCKS[name]()
    calib = np.random.default_rng(1).normal(size=(12,) + tuple(x.shape[1:])).astype(np.float32)
    q = simple_quantize(canonicalize(from_torch(model, x)), calib[:8], w_bits=w_bits)
    return integerize(q), calib[8:] * 2                  # x2: some inputs saturate


MODELS = {   # name -> (block, weight bits: int or per layer)
    "mlp": ("mlp", {"fc1": 3, "fc2": 6, "fc3": 8}),
    "residual": ("residual_block", 4),
    "depthwise_separable": ("mbv2_block", {"expand": 5, "depthwise": 8, "project": 3}),
    "pool_concat": ("pool_concat_cnn", 4),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request):
    block, bits = MODELS[request.param]
    ig, xs = _block(block, bits)
    return request.param, ig, xs, {io: targets.compile(ig, target="hls", io=io) for io in ("parallel", "stream")}


# ---- 1. bit-exact C-simulation --------------------------------------------------------------------------
@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_csim_is_bit_exact_with_the_integer_interpreter(built, io):
    name, ig, xs, arts = built
    ys = arts[io].run_batch([xs])[0]
    ref = np.stack([run(ig, xs[i:i + 1]) for i in range(len(xs))])
    assert ys.dtype == np.float32
    np.testing.assert_array_equal(ys, ref)


def test_raw_integer_graph_runs_codes_in_and_out():
    ig = integerize(simple_quantize(*_tiny_cnn()), raw=True)
    art = targets.compile(ig, target="hls")
    x = RNG.integers(-128, 128, size=(1, 3, 6, 6)).astype(np.int8)
    y = art.run(x)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, run(ig, x))


# ---- 2. warning-free, synthesizable, deterministic C++ ------------------------------------------------------
def test_generated_cpp_compiles_with_all_warnings_as_errors(built, tmp_path):
    """Checked on its own for one model; every C-simulation build uses the same flags (CXXFLAGS)."""
    name, _, _, arts = built
    if name != "residual":
        pytest.skip("every C-sim build compiles with CXXFLAGS (-Wall -Wextra -Werror)")
    for io, art in arts.items():
        d = tmp_path / io
        d.mkdir()
        for name, text in art.files.items():
            (d / name).write_text(text)
        r = subprocess.run(["g++", "-std=c++14", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-isystem",
                            str(ap_types_dir()), "model.cpp", "tb.cpp"], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    assert {"-Wall", "-Wextra", "-Werror", "-std=c++14"} <= set(CXXFLAGS)


FORBIDDEN = re.compile(r"\bnew\b|\bdelete\b|\bmalloc\b|\bcalloc\b|\brealloc\b|\bfree\s*\(|std::vector|std::string"
                       r"|std::map|\balloca\b|\bthrow\b|\btry\b")


def test_kernel_sources_use_only_the_synthesizable_subset(built):
    _, ig, _, arts = built
    for art in arts.values():
        for name in KERNEL_FILES:
            text = art.files[name]
            code = "\n".join(line.split("//")[0] for line in text.splitlines())
            assert not FORBIDDEN.search(code), (name, FORBIDDEN.search(code).group(0))
            # static sizes only: every declared array dimension is an integer literal
            decl = re.compile(r"\b(?:static|const)\s[^;(){}=]*\w\[([^\]]*)\]")
            assert all(re.fullmatch(r"\d+", d) for d in decl.findall(code)), name
            assert decl.findall(code) or name != "model.cpp"
        # no recursion: no op function calls itself or another op function
        funcs = re.findall(r"static void (k\d+_\w+)\(", art.files["model.cpp"])
        bodies = re.split(r"static void k\d+_\w+\(", art.files["model.cpp"])[1:]
        for f, body in zip(funcs, bodies):
            body = body.split("\n}\n")[0]
            assert not re.search(r"\bk\d+_\w+\(", body), f


def _tiny_cnn():
    r = np.random.default_rng(7)                    # its own generator: the snapshot must not depend on test order
    b = GraphBuilder("tiny")
    x = b.input("x", (1, 3, 6, 6))
    y = b.op("conv2d", [x, b.const("w1", r.normal(size=(4, 3, 3, 3)).astype(np.float32)),
                        b.const("b1", r.normal(size=4).astype(np.float32))], pad=(1, 1, 1, 1), stride=(2, 2))
    y = b.op("relu", [y])
    y = b.op("reshape", [y], shape=(1, 36))
    g = b.build([b.op("linear", [y, b.const("w2", r.normal(size=(3, 36)).astype(np.float32))])])
    return g, np.random.default_rng(2).normal(size=(8, 1, 3, 6, 6)).astype(np.float32)[:, 0]


def test_generated_files_are_byte_identical_across_runs_and_match_the_snapshot():
    """Regenerate the snapshot only with DYADIQ_UPDATE_SNAPSHOTS=1."""
    g, calib = _tiny_cnn()
    ig = integerize(simple_quantize(g, calib, w_bits={"conv2d": 4, "linear": 6}))
    a = generate(ig, io="stream", reuse_factor=2).files
    b = generate(integerize(simple_quantize(g, calib, w_bits={"conv2d": 4, "linear": 6})), io="stream",
                 reuse_factor=2).files
    assert a == b
    if os.environ.get("DYADIQ_UPDATE_SNAPSHOTS") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in a.items():
            (GOLDEN / name).write_text(text)
    for name, text in a.items():
        assert (GOLDEN / name).read_text() == text, f"{name} differs from tests/golden/codegen/hls/{name}"


# ---- 3. accumulator widths --------------------------------------------------------------------------------
def _check_tight(ig, n, xr):
    """The extreme inputs reach the layer's bounds exactly; they fit acc_bits and not acc_bits - 1."""
    from dyadiq.ir.ops import op_def
    ranges, acc = analyze(ig)
    bound, bits = acc[n.name], signed_width(ranges[n.name][0], ranges[n.name][1])
    kernel = op_def(n.op).kernel
    consts = [ig.const(v) for v in n.inputs[1:]]
    for side in ("hi", "lo"):
        x, o, where = extreme_input(ig, n, xr, side)
        y = kernel([x, *consts], n.attr_dict)[0].astype(np.int64)
        want = bound.hi[o] if side == "hi" else bound.lo[o]
        assert y[where] == want
    ext = max(int(bound.hi.max()), -int(bound.lo.min()) - 1)
    assert ext < (1 << (bits - 1))                  # fits acc_bits (signed)
    assert ext >= (1 << (bits - 2))                 # one bit less overflows
    lo, hi = int(bound.lo.min()), int(bound.hi.max())
    for _ in range(3):                              # random inputs stay inside the bound
        x = np.random.default_rng(3).integers(xr[0], xr[1] + 1, size=ig.type_of(n.inputs[0]).shape)
        y = kernel([x.astype(ig.type_of(n.inputs[0]).np_dtype), *consts], n.attr_dict)[0]
        assert lo <= y.min() and y.max() <= hi
    return bits


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_layer_accumulator_is_exactly_as_wide_as_its_extreme_inputs_need(name):
    ig, _ = _block(*MODELS[name])
    ranges, _ = analyze(ig)
    layers = [n for n in ig.nodes if n.op in ("qconv2d", "qlinear")]
    assert layers
    for n in layers:
        bits = _check_tight(ig, n, ranges[n.inputs[0]])
        assert generate(ig).acc_bits[n.name] == bits


@pytest.mark.parametrize("w_bits", [2, 5, 8])
def test_adversarial_weights_at_the_extremes_of_their_width(w_bits):
    """All weights at +-(2^(b-1)-1) and inputs at the range ends: K * max|x| * max|w| + bias needs acc_bits."""
    b = GraphBuilder("adv")
    x = b.input("x", (1, 40))
    w = np.where(RNG.random((6, 40)) < 0.5, -1.0, 1.0).astype(np.float32)
    g = b.build([b.op("linear", [x, b.const("w", w)])])
    calib = RNG.uniform(-1, 1, size=(4, 1, 40)).astype(np.float32)
    ig = integerize(simple_quantize(g, calib[:, 0], w_bits=w_bits))
    wq = ig.const([n for n in ig.nodes if n.op == "qlinear"][0].inputs[1])
    assert np.abs(wq).max() == (1 << (w_bits - 1)) - 1 and np.abs(wq).min() == (1 << (w_bits - 1)) - 1
    ranges, _ = analyze(ig)
    n = [n for n in ig.nodes if n.op == "qlinear"][0]
    _check_tight(ig, n, ranges[n.inputs[0]])


def test_one_bit_less_overflows_in_csim_and_the_exact_width_does_not():
    """The C-simulation itself: the extreme input of a layer is exact at acc_bits and wraps at acc_bits - 1."""
    g, calib = _tiny_cnn()
    ig = integerize(simple_quantize(g, calib, w_bits=8), raw=True)
    ranges, _ = analyze(ig)
    n = [n for n in ig.nodes if n.op == "qconv2d"][0]
    x, _, _ = extreme_input(ig, n, ranges[n.inputs[0]], "hi")
    bits = generate(ig).acc_bits[n.name]
    ok = targets.compile(ig, target="hls").run(x)
    np.testing.assert_array_equal(ok, run(ig, x))
    from dyadiq.targets.hls import compile_hls
    bad = compile_hls(ig, acc_override={n.name: bits - 1}).run(x)
    assert not np.array_equal(bad, run(ig, x))


# ---- artifact folder, CLI and refusals ------------------------------------------------------------------------
def test_saved_folder_loads_verifies_and_runs(built, tmp_path):
    name, ig, xs, arts = built
    if name != "mlp":
        pytest.skip("one model is enough")
    art = arts["stream"]
    path = art.save(tmp_path / "mlp-hls")
    files = set(p.name for p in path.iterdir())
    assert {"model.cpp", "weights.h", "defines.h", "model.h", "tb.cpp", "build.tcl", "README.md",
            "manifest.json", "tb_in0.bin"} <= files
    m = json.loads((path / "manifest.json").read_text())
    assert m["target"] == "hls" and m["io"] == "stream" and m["reuse_factor"] == 1
    res = m["hls"]["resources"]
    assert res["dsp"] >= res["mac_dsp"] and res["latency_cycles"] > 0 and res["layers"]
    assert [r["operand_bits"][1] for r in res["layers"] if r.get("weight")] == [3, 6, 8]
    assert "csim_design" in (path / "build.tcl").read_text() and "export_design" in (path / "build.tcl").read_text()
    loaded = targets.load_artifact(path)
    np.testing.assert_array_equal(loaded.run(xs[:1]), run(ig, xs[:1]))
    (path / "weights.h").write_text((path / "weights.h").read_text() + "\n")
    from dyadiq.errors import ArtifactError
    with pytest.raises(ArtifactError, match="sha256"):
        targets.load_artifact(path)


def test_cli_compile_and_run(tmp_path):
    from dyadiq.ir.serialize import save
    g, calib = _tiny_cnn()
    q = simple_quantize(g, calib, w_bits=4)
    save(q, tmp_path / "m.dyq")
    np.save(tmp_path / "x.npy", calib[:1])
    cli = [sys.executable, "-m", "dyadiq.cli"]
    r = subprocess.run(cli + ["compile", str(tmp_path / "m.dyq"), "--target", "hls", "-o", str(tmp_path / "art"),
                              "--reuse-factor", "4", "--io", "stream", "--part", "xc7z020clg400-1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert (m["reuse_factor"], m["io"], m["part"]) == (4, "stream", "xc7z020clg400-1")
    r = subprocess.run(cli + ["run", str(tmp_path / "art"), "--input", f"x={tmp_path / 'x.npy'}", "-o",
                              str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run(integerize(q), calib[:1]))
    r = subprocess.run(cli + ["compile", str(tmp_path / "m.dyq"), "--target", "hls", "-o", str(tmp_path / "a2"),
                              "--io", "serial"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "--io" in r.stderr


def test_an_op_without_an_hls_form_is_refused_by_name():
    from dataclasses import replace
    g, calib = _tiny_cnn()
    ig = integerize(simple_quantize(g, calib))
    n = [n for n in ig.nodes if n.op == "reshape"][0]
    bad = ig.replace(nodes=tuple(replace(m, op="softmax_int") if m is n else m for m in ig.nodes))
    assert targets.backend("hls").unsupported(bad) == {"softmax_int": "no HLS form"}
    with pytest.raises(CodegenError, match="softmax_int"):
        from dyadiq.targets.backend import check_supported
        check_supported(targets.backend("hls"), bad)


def test_every_integer_op_has_an_hls_form():
    from dyadiq.codegen.hls import EMITTERS
    ops = {"quantize", "dequantize", "qconv2d", "qlinear", "qmatmul", "requantize", "qadd", "qmul", "qsum",
           "qavgpool", "lut", "reshape", "transpose", "concat", "slice", "pad", "maxpool", "identity", "gather"}
    assert ops <= set(EMITTERS)


def _op_zoo():
    """A raw integer graph that uses every integer op and data movement op (built in the dialect)."""
    r = np.random.default_rng(5)
    b = GraphBuilder("ops")
    x = b.input("x", (1, 4, 6, 6), "i8")
    t = b.op("transpose", [x], perm=(0, 1, 3, 2))
    s = b.op("slice", [t], starts=(1, 0), ends=(6, 6), axes=(2, 3), steps=(2, 1))        # [1,4,3,6]
    p1 = b.op("pad", [s], pads=(0, 0, 1, 0, 0, 0, 1, 2), mode="constant", value=-3)      # [1,4,5,8]
    p2 = b.op("pad", [s], pads=(0, 0, 1, 1, 0, 0, 1, 1), mode="edge")                    # [1,4,5,8]
    p3 = b.op("pad", [s], pads=(0, 0, 1, 1, 0, 0, 1, 1), mode="reflect")
    c = b.op("concat", [p1, p2, p3], axis=1)                                             # [1,12,5,8]
    g = b.op("gather", [c, b.const("idx", np.array([3, -1, 0, 7], np.int64))], axis=1)   # [1,4,5,8]
    mp = b.op("maxpool", [g], kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1), ceil_mode=True)
    ap = b.op("qavgpool", [g], kernel=(2, 3), stride=(2, 2), pad=(0, 1, 0, 1), x_zp=3)
    m = b.const("m", r.integers(1 << 30, 1 << 31, size=(1, 4, 1, 1)).astype(np.int32))
    sh = b.const("s", r.integers(8, 14, size=(1, 4, 1, 1)).astype(np.int32))
    lo = b.const("lo", np.array([-100, -50, 0, -128], np.int32).reshape(1, 4, 1, 1))
    hi = b.const("hi", np.array([100, 127, 60, 90], np.int32).reshape(1, 4, 1, 1))
    apq = b.op("requantize", [ap, m, sh, lo, hi], in_zp=2, out_zp=-5, qmin=-128, qmax=127, dtype="i8")
    mm = b.op("qmatmul", [b.op("reshape", [mp], shape=(4, 3, 5)), b.op("transpose", [mp], perm=(0, 1, 3, 2))],
              a_zp=-2, b_zp=1)                                                           # [1,4,3,3]->bcast
    mq = b.op("requantize", [mm, b.const("m2", np.array(1518500250, np.int32)), b.const("s2", np.array(36, np.int32))],
              out_zp=1, qmin=-128, qmax=127, dtype="i8")
    mu = b.op("qmul", [b.op("slice", [b.op("identity", [mq])], starts=(0, 0), ends=(2, 3), axes=(2, 3)),
                       b.op("slice", [apq], starts=(0, 0), ends=(2, 3), axes=(2, 3))],
              a_zp=1, b_zp=-5)
    sm = b.op("qsum", [mu], axes=(2, 3), x_zp=0)
    sq = b.op("requantize", [sm, b.const("m3", np.array(1 << 30, np.int32)), b.const("s3", np.array(40, np.int32))],
              qmin=-128, qmax=127, dtype="i8")
    lut = b.op("lut", [sq, b.const("tab", r.integers(-128, 128, size=256).astype(np.int8))], in_min=-128)
    add = b.op("qadd", [lut, b.op("slice", [apq], starts=(0, 0), ends=(1, 1), axes=(2, 3))], a_zp=3, b_zp=-5,
               a_m=1 << 29, b_m=3 << 28, shift=30, out_zp=0, qmin=-128, qmax=127, dtype="i8")
    gw = b.const("gw", r.integers(-7, 8, size=(6, 6, 3, 3)).astype(np.int8))                # grouped, dilated
    gc = b.op("qconv2d", [c, gw, b.const("gb", r.integers(-500, 500, size=6).astype(np.int32))], groups=2,
              pad=(2, 1, 1, 0), stride=(1, 2), dilation=(2, 1), x_zp=-3)
    gq = b.op("requantize", [gc, b.const("m4", np.array(1 << 30, np.int32)), b.const("s4", np.array(38, np.int32))],
              in_zp=7, out_zp=-1, qmin=-8, qmax=7, dtype="i8")                               # a 4-bit activation
    lw = b.const("lw", r.integers(-3, 4, size=(5, 8)).astype(np.int8))
    lin = b.op("qlinear", [b.op("reshape", [p1], shape=(4, 5, 8)), lw], x_zp=2)              # 20 rows
    return b.build([add, mq, gq, lin])


def test_every_op_bit_exact_on_a_graph_of_all_integer_and_movement_ops():
    ig = _op_zoo()
    assert {n.op for n in ig.nodes} >= {"transpose", "slice", "pad", "concat", "gather", "maxpool", "qavgpool",
                                          "qconv2d", "qlinear",
                                          "requantize", "qmatmul", "qmul", "qsum", "lut", "qadd", "identity",
                                          "reshape"}
    xs = np.random.default_rng(6).integers(-128, 128, size=(6, 1, 4, 6, 6)).astype(np.int8)
    for io in ("parallel", "stream"):
        art = targets.compile(ig, target="hls", io=io)
        outs = art.run_batch([xs])
        for i in range(len(xs)):
            ref = run(ig, xs[i])
            for o, rr in zip(outs, ref):
                np.testing.assert_array_equal(o[i], rr)
