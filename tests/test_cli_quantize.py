# SPDX-License-Identifier: Apache-2.0
"""``dyadiq quantize`` as a user runs it.

- the same command twice writes byte-identical ``.dyq`` files;
- ``--rounding gptq`` and ``--wide-acts F`` reach the pipeline and the report; GPTQ is the default rounding
  and ``--rounding adaround`` / ``nearest`` are taken too; MSE-fitted activation ranges are the default
  calibration and ``--calib-method minmax`` is taken;
- bad input (weight bits 1 or 9, empty or wrongly shaped calibration data, a model file that cannot be
  captured, a negative ``--wide-acts``) is one ``error:`` line, exit code 2, and no ``.dyq`` written.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dyadiq
from dyadiq import cli
from dyadiq.ir.serialize import save
from dyadiq.zoo.blocks import BLOCKS


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cliq")
    torch.manual_seed(0)
    net, x = BLOCKS["mbv2_block"]()
    save(dyadiq.from_torch(net, (x,)), d / "m.dyq")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, *x.shape[1:])).astype(np.float32))
    return d


def _quantize(capsys, model, out, *extra):
    rc = cli.main(["quantize", str(model / "m.dyq"), "-o", str(out), "--calib", str(model / "calib.npy"),
                   *map(str, extra)])
    cap = capsys.readouterr()
    return rc, cap.err


def test_same_command_twice_gives_identical_files(capsys, model, tmp_path):
    a, b = tmp_path / "a.dyq", tmp_path / "b.dyq"
    assert _quantize(capsys, model, a)[0] == 0
    assert _quantize(capsys, model, b)[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_rounding_and_wide_acts_reach_the_report(capsys, model, tmp_path):
    rc, err = _quantize(capsys, model, tmp_path / "q.dyq", "--rounding", "gptq", "--wide-acts", "0.5",
                        "--report", tmp_path / "r.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["options"]["rounding"] == "gptq" and report["options"]["wide_acts"] == 0.5
    chosen = report["activations"]["wide"]["chosen"]
    q = dyadiq.load(tmp_path / "q.dyq")
    assert chosen and all(q.quant_of(v).bits == 16 for v in chosen)


@pytest.mark.parametrize("extra, want", [((), "gptq"), (("--rounding", "adaround"), "adaround"),
                                         (("--rounding", "nearest"), "nearest")])
def test_rounding_default_and_choices(capsys, model, tmp_path, extra, want):
    rc, err = _quantize(capsys, model, tmp_path / "q.dyq", *extra, "--report", tmp_path / "r.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["options"]["rounding"] == want == report["rounding"]["method"]
    assert ("round_weights" in report["timings_s"]) == (want != "nearest")


@pytest.mark.parametrize("extra, want", [((), "mse"), (("--calib-method", "minmax"), "minmax")])
def test_calibration_method_default_and_choice(capsys, model, tmp_path, extra, want):
    rc, err = _quantize(capsys, model, tmp_path / "q.dyq", "--rounding", "nearest", *extra,
                        "--report", tmp_path / "r.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["options"]["calib_method"] == want == report["calibration"]["method"]


@pytest.mark.parametrize("extra, calib, match", [
    (("--weight-bits", "1"), None, "weight"),
    (("--weight-bits", "9"), None, "weight"),
    (("--wide-acts", "-0.1"), None, "wide_acts"),
    ((), np.zeros((0, 16, 16, 16), np.float32), "empty|no calibration|0 samples"),
    ((), np.zeros((4, 3, 16, 16), np.float32), "shape"),
])
def test_bad_input_is_one_error_line_and_no_file(capsys, model, tmp_path, extra, calib, match):
    import re
    args = list(extra)
    if calib is not None:
        np.save(tmp_path / "bad.npy", calib)
        rc = cli.main(["quantize", str(model / "m.dyq"), "-o", str(tmp_path / "q.dyq"), "--calib",
                       str(tmp_path / "bad.npy"), *args])
        err = capsys.readouterr().err
    else:
        rc, err = _quantize(capsys, model, tmp_path / "q.dyq", *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and re.search(match, lines[0], re.I), err
    assert not (tmp_path / "q.dyq").exists()


def test_a_model_that_cannot_be_captured(capsys, model, tmp_path):
    (tmp_path / "broken.pt2").write_bytes(b"not a torch.export archive")
    rc = cli.main(["quantize", str(tmp_path / "broken.pt2"), "-o", str(tmp_path / "q.dyq"), "--calib",
                   str(model / "calib.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:")
    assert not (tmp_path / "q.dyq").exists()


def test_a_graph_without_an_integer_form_is_refused_before_anything_is_written(capsys, tmp_path):
    """A power of two activations (no integer lowering) and uniform 16-bit activations on a product of
    two activations (its int32 bound fails): ``compile`` would refuse both, so ``quantize`` does, naming the
    node, and writes nothing."""
    from dyadiq.ir.builder import GraphBuilder
    for op, bits in (("pow", 8), ("mul", 16)):
        b = GraphBuilder()
        x = b.input("x", (1, 4, 6, 6))
        y = b.op("sigmoid", [x])
        save(b.build([b.op(op, [y, b.op("add", [x, b.const("one", np.asarray(1.0, np.float32))])])]),
             tmp_path / "m.dyq")
        np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((4, 4, 6, 6)).astype(np.float32))
        out = tmp_path / f"{op}.dyq"
        rc, err = _quantize(capsys, tmp_path, out, "--act-bits", bits, "--rounding", "nearest")
        assert rc == 2 and not out.exists()
        assert err.count("error:") == 1 and "nothing was written" in err and f" {op}] " in err.replace("qmul", "mul")


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_attention")
    from dyadiq.zoo.blocks import transformer_layer
    net, x = transformer_layer()
    save(dyadiq.from_torch(net, (x,)), d / "m.dyq")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, *x.shape[1:])).astype(np.float32))
    return d


@pytest.mark.parametrize("extra, preset", [((), "transformer"), (("--preset", "none"), None),
                                           (("--rounding", "gptq"), None), (("--calib-method", "mse"), None)])
def test_a_model_with_attention_gets_the_transformer_preset_unless_the_user_chooses(
        capsys, attention, tmp_path, extra, preset):
    rc, err = _quantize(capsys, attention, tmp_path / "q.dyq", *extra, "--report", tmp_path / "r.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["preset"] == preset
    assert ("note: the model has attention" in err) == (preset is not None)
    assert report["options"]["calib_method"] == ("minmax" if preset else "mse")


def test_a_cnn_keeps_the_general_defaults(capsys, model, tmp_path):
    rc, err = _quantize(capsys, model, tmp_path / "q.dyq", "--report", tmp_path / "r.json")
    assert rc == 0 and "note:" not in err
    assert json.loads((tmp_path / "r.json").read_text())["preset"] is None
