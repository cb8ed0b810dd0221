# SPDX-License-Identifier: Apache-2.0
"""The cpu target: compiled artifacts are bit-exact with the integer interpreter, save/load verifies
every file, and bad inputs or an unsuitable CPU fail with one clear error."""
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dyadiq.targets as targets
from dyadiq.errors import ArtifactError, InputError, PassError
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.passes.integerize import integerize
from dyadiq.targets import cpu
from quant_helpers import simple_quantize

RNG = np.random.default_rng(0)
CALIB = RNG.normal(size=(24, 3, 8, 8)).astype(np.float32)


def cnn():
    """conv+relu6, depthwise conv, residual add, silu, maxpool, global avgpool, linear."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.op("conv2d", [x, b.const("w1", RNG.normal(size=(8, 3, 3, 3)).astype(np.float32)),
                        b.const("b1", RNG.normal(size=8).astype(np.float32))], pad=(1, 1, 1, 1))
    y = b.op("clip", [y], min=0.0, max=6.0)
    z = b.op("conv2d", [y, b.const("w2", RNG.normal(size=(8, 1, 3, 3)).astype(np.float32))], pad=(1, 1, 1, 1),
             groups=8)
    z = b.op("silu", [b.op("add", [z, y])])
    p = b.op("global_avgpool", [b.op("maxpool", [z], kernel=(2, 2), stride=(2, 2))])
    p = b.op("reshape", [p], shape=(1, 8))
    return b.build([b.op("linear", [p, b.const("w3", RNG.normal(size=(5, 8)).astype(np.float32)),
                                    b.const("b3", RNG.normal(size=5).astype(np.float32))])])


CNN = cnn()


@pytest.fixture(scope="module")
def w8():
    q = simple_quantize(CNN, CALIB[:16])
    return q, integerize(q), targets.compile(q)


@pytest.fixture(scope="module")
def saved(w8, tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "cnn-cpu"
    w8[2].save(path)
    return path


# ---- bit-exactness ------------------------------------------------------------------------------------
@pytest.mark.parametrize("w_bits,per_channel", [(8, True), (8, False), (4, True), (4, False)])
def test_compiled_cnn_is_bit_exact_with_the_integer_interpreter(w_bits, per_channel):
    q = simple_quantize(CNN, CALIB[:16], w_bits=w_bits, per_channel=per_channel)
    ig = integerize(q)
    art = targets.compile(q)
    for i in range(16, 24):
        x = CALIB[i:i + 1] * (1 + i % 3)                        # some inputs saturate
        np.testing.assert_array_equal(art.run(x), run(ig, x))


def test_raw_integer_graph_runs_on_integers():
    ig = integerize(simple_quantize(CNN, CALIB[:16], w_bits=4), raw=True)
    art = targets.compile(ig)
    assert art.input_types["x"].dtype == "i8" and art.output_types[art.outputs[0]].dtype == "i8"
    x = RNG.integers(-128, 128, size=(1, 3, 8, 8)).astype(np.int8)
    np.testing.assert_array_equal(art.run(x), run(ig, x))


@pytest.mark.parametrize("name,w_bits", [("residual_block", 8), ("mbv2_block", 8), ("mbv2_block", 4), ("mlp", 4),
                                         ("pool_concat_cnn", 8), ("pool_concat_cnn", 4)])
def test_zoo_blocks_are_bit_exact(name, w_bits):
    pytest.importorskip("torch")
    from dyadiq.frontend import from_torch
    from dyadiq.passes.canonicalize import canonicalize
    from dyadiq.zoo.blocks import BLOCKS
    model, x = BLOCKS[name]()
    calib = np.random.default_rng(1).normal(size=(12,) + tuple(x.shape[1:])).astype(np.float32)
    q = simple_quantize(canonicalize(from_torch(model, x)), calib[:8], w_bits=w_bits)
    ig = integerize(q)
    art = targets.compile(ig)
    for i in range(8, 12):
        np.testing.assert_array_equal(art.run(calib[i:i + 1]), run(ig, calib[i:i + 1]))


# ---- manifest ------------------------------------------------------------------------------------------
def test_manifest_weight_bytes_equals_an_independent_count():
    q = simple_quantize(CNN, CALIB[:16], w_bits={"conv2d": 4, "conv2d_1": 3, "linear": 8})
    ig = integerize(q)
    m = targets.compile(ig).manifest
    w = {n.inputs[1]: q.quant_of(p.inputs[1]).bits for n, p in zip(
        [n for n in ig.nodes if n.op in ("qconv2d", "qlinear")], [n for n in q.nodes if n.op in ("conv2d", "linear")])}
    assert sorted(w.values()) == [3, 4, 8]
    weights = sum(math.ceil(bits * ig.const(name).size / 8) for name, bits in w.items())
    params = sum(a.nbytes for k, a in ig.constants.items() if k not in w)      # int32 / int8 arrays
    assert m["weight_bytes_detail"] == {"weights": weights, "quant_params": params, "total": weights + params}
    assert m["weight_bytes"] == weights + params
    assert [(layer["op"], layer["bits"]) for layer in m["layers"]] == [("qconv2d", 4), ("qconv2d", 3), ("qlinear", 8)]


def test_manifest_describes_inputs_outputs_target_and_versions(w8):
    q, ig, art = w8
    m = art.manifest
    assert m["target"] == "cpu" and m["mcpu"] == cpu.host_mcpu() and m["tvm_version"].startswith("0.27")
    (inp,) = m["inputs"]
    assert inp["name"] == "x" and inp["shape"] == [1, 3, 8, 8] and inp["dtype"] == "f32"
    assert inp["quant"]["scale"] == list(q.quant_of("x").scale) and inp["quant"]["bits"] == 8
    assert m["outputs"][0]["shape"] == [1, 5]
    assert set(m["required_cpu_features"]) <= cpu.host_cpu_flags()


# ---- host CPU ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,expected", [
    ("fpu sse2", "x86-64"),
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3", "x86-64-v2"),
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave", "x86-64-v3"),
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave "
     "avx512f avx512bw avx512cd avx512dq avx512vl avx512_vnni amx_int8", "x86-64-v4"),
    ("avx2 fma bmi2 avx512f", "x86-64"),                  # no v2 baseline: stay generic
])
def test_host_mcpu_is_the_highest_level_the_flags_cover(monkeypatch, flags, expected):
    monkeypatch.setattr(cpu, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(cpu, "host_cpu_flags", lambda: set(flags.split()))
    assert cpu.host_mcpu() == expected


def test_mcpu_override_and_unknown_mcpu():
    ig = integerize(simple_quantize(CNN, CALIB[:16]))
    m = targets.compile(ig, mcpu="x86-64").manifest
    assert m["mcpu"] == "x86-64" and "avx2" not in m["required_cpu_features"]
    with pytest.raises(InputError, match="unknown CPU 'not-a-cpu'"):
        targets.compile(ig, mcpu="not-a-cpu")


@pytest.mark.skipif(cpu.host_arch() != "x86_64", reason="64-bit mode is checked for x86 hosts")
@pytest.mark.parametrize("mcpu", ["pentium2", "i686"])
def test_a_32_bit_cpu_name_is_refused_before_llvm_aborts(mcpu):
    with pytest.raises(InputError, match=f"CPU '{mcpu}' has no 64-bit mode"):
        cpu.make_target(mcpu)


def test_cpu_without_the_required_features_is_refused_before_loading(saved, monkeypatch):
    need = json.loads((saved / "manifest.json").read_text())["required_cpu_features"]
    if not need:
        pytest.skip("generic build needs no features")
    monkeypatch.setattr(cpu, "host_cpu_flags", lambda: {"fpu"})
    with pytest.raises(ArtifactError, match=f"lacks .*{need[0]}"):
        targets.load_artifact(saved)


# ---- instruction sets of the fast kernels ---------------------------------------------------------------
def _asm(art) -> str:
    return art.module.mod.imports[0].inspect_source("asm")


V3 = "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
V4 = V3 + " avx512f avx512bw avx512cd avx512dq avx512vl"


@pytest.mark.parametrize("flags,isa,mattr", [
    ("fpu sse2", None, []),
    (V3, "avx2", []),                                           # Zen 3, Haswell..Comet Lake
    (V3 + " avx_vnni", "vnni", ["+avxvnni"]),                   # Alder Lake: 256-bit VNNI without AVX-512
    (V4, "avx2", []),                                           # Skylake-SP: AVX-512 without VNNI
    (V4 + " avx512_vnni", "vnni512", ["+avx512vnni"]),          # Cascade Lake, Zen 4
    (V4 + " avx512_vnni avx_vnni amx_int8 amx_tile", "vnni512", ["+avx512vnni", "+avxvnni"]),   # Sapphire Rapids
])
def test_the_default_target_uses_the_best_kernels_the_host_cpu_has(monkeypatch, flags, isa, mattr):
    """With no --mcpu the host's flags choose the level and the VNNI extensions: a VNNI host gets VNNI kernels."""
    from dyadiq.codegen.x86.lower import select_isa
    monkeypatch.setattr(cpu, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(cpu, "host_cpu_flags", lambda: set(flags.split()))
    t = cpu.make_target()
    assert list(t.attrs.get("mattr", [])) == mattr
    assert select_isa(t) == isa
    assert cpu.make_target("native") == t or str(cpu.make_target("native")) == str(t)


def test_the_manifest_names_the_kernels_and_the_features_they_need(w8):
    m = w8[2].manifest
    from dyadiq.codegen.x86.lower import select_isa
    assert m["kernels"] == (select_isa(cpu.make_target()) or "generic")
    if m["kernels"] == "vnni":
        assert {"avx512_vnni", "avx_vnni"} & set(m["required_cpu_features"])
    if m["kernels"] == "vnni512":
        assert {"avx512_vnni", "avx512bw", "avx512vl"} <= set(m["required_cpu_features"])


@pytest.mark.skipif("avx2" not in (cpu.host_cpu_flags() or set()), reason="host without AVX2")
def test_an_avx2_build_gets_the_exact_vpmaddwd_kernels():
    art = targets.compile(simple_quantize(CNN, CALIB[:16]), mcpu="x86-64-v3")
    assert art.manifest["kernels"] == "avx2"
    asm = _asm(art)
    assert "vpmaddwd" in asm
    assert "vpmaddubsw" not in asm                    # saturating u8 x s8 pairs: never exact for int8 weights


def test_vnni_build_uses_vpdpbusd_requires_the_feature_and_is_refused_without_it(tmp_path, monkeypatch):
    """Compiled for a VNNI CPU (only compiled here unless the host has VNNI): the kernels use vpdpbusd, the
    manifest requires avx512_vnni, and a CPU without it refuses the artifact with one error line."""
    ig = integerize(simple_quantize(CNN, CALIB[:16]))
    art = targets.compile(ig, mcpu="sapphirerapids")
    assert art.manifest["kernels"] == "vnni512"
    assert "avx512_vnni" in art.manifest["required_cpu_features"]
    asm = _asm(art)
    assert "vpdpbusd" in asm and "vpmaddubsw" not in asm
    art.save(tmp_path / "vnni")
    host = cpu.host_cpu_flags() or set()
    if "avx512_vnni" in host and "avx512vl" in host:  # this CPU can run it: bit-exact like any other build
        loaded = targets.load_artifact(tmp_path / "vnni")
        np.testing.assert_array_equal(loaded.run(CALIB[16:17]), run(ig, CALIB[16:17]))
        monkeypatch.setattr(cpu, "host_cpu_flags", lambda: host - {"avx512_vnni"})
    with pytest.raises(ArtifactError, match="lacks .*avx512_vnni"):
        targets.load_artifact(tmp_path / "vnni")


# ---- save / load ---------------------------------------------------------------------------------------
def test_save_load_round_trip_is_bit_exact(w8, saved):
    _, ig, art = w8
    assert sorted(os.listdir(saved)) == ["README.md", "graph.dyq", "manifest.json", "model.so"]
    assert not [p for p in os.listdir(saved.parent) if p.startswith(".")]          # no temp folders left
    loaded = targets.load_artifact(saved)
    for i in range(16, 20):
        np.testing.assert_array_equal(loaded.run(CALIB[i:i + 1]), art.run(CALIB[i:i + 1]))
    m = json.loads((saved / "manifest.json").read_text())
    assert set(m["files"]) == {"README.md", "graph.dyq", "model.so"}


def test_artifact_carries_the_integer_graph(w8, saved):
    assert targets.load_artifact(saved).graph == w8[1]


def test_readme_recipe_runs_with_the_tvm_runtime_alone(w8, saved, tmp_path):
    _, ig, _ = w8
    x = CALIB[20:21]
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, tvm, sys
        from tvm import relax
        vm = relax.VirtualMachine(tvm.runtime.load_module({str(saved / 'model.so')!r}), tvm.cpu())
        y = vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy()
        np.save({str(tmp_path / 'y.npy')!r}, y)
        assert "dyadiq" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run(ig, x))
    assert 'vm["main"]' in (saved / "README.md").read_text()


@pytest.fixture()
def copy(saved, tmp_path):
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


def test_modified_library_is_refused(copy):
    data = bytearray((copy / "model.so").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.so").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.so: sha256 does not match"):
        targets.load_artifact(copy)


@pytest.mark.parametrize("name", ["manifest.json", "model.so", "graph.dyq"])
def test_missing_file_is_refused_naming_it(copy, name):
    (copy / name).unlink()
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.") + ".*missing"):
        targets.load_artifact(copy)


def test_saving_over_a_folder_that_is_not_an_artifact_is_refused(w8, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an artifact folder"):
        w8[2].save(tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_loaded_artifact_saves_to_an_identical_folder(saved, tmp_path):
    targets.load_artifact(saved).save(tmp_path / "again")
    for name in ("model.so", "graph.dyq", "README.md", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (saved / name).read_bytes()


def test_saving_over_an_artifact_replaces_it(w8, copy):
    (copy / "stale.txt").write_text("old")
    w8[2].save(copy)
    assert "stale.txt" not in os.listdir(copy)
    targets.load_artifact(copy)


# ---- bad input -----------------------------------------------------------------------------------------
def test_wrong_input_dtype_or_shape_names_the_input(w8):
    art = w8[2]
    with pytest.raises(InputError, match=r"input 'x': expected shape \[1, 3, 8, 8\], got \[1, 3, 8\]"):
        art.run(np.zeros((1, 3, 8), np.float32))
    with pytest.raises(InputError, match=r"input 'x': expected dtype float32 \(f32\), got int32"):
        art.run(np.zeros((1, 3, 8, 8), np.int32))
    with pytest.raises(InputError, match=r"unknown input\(s\) \['y'\]"):
        art.run({"x": CALIB[:1], "y": CALIB[:1]})
    np.testing.assert_array_equal(art.run(CALIB[:1].astype(np.float64)), art.run({"x": CALIB[:1]}))


def test_wrong_dtype_for_an_integer_input(w8):
    art = targets.compile(integerize(w8[0], raw=True))
    with pytest.raises(InputError, match=r"input 'x': expected dtype int8"):
        art.run(np.zeros((1, 3, 8, 8), np.float32))


def test_unknown_target_lists_the_targets(w8):
    with pytest.raises(InputError, match=r"unknown target 'tpu' \(available: cpu"):
        targets.compile(w8[1], target="tpu")


def test_unquantized_graph_is_refused():
    with pytest.raises(PassError, match="no quantization parameters"):
        targets.compile(CNN)


# ---- tuning --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tuning_is_cached_and_stays_bit_exact(tmp_path):
    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 8))
    g = b.build([b.op("conv2d", [x, b.const("w", RNG.normal(size=(8, 8, 3, 3)).astype(np.float32))],
                      pad=(1, 1, 1, 1))])
    calib = RNG.normal(size=(4, 8, 8, 8)).astype(np.float32)
    q = simple_quantize(g, calib)
    art = targets.compile(q, tune=4, cache_dir=tmp_path)
    db = art.manifest["tuning"]["database"]
    assert db.startswith(str(tmp_path)) and os.path.isfile(os.path.join(db, "tuned.json"))
    stamp = os.path.getmtime(os.path.join(db, "tuned.json"))
    again = targets.compile(q, tune=4, cache_dir=tmp_path)                 # reuses: no new tuning
    assert again.manifest["tuning"]["database"] == db
    assert os.path.getmtime(os.path.join(db, "tuned.json")) == stamp
    np.testing.assert_array_equal(again.run(calib[:1]), run(integerize(q), calib[:1]))
