# SPDX-License-Identifier: Apache-2.0
"""What a newcomer meets first, through the CLI (one test per item):

- ``run`` takes N samples of a batch-1 model (artifact, ``.dyq``, ``art.run``) and loops;
- ``run q.dyq`` runs integer code by default, and every run says on stderr which mode ran;
- questionable input (all-zero or single-sample calibration data, float64 arrays, an .npz array named for
  no input) is refused or warned about, the same way in ``run`` and ``quantize``;
- a pickled .npy gets one explanation from ``run`` and ``quantize``; ``interp.run`` takes a torch tensor and
  names the type of what it cannot use;
- ``--mcpu native`` compiles; ``--tune`` keeps MetaSchedule's log off stdout; a bad .pt2 is one error line;
- ``from_torch`` on a model in train mode warns; the API and the CLI share the quantize defaults;
- ``import dyadiq`` gives ``dyadiq.interp``, which imports no pass; the README's op list is the registry's.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dyadiq
from dyadiq import cli
from fuzz_mutants import base_onnx

ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error(rc: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    import onnx
    d = tmp_path_factory.mktemp("first")
    onnx.save(base_onnx(resize=False), str(d / "m.onnx"))
    r = np.random.default_rng(0)
    np.save(d / "calib.npy", r.normal(size=(4, 3, 16, 16)).astype(np.float32))
    np.save(d / "eval.npy", r.normal(size=(16, 3, 16, 16)).astype(np.float32))
    assert cli.main(["quantize", str(d / "m.onnx"), "-o", str(d / "q.dyq"), "--calib", str(d / "calib.npy"),
                     "--rounding", "nearest", "--calib-method", "minmax"]) == 0
    return d


@pytest.fixture(scope="module")
def artifact(work) -> Path:
    pytest.importorskip("tvm")
    assert cli.main(["compile", str(work / "q.dyq"), "--target", "cpu", "-o", str(work / "art")]) == 0
    return work / "art"


# ---- batches -------------------------------------------------------------------------------------------------
def test_run_takes_n_samples_of_a_batch_1_model(capsys, work, artifact, tmp_path):
    xs = np.load(work / "eval.npy")
    rc, _, err = _cli(capsys, "run", artifact, "--input", f"x={work / 'eval.npy'}", "-o", tmp_path / "a.npy")
    assert rc == 0, err
    rc, _, err = _cli(capsys, "run", work / "q.dyq", "--input", f"x={work / 'eval.npy'}", "-o", tmp_path / "q.npy")
    assert rc == 0, err
    art = dyadiq.load_artifact(artifact)
    one_by_one = np.concatenate([art.run(x[None]) for x in xs])
    assert np.load(tmp_path / "a.npy").shape == (16, 10)
    assert np.array_equal(np.load(tmp_path / "a.npy"), one_by_one)
    assert np.array_equal(art.run(xs), one_by_one)                          # the Python API loops too
    assert np.array_equal(np.load(tmp_path / "q.npy"), one_by_one)           # integer interpreter == artifact
    np.save(tmp_path / "odd.npy", xs[:, :2])
    assert "expected shape [1, 3, 16, 16] or N x 1 samples" in _one_error(*_cli(
        capsys, "run", artifact, "--input", f"x={tmp_path / 'odd.npy'}", "-o", tmp_path / "b.npy")[::2])


# ---- the default mode ----------------------------------------------------------------------------------------
def test_run_of_a_quantized_graph_is_integer_by_default_and_says_so(capsys, work, tmp_path):
    x = f"x={work / 'eval.npy'}"
    rc, _, err = _cli(capsys, "run", work / "q.dyq", "--input", x, "-o", tmp_path / "d.npy")
    assert rc == 0 and "mode: integer" in err
    rc, _, err = _cli(capsys, "run", work / "q.dyq", "--input", x, "-o", tmp_path / "i.npy", "--mode", "integer")
    assert rc == 0 and err.strip() == "mode: integer"
    assert np.array_equal(np.load(tmp_path / "d.npy"), np.load(tmp_path / "i.npy"))
    rc, _, err = _cli(capsys, "run", work / "m.onnx", "--input", x, "-o", tmp_path / "f.npy")
    assert rc == 0 and "mode: float" in err


# ---- questionable input ------------------------------------------------------------------------------------
def test_questionable_inputs_are_refused_or_warned_alike_in_run_and_quantize(capsys, work, tmp_path):
    q = ["quantize", work / "m.onnx", "-o", tmp_path / "q.dyq", "--rounding", "nearest", "--calib-method", "minmax"]
    np.save(tmp_path / "zeros.npy", np.zeros((4, 3, 16, 16), np.float32))
    assert "all zeros" in _one_error(*_cli(capsys, *q, "--calib", tmp_path / "zeros.npy")[::2])
    assert not (tmp_path / "q.dyq").exists()
    np.save(tmp_path / "one.npy", np.load(work / "calib.npy")[:1])
    rc, _, err = _cli(capsys, *q, "--calib", tmp_path / "one.npy")
    assert rc == 0 and "warning: 1 calibration sample" in err
    f64 = np.load(work / "calib.npy").astype(np.float64)
    np.save(tmp_path / "f64.npy", f64)
    rc, _, err = _cli(capsys, *q, "--calib", tmp_path / "f64.npy")
    assert rc == 0 and "warning:" in err and "float64" in err
    rc, _, err = _cli(capsys, "run", work / "m.onnx", "--input", f"x={tmp_path / 'f64.npy'}", "-o", tmp_path / "y.npy")
    assert rc == 0 and "warning:" in err and "float64" in err
    np.savez(tmp_path / "named.npz", image=np.load(work / "calib.npy"))
    rc, _, err = _cli(capsys, *q, "--calib", tmp_path / "named.npz")
    assert rc == 0 and "warning:" in err and "'image' names no input" in err
    rc, _, err = _cli(capsys, "run", work / "m.onnx", "--input", str(tmp_path / "named.npz"), "-o", tmp_path / "y.npy")
    assert rc == 0 and "warning:" in err and "'image' names no input" in err


def test_a_pickled_npy_gets_one_explanation_from_run_and_quantize(capsys, work, tmp_path):
    bad = tmp_path / "obj.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    e1 = _one_error(*_cli(capsys, "run", work / "m.onnx", "--input", f"x={bad}", "-o", tmp_path / "y.npy")[::2])
    e2 = _one_error(*_cli(capsys, "quantize", work / "m.onnx", "-o", tmp_path / "q.dyq", "--calib", bad)[::2])
    assert e1 == e2 and "pickled Python objects" in e1


def test_interp_run_takes_a_torch_tensor_and_names_what_it_cannot_use(work):
    torch = pytest.importorskip("torch")
    q = dyadiq.load(work / "q.dyq")
    x = np.load(work / "eval.npy")[:1]
    want = dyadiq.interp.run(q, x, mode="simulated")
    assert np.array_equal(dyadiq.interp.run(q, torch.from_numpy(x).requires_grad_(), mode="simulated"), want)
    with pytest.raises(dyadiq.DyadiqError, match="got builtins.set"):
        dyadiq.interp.run(q, {1, 2})


# ---- targets -------------------------------------------------------------------------------------------------
def test_compile_with_mcpu_native(capsys, work, tmp_path):
    pytest.importorskip("tvm")
    rc, out, err = _cli(capsys, "compile", work / "q.dyq", "--target", "cpu", "--mcpu", "native", "-o", tmp_path / "n")
    assert rc == 0, err
    art = dyadiq.load_artifact(tmp_path / "n")
    assert art.manifest["mcpu"] not in ("", "native", "generic")               # resolved to this host's CPU
    x = np.load(work / "eval.npy")[:1]
    assert np.array_equal(art.run(x), dyadiq.interp.run(dyadiq.integerize(dyadiq.load(work / "q.dyq")), x,
                                                        mode="integer"))


@pytest.mark.slow
def test_tune_keeps_metaschedule_log_off_stdout(capfd, work, tmp_path, monkeypatch):
    """MetaSchedule prints its per-round tables (Python and C++, and its workers) on fd 1: they go to tune.log.
    Real tuning takes minutes, so a stand-in prints 180 lines the ways MetaSchedule does."""
    pytest.importorskip("tvm")
    import os

    from tvm.s_tir import meta_schedule as ms

    def fake_tune_relax(mod, params, target, work_dir, max_trials_global, **kw):
        for i in range(90):
            print(f"[INFO] round {i}: python table row")
            os.write(1, f"[INFO] round {i}: C++ table row\n".encode())
    monkeypatch.setattr(ms.relax_integration, "tune_relax", fake_tune_relax)
    rc = cli.main(["compile", str(work / "q.dyq"), "--target", "cpu", "--tune", "2",
                   "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "t")])
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert out.strip().splitlines() == [f"wrote {tmp_path / 't'} (target cpu)"]
    (log,) = (tmp_path / "cache").rglob("tune.log")
    assert len(log.read_text().splitlines()) == 180


def test_a_bad_pt2_is_one_error_line(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a torch archive")
    _one_error(*_cli(capsys, "inspect", bad)[::2])
    good = tmp_path / "good.pt2"                          # a real archive, cut short
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.zeros(1, 4),)), good)
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _one_error(*_cli(capsys, "inspect", bad)[::2])


# ---- the Python API ---------------------------------------------------------------------------------------------
def test_from_torch_warns_about_a_model_in_train_mode():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.warns(dyadiq.DyadiqWarning, match="train mode"):
        dyadiq.from_torch(net, (torch.zeros(1, 3, 8, 8),))


def test_api_and_cli_share_the_quantize_defaults():
    from dyadiq.passes.pipeline import QuantizeOptions
    args = cli.build_parser().parse_args(["quantize", "m.onnx", "-o", "q.dyq", "--calib", "c.npy"])
    d = QuantizeOptions()
    for name in ("per_channel", "act_bits", "calib_method", "equalize", "bias_correct", "rounding", "first_last_bits",
                 "preset"):
        assert getattr(args, name) == getattr(d, name), name
    assert args.weight_bits == d.weight_bits and (d.calib_method, d.rounding) == ("mse", "gptq")


def test_import_dyadiq_gives_the_interpreter_which_imports_no_pass():
    code = ("import sys, dyadiq; dyadiq.interp.run; "
            "bad = [m for m in sys.modules if m.startswith(('dyadiq.passes', 'torch', 'tvm', 'onnx'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_integer_mode_needs_an_integer_graph(work):
    q = dyadiq.load(work / "q.dyq")
    x = np.load(work / "eval.npy")[:1]
    with pytest.raises(dyadiq.DyadiqError, match=r"dyadiq.integerize\(q\)"):
        dyadiq.interp.run(q, x, mode="integer")
    assert dyadiq.interp.run(dyadiq.integerize(q), x, mode="integer").shape == (1, 10)


def test_readme_lists_the_registry_ops():
    sys.path.insert(0, str(ROOT / "docs"))
    from gen_ops import README, section
    text = README.read_text()
    assert section() in text, "README's op list is stale: run python docs/gen_ops.py"
