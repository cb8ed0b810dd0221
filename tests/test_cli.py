# SPDX-License-Identifier: Apache-2.0
"""The ``dyadiq`` command line: inspect, run, and the bad-input contract.

Bad input of any kind exits with code 2 and exactly one ``error: ...`` line on stderr (no traceback),
and never leaves an output file behind; a bug exits with 1 and shows its traceback.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dyadiq import cli
from dyadiq.interp import run as interp_run
from dyadiq.ir import GraphBuilder, QuantType, parse_mlir, print_text
from dyadiq.ir.serialize import load as load_dyq, save as save_dyq

R = np.random.RandomState(0)


# ---- models and data ----------------------------------------------------------------------------------
def tiny_graph():
    """conv(3->4, quantized weight) -> relu -> global avg pool -> reshape -> linear(4->10)."""
    b = GraphBuilder("tiny")
    x = b.input("x", (1, 3, 8, 8))
    w = b.const("conv.w", R.randn(4, 3, 3, 3).astype(np.float32),
                quant=QuantType.make(8, True, np.full(4, 0.02), 0, axis=0))
    y = b.op("conv2d", [x, w, b.const("conv.b", R.randn(4).astype(np.float32))], name="conv", pad=(1, 1, 1, 1))
    y = b.op("reshape", [b.op("global_avgpool", [b.op("relu", [y])])], shape=(1, 4))
    y = b.op("linear", [y, b.const("fc.w", R.randn(10, 4).astype(np.float32))], name="logits",
             quant=QuantType.make(8, True, 0.05, 3))
    return b.build([y])


def two_io_graph():
    """(a, b) -> (a + b, a * b): two inputs, two outputs."""
    b = GraphBuilder("two")
    a, c = b.input("a", (2, 3)), b.input("b", (2, 3))
    return b.build([b.op("add", [a, c], name="sum"), b.op("mul", [a, c], name="prod")])


def tiny_onnx_bytes(op: str = "Relu") -> bytes:
    """A one-node ONNX model ``y = op(x)`` on x: float[1, 4] (TopK: k = 2, values only)."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    if op == "TopK":
        k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
        node = helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="topk")
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
        graph = helper.make_graph([node], "g", [x], [y], initializer=[k])
    else:
        node = helper.make_node(op, ["x"], ["y"], name="act")
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
        graph = helper.make_graph([node], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    save_dyq(tiny_graph(), d / "tiny.dyq")
    save_dyq(two_io_graph(), d / "two.dyq")
    np.save(d / "x.npy", R.randn(1, 3, 8, 8).astype(np.float32))
    return d


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_bad_input(rc: int, err: str, out_file: Path | None = None) -> str:
    """Exit 2, one ``error:`` line, no traceback, no output (nor temporary) file left."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if out_file is not None:
        assert not out_file.exists()
        assert not list(out_file.parent.glob(f".{out_file.name}.*")), "temporary file left behind"
    return lines[0]


# ---- inspect ------------------------------------------------------------------------------------------
def test_inspect_prints_the_compact_text_form(capsys, work):
    rc, out, err = run_cli(capsys, "inspect", work / "tiny.dyq")
    assert rc == 0 and err == ""
    assert out.strip() == print_text(load_dyq(work / "tiny.dyq")).strip()


def test_inspect_mlir_parses_back_to_the_same_graph(capsys, work):
    g = load_dyq(work / "tiny.dyq")
    rc, out, _ = run_cli(capsys, "inspect", work / "tiny.dyq", "--format", "mlir")
    assert rc == 0
    assert parse_mlir(out, dict(g.constants)) == g


def test_inspect_json_describes_types_quant_nodes_and_constant_hashes(capsys, work):
    rc, out, _ = run_cli(capsys, "inspect", work / "tiny.dyq", "--format", "json")
    assert rc == 0
    d = json.loads(out)
    assert d["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "f32", "quant": None}]
    assert d["outputs"][0]["quant"] == {"bits": 8, "signed": True, "axis": None, "scale": [0.05], "zero_point": [3]}
    assert [n["op"] for n in d["nodes"]] == ["conv2d", "relu", "global_avgpool", "reshape", "linear"]
    assert d["nodes"][0]["attrs"]["pad"] == [1, 1, 1, 1]
    consts = {c["name"]: c for c in d["constants"]}
    assert consts["conv.w"]["shape"] == [4, 3, 3, 3] and len(consts["conv.w"]["sha256"]) == 64
    assert consts["conv.w"]["quant"]["axis"] == 0
    assert "stats" not in d and "data" not in consts["conv.w"]


def test_inspect_json_with_stats_embeds_them(capsys, work):
    rc, out, _ = run_cli(capsys, "inspect", work / "tiny.dyq", "--format", "json", "--stats")
    assert rc == 0
    tot = json.loads(out)["stats"]["totals"]
    assert tot["params"] == 4 * 27 + 4 + 40
    assert tot["macs"] == 64 * 4 * 27 + 40
    assert tot["weight_bytes"] == 108 * 1 + 4 * 4 + 40 * 4           # the conv weight is int8


def test_inspect_stats_prints_layer_table_and_totals(capsys, work):
    rc, out, _ = run_cli(capsys, "inspect", work / "tiny.dyq", "--stats")
    assert rc == 0
    assert "graph @tiny" not in out                                   # --stats alone: only the stats
    for needle in ("conv", "logits", "1x4x8x8", "6,912", "parameters", "152", "MACs", "6,952",
                   "weight bytes", "284", "quantized values", "conv.w", "i8"):
        assert needle in out, needle


def test_inspect_text_with_stats_prints_both(capsys, work):
    rc, out, _ = run_cli(capsys, "inspect", work / "tiny.dyq", "--format", "text", "--stats")
    assert rc == 0 and "graph @tiny" in out and "parameters" in out


def test_inspect_onnx(capsys, tmp_path):
    (tmp_path / "m.onnx").write_bytes(tiny_onnx_bytes("Relu"))
    rc, out, err = run_cli(capsys, "inspect", tmp_path / "m.onnx")
    assert rc == 0, err
    assert "relu" in out


def test_inspect_pt2(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 4),)), tmp_path / "m.pt2")
    rc, out, err = run_cli(capsys, "inspect", tmp_path / "m.pt2", "--format", "json", "--stats")
    assert rc == 0, err
    assert json.loads(out)["stats"]["totals"]["params"] == 4 * 3 + 3


# ---- run ----------------------------------------------------------------------------------------------
def test_run_writes_the_interpreter_output(capsys, work, tmp_path):
    out = tmp_path / "y.npy"
    rc, stdout, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", f"x={work / 'x.npy'}", "-o", out)
    assert rc == 0, err
    expected = interp_run(load_dyq(work / "tiny.dyq"), {"x": np.load(work / "x.npy")})
    np.testing.assert_array_equal(np.load(out), expected)
    assert "wrote" in stdout and str(out) in stdout


def test_run_one_input_model_accepts_a_bare_file_and_simulated_mode(capsys, work, tmp_path):
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", work / "x.npy", "--mode", "simulated",
                         "-o", out)
    assert rc == 0, err
    g = load_dyq(work / "tiny.dyq")
    np.testing.assert_array_equal(np.load(out), interp_run(g, [np.load(work / "x.npy")], mode="simulated"))


def test_run_several_inputs_and_outputs_go_through_npz(capsys, work, tmp_path):
    a, b = R.randn(2, 3).astype(np.float32), R.randn(2, 3).astype(np.float32)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    out = tmp_path / "out.npz"
    rc, _, err = run_cli(capsys, "run", work / "two.dyq", "--input", tmp_path / "in.npz", "-o", out)
    assert rc == 0, err
    with np.load(out) as z:
        np.testing.assert_array_equal(z["sum"], a + b)
        np.testing.assert_array_equal(z["prod"], a * b)


def test_run_named_inputs_from_separate_files(capsys, work, tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "b.npy", np.full((2, 3), 2, np.float32))
    out = tmp_path / "out.npz"
    rc, _, err = run_cli(capsys, "run", work / "two.dyq", "-i", f"a={tmp_path / 'a.npy'}",
                         "-i", f"b={tmp_path / 'b.npy'}", "-o", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert z["sum"].tolist() == [[3.0] * 3] * 2


def test_version(capsys):
    rc, out, _ = run_cli(capsys, "--version")
    assert rc == 0 and out.startswith("dyadiq ")


# ---- bad input: exit 2, one line, no output ----------------------------------------------------------
def test_missing_model_file(capsys, work, tmp_path):
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", tmp_path / "nope.dyq", "--input", work / "x.npy", "-o", out)
    assert "nope.dyq" in assert_bad_input(rc, err, out)


def test_unknown_model_extension(capsys, tmp_path):
    (tmp_path / "m.h5").write_bytes(b"\x89HDF")
    rc, _, err = run_cli(capsys, "inspect", tmp_path / "m.h5")
    assert ".h5" in assert_bad_input(rc, err)


def test_truncated_onnx(capsys, work, tmp_path):
    data = tiny_onnx_bytes("Relu")
    (tmp_path / "m.onnx").write_bytes(data[: len(data) // 2])
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", tmp_path / "m.onnx", "--input", work / "x.npy", "-o", out)
    assert "m.onnx" in assert_bad_input(rc, err, out)


def test_onnx_with_an_unsupported_op_names_it(capsys, tmp_path):
    (tmp_path / "m.onnx").write_bytes(tiny_onnx_bytes("Unique"))
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy", "-o", out)
    assert "Unique" in assert_bad_input(rc, err, out)


def test_dyq_with_a_flipped_byte(capsys, work, tmp_path):
    data = bytearray((work / "tiny.dyq").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.dyq").write_bytes(bytes(data))
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", tmp_path / "bad.dyq", "--input", work / "x.npy", "-o", out)
    assert "bad.dyq" in assert_bad_input(rc, err, out)


def test_input_of_the_wrong_shape(capsys, work, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 9), np.float32))
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", f"x={tmp_path / 'x.npy'}", "-o", out)
    line = assert_bad_input(rc, err, out)
    assert "'x'" in line and "[1, 3, 8, 8]" in line and "[1, 3, 8, 9]" in line


def test_input_of_the_wrong_dtype(capsys, work, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.int64))
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", f"x={tmp_path / 'x.npy'}", "-o", out)
    line = assert_bad_input(rc, err, out)
    assert "'x'" in line and "f32" in line and "int64" in line


def test_nan_input_of_a_quantized_model(capsys, work, tmp_path):
    """Quantizing NaN has no defined code (the interpreter and a compiled kernel picked different ones), so
    integer and simulated runs and artifacts refuse it; float mode computes with it. (Infinities clamp to
    the range ends in both: ``codegen/test_tvm.py``.)"""
    from dyadiq.errors import InputError
    from dyadiq.targets.artifact import bind_inputs
    import dyadiq
    q, _ = dyadiq.quantize(load_dyq(work / "tiny.dyq"), R.randn(4, 3, 8, 8).astype(np.float32), rounding="nearest")
    save_dyq(q, tmp_path / "q.dyq")
    x = np.zeros((1, 3, 8, 8), np.float32)
    x[0, 1, 2, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    for mode in ("integer", "simulated"):
        rc, _, err = run_cli(capsys, "run", tmp_path / "q.dyq", "--input", f"x={tmp_path / 'x.npy'}", "--mode", mode,
                             "-o", out)
        assert "1 of 192 values are NaN" in assert_bad_input(rc, err, out)
    assert run_cli(capsys, "run", tmp_path / "q.dyq", "--input", f"x={tmp_path / 'x.npy'}", "--mode", "float",
                   "-o", out)[0] == 0
    spec = {"name": "x", "shape": [1, 3, 8, 8], "numpy_dtype": "float32", "dtype": "f32"}
    with pytest.raises(InputError, match="values are NaN"):
        bind_inputs([spec], x)


@pytest.mark.parametrize("array", [np.array([["a"] * 8] * 3), np.array([None, 1], dtype=object)],
                         ids=["strings", "objects"])
def test_input_that_is_not_numeric(capsys, work, tmp_path, array):
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", tmp_path / "x.npy", "-o", out)
    assert "x.npy" in assert_bad_input(rc, err, out)


def test_unknown_mode(capsys, work, tmp_path):
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", work / "x.npy", "--mode", "fast", "-o", out)
    assert "fast" in assert_bad_input(rc, err, out)


def test_missing_input_file(capsys, work, tmp_path):
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", f"x={tmp_path / 'none.npy'}", "-o", out)
    assert "none.npy" in assert_bad_input(rc, err, out)


def test_unknown_and_missing_input_names(capsys, work, tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    out = tmp_path / "out.npz"
    rc, _, err = run_cli(capsys, "run", work / "two.dyq", "-i", f"zz={tmp_path / 'a.npy'}", "-o", out)
    assert "'zz'" in assert_bad_input(rc, err, out)
    rc, _, err = run_cli(capsys, "run", work / "two.dyq", "-i", f"a={tmp_path / 'a.npy'}", "-o", out)
    assert "missing input" in assert_bad_input(rc, err, out) and " b " in err
    rc, _, err = run_cli(capsys, "run", work / "two.dyq", "-i", tmp_path / "a.npy", "-o", out)
    assert "NAME=FILE" in assert_bad_input(rc, err, out)


def test_npy_output_for_a_two_output_model(capsys, work, tmp_path):
    np.savez(tmp_path / "in.npz", a=np.ones((2, 3), np.float32), b=np.ones((2, 3), np.float32))
    out = tmp_path / "out.npy"
    rc, _, err = run_cli(capsys, "run", work / "two.dyq", "-i", tmp_path / "in.npz", "-o", out)
    assert ".npz" in assert_bad_input(rc, err, out)


def test_an_error_keeps_an_existing_output_file_intact(capsys, work, tmp_path):
    out = tmp_path / "y.npy"
    out.write_bytes(b"previous")
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    rc, _, err = run_cli(capsys, "run", work / "tiny.dyq", "--input", tmp_path / "bad.npy", "-o", out)
    assert_bad_input(rc, err)
    assert out.read_bytes() == b"previous"


def test_artifact_folder_without_a_target(capsys, work, tmp_path):
    (tmp_path / "art").mkdir()
    out = tmp_path / "y.npy"
    rc, _, err = run_cli(capsys, "run", tmp_path / "art", "--input", work / "x.npy", "-o", out)
    assert "art" in assert_bad_input(rc, err, out)


def test_usage_errors_are_one_line(capsys):
    assert_bad_input(*run_cli(capsys)[::2])
    assert "frobnicate" in assert_bad_input(*run_cli(capsys, "frobnicate")[::2])
    assert "-o" in assert_bad_input(*run_cli(capsys, "run", "m.dyq", "--input", "x.npy")[::2])


def test_a_bug_shows_its_traceback_and_exits_1(capsys, work, monkeypatch):
    from dyadiq import api

    def broken(path, **kw):
        raise RuntimeError("boom")
    monkeypatch.setattr(api, "load", broken)
    rc, _, err = run_cli(capsys, "inspect", work / "tiny.dyq")
    assert rc == 1 and "Traceback" in err and "RuntimeError: boom" in err


def test_demo_needs_at_least_one_crop(capsys):
    assert "--n" in assert_bad_input(*run_cli(capsys, "demo", "--n", "0")[::2])


@pytest.mark.slow
def test_demo_quantizes_compiles_and_runs_the_artifact():
    from io import StringIO

    from rich.console import Console

    from dyadiq.demo import demo
    buf = StringIO()
    summary = demo(n=2, console=Console(file=buf, width=120))
    assert summary["float"]["agreement"] == 1.0 and summary["float"]["sqnr_db"] > 60
    sim, art = summary["W8A8 simulated"], summary["W8A8 cpu artifact"]
    # the integer artifact computes what simulated mode predicts (up to the float rounding of dequantize)
    assert art["agree"] == sim["agree"] and abs(art["sqnr_db"] - sim["sqnr_db"]) < 1e-3
    assert sim["sqnr_db"] > 10
    assert "top-1 agreement" in buf.getvalue()


# ---- the real console script --------------------------------------------------------------------------
def _script() -> list[str]:
    exe = shutil.which("dyadiq", path=str(Path(sys.executable).parent)) or shutil.which("dyadiq")
    return [exe] if exe else [sys.executable, "-m", "dyadiq.cli"]


def test_console_script_exit_codes(work, tmp_path):
    out = tmp_path / "y.npy"
    ok = subprocess.run(_script() + ["run", str(work / "tiny.dyq"), "--input", str(work / "x.npy"), "-o", str(out)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert np.load(out).shape == (1, 10)
    np.save(tmp_path / "bad.npy", np.zeros((3,), np.float32))
    out2 = tmp_path / "z.npy"
    bad = subprocess.run(_script() + ["run", str(work / "tiny.dyq"), "--input", str(tmp_path / "bad.npy"),
                                      "-o", str(out2)], capture_output=True, text=True, timeout=120)
    assert_bad_input(bad.returncode, bad.stderr, out2)
    assert bad.stdout == ""


@pytest.mark.parametrize("ids", [[3, 100], [-1, 2]])
def test_token_ids_outside_the_table_are_refused_in_every_mode(ids):
    """Float mode failed inside numpy (a traceback), a negative id wrapped there but clipped in the integer
    code: out-of-range ids are one InputError whatever the mode."""
    import dyadiq
    from dyadiq.api import run as api_run
    from dyadiq.errors import InputError
    from dyadiq.ir.builder import GraphBuilder
    b = GraphBuilder()
    tok = b.input("ids", (1, 2), "i64")
    y = b.op("gather", [b.const("table", R.randn(100, 4).astype(np.float32)), tok], axis=0)
    g = b.build([b.op("relu", [y])])
    q, _ = dyadiq.quantize(g, np.random.default_rng(0).integers(0, 100, size=(8, 2)), rounding="nearest")
    for graph, mode in ((g, "float"), (q, "simulated"), (q, "integer")):
        with pytest.raises(InputError, match=r"indices must be in \[0, 100\)"):
            api_run(graph, {"ids": np.array([ids], np.int64)}, mode=mode)
    assert api_run(q, {"ids": np.array([[0, 99]], np.int64)}, mode="integer")
