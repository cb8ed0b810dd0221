# SPDX-License-Identifier: Apache-2.0
"""``--input-shape`` on the model-reading commands, calibration sample shapes, and ``inspect --check``."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dyadiq import cli  # noqa: E402

R = np.random.default_rng(3)


def dyn_model(path, opset=17):
    """conv 3->4 (3x3, pad 1) -> relu -> Resize x2 (nearest) on x: float[batch, 3, height, width]."""
    w = numpy_helper.from_array(R.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    sc = numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "sc")
    roi = numpy_helper.from_array(np.zeros(0, np.float32), "roi")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Resize", ["r", "roi", "sc"], ["y"], mode="nearest")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, "h2", "w2"])
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[w, sc, roi]),
                          opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(m, path)
    return path


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(rc, err):
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_dynamic_dims_are_named(capsys, tmp_path):
    m = dyn_model(tmp_path / "m.onnx")
    err = one_error(*run_cli(capsys, "inspect", m)[::2])
    assert "input 'x' dim 2 ('height'), dim 3 ('width') are dynamic: give --input-shape x=1,3,H,W" in err
    rc, out, err = run_cli(capsys, "inspect", m, "--input-shape", "x=2,3,8,8", "--format", "json")
    assert rc == 0 and json.loads(out)["inputs"][0]["shape"] == [2, 3, 8, 8]


@pytest.mark.parametrize("spec,msg", [("z=1,3,8,8", "unknown input"), ("x=1,4,8,8", "contradicts the model: dim 1 is 3"),
                                      ("x=1,3,8", "has rank 3"), ("x=1,3,h,8", "dims must be integers"),
                                      ("x", "expected NAME=D0,D1")])
def test_bad_input_shapes_are_one_error_line(capsys, tmp_path, spec, msg):
    m = dyn_model(tmp_path / "m.onnx")
    out = tmp_path / "y.npy"
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    for argv in (("inspect", m), ("run", m, "--input", tmp_path / "x.npy", "-o", out)):
        assert msg in one_error(*run_cli(capsys, *argv, "--input-shape", spec)[::2])
    assert not out.exists()


def test_quantize_takes_sample_shape_from_calib_and_reports_the_conversion(capsys, tmp_path):
    m = dyn_model(tmp_path / "m.onnx", opset=11)
    np.save(tmp_path / "calib.npy", R.standard_normal((4, 3, 6, 10)).astype(np.float32))
    rc, out, err = run_cli(capsys, "quantize", m, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "q.dyq",
                           "--rounding", "nearest", "--calib-method", "minmax", "--report", tmp_path / "r.json")
    assert rc == 0, err
    assert "note: converted ONNX opset 11 to 13 with onnx.version_converter" in err
    assert "note: dynamic batch dim of input 'x' set to 1" in err
    notes = json.loads((tmp_path / "r.json").read_text())["import_notes"]
    assert notes[0].startswith("converted ONNX opset 11")
    rc, out, _ = run_cli(capsys, "inspect", tmp_path / "q.dyq", "--format", "json")
    assert json.loads(out)["inputs"][0]["shape"] == [1, 3, 6, 10]
    assert run_cli(capsys, "inspect", tmp_path / "q.dyq", "--input-shape", "x=1,3,6,10")[0] == 0
    assert "contradicts q.dyq" in one_error(*run_cli(capsys, "inspect", tmp_path / "q.dyq",
                                                      "--input-shape", "x=2,3,6,10")[::2])


def test_inspect_check_reports_each_op(capsys, tmp_path):
    m = dyn_model(tmp_path / "m.onnx")
    rc, out, err = run_cli(capsys, "inspect", m, "--check", "--input-shape", "x=1,3,8,8", "--format", "json")
    assert rc == 0, err
    rep = json.loads(out)
    ops = {r["op"]: r for r in rep["ops"]}
    assert set(ops) == {"conv2d", "relu", "resize"}
    assert all(r["imports"] == "ok" and r["quantizes"] == "ok" for r in ops.values())
    assert ops["conv2d"]["lowers"] == "ok"


def test_inspect_check_passes_an_argmax_output_through(capsys, tmp_path):
    """Integer outputs of an op that integerize lowers (argmax indices) are not refused as unquantizable:
    quantize and compile take the model, so the check says so too."""
    torch = pytest.importorskip("torch")

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            y = self.fc(x)
            return y, y.argmax(1)
    torch.export.save(torch.export.export(M().eval(), (torch.randn(1, 6),)), tmp_path / "m.pt2")
    rc, out, err = run_cli(capsys, "inspect", tmp_path / "m.pt2", "--check", "--format", "json")
    rep = json.loads(out)
    assert rc == 0 and rep["ok"], rep
    assert {r["op"]: r["quantizes"] for r in rep["ops"]}["argmax"] == "ok"


def test_inspect_check_names_an_op_without_a_converter(capsys, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["u"])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unique", ["r"], ["y"])],
                          "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "u.onnx")
    rc, out, _ = run_cli(capsys, "inspect", tmp_path / "u.onnx", "--check", "--format", "json")
    rep = json.loads(out)
    assert rc == 0 and not rep["ok"] and "Unique" in rep["import_error"]
    assert {r["op"]: r["imports"] for r in rep["ops"]} == {"Relu": "ok", "Unique": "no ONNX converter"}


def test_pt2_with_a_dynamic_batch_gets_batch_one(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    b = torch.export.Dim("batch", min=1, max=8)
    ep = torch.export.export(m, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: b},))
    torch.export.save(ep, tmp_path / "m.pt2")
    rc, out, err = run_cli(capsys, "inspect", tmp_path / "m.pt2", "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["inputs"][0]["shape"] == [1, 3, 8, 8] and "dynamic batch dim" in err
    rc, out, err = run_cli(capsys, "inspect", tmp_path / "m.pt2", "--format", "json", "--input-shape", "input=4,3,8,8")
    assert rc == 0 and json.loads(out)["inputs"][0]["shape"] == [4, 3, 8, 8]
    assert "contradicts" in one_error(*run_cli(capsys, "inspect", tmp_path / "m.pt2",
                                                "--input-shape", "input=4,5,8,8")[::2])


def test_run_takes_the_spatial_dims_from_its_input_array(capsys, tmp_path):
    m = dyn_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", R.standard_normal((1, 3, 5, 7)).astype(np.float32))
    rc, out, err = run_cli(capsys, "run", m, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy")
    assert rc == 0, err
    assert np.load(tmp_path / "y.npy").shape == (1, 4, 10, 14)
