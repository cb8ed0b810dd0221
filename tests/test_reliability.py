# SPDX-License-Identifier: Apache-2.0
"""Reliability of what dyadiq writes and runs.

- a loaded cpu artifact's ``run`` from 8 threads at once, and from 2 processes on one artifact folder,
  gives the serial outputs (each thread has its own Relax VM);
- ``dyadiq quantize`` and ``dyadiq compile`` twice on the same input write byte-identical files;
- a quantize or compile killed with SIGKILL while it writes leaves the previous output (or none), never a
  half-written one.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import dyadiq
from dyadiq import cli
from fuzz_mutants import base_onnx

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    import onnx
    d = tmp_path_factory.mktemp("rel")
    onnx.save(base_onnx(resize=False), str(d / "m.onnx"))
    r = np.random.default_rng(0)
    np.save(d / "calib.npy", r.normal(size=(4, 3, 16, 16)).astype(np.float32).reshape(4, 1, 3, 16, 16)[:, 0])
    np.save(d / "xs.npy", r.normal(size=(16, 3, 16, 16)).astype(np.float32))
    fast = ["--rounding", "nearest", "--calib-method", "minmax"]
    assert cli.main(["quantize", str(d / "m.onnx"), "-o", str(d / "q.dyq"), "--calib", str(d / "calib.npy"),
                     *fast]) == 0
    assert cli.main(["compile", str(d / "q.dyq"), "--target", "cpu", "-o", str(d / "art")]) == 0
    return d


# ---- concurrency ------------------------------------------------------------------------------------------
def test_one_artifact_run_from_8_threads_gives_the_serial_outputs(work):
    art = dyadiq.load_artifact(work / "art")
    xs = np.load(work / "xs.npy")[:, None]
    serial = [art.run(x) for x in xs]
    results, errors = {}, []

    def worker(t: int):
        try:
            for k in range(len(xs)):
                i = (k + t) % len(xs)
                results[(t, i)] = art.run(xs[i])
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 8 * len(xs)
    for (t, i), y in results.items():
        assert np.array_equal(y, serial[i]), (t, i)


@pytest.mark.slow
def test_two_processes_run_one_artifact_folder(work, tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, dyadiq, sys
        art = dyadiq.load_artifact({str(work / 'art')!r})
        xs = np.load({str(work / 'xs.npy')!r})[:, None]
        np.save(sys.argv[1], np.stack([art.run(x) for x in xs for _ in range(3)]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"p{i}.npy")]) for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    art = dyadiq.load_artifact(work / "art")
    want = np.stack([art.run(x) for x in np.load(work / "xs.npy")[:, None] for _ in range(3)])
    for i in range(2):
        assert np.array_equal(np.load(tmp_path / f"p{i}.npy"), want)


# ---- reproducibility ----------------------------------------------------------------------------------------
def test_quantize_and_compile_twice_write_identical_files(work, tmp_path, capsys):
    for k in "ab":
        assert cli.main(["quantize", str(work / "m.onnx"), "-o", str(tmp_path / f"{k}.dyq"),
                         "--calib", str(work / "calib.npy")]) == 0          # the CLI defaults (GPTQ, MSE ranges)
        assert cli.main(["compile", str(tmp_path / f"{k}.dyq"), "--target", "cpu", "-o", str(tmp_path / k)]) == 0
    capsys.readouterr()
    assert (tmp_path / "a.dyq").read_bytes() == (tmp_path / "b.dyq").read_bytes()
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n


# ---- SIGKILL while writing ----------------------------------------------------------------------------------
# The child patches the write path to kill itself right there: mid-write of the temporary file, just before
# the rename that publishes it, or just after a folder swap (before the old one is removed).
KILLERS = {
    "mid-write": """
        import io, os, signal
        _open = os.fdopen
        def fdopen(fd, mode="r", *a, **k):
            f = _open(fd, mode, *a, **k)
            if "w" in mode:
                w = f.write
                def write(data):
                    w(data[:len(data) // 2]); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
                f.write = write
            return f
        os.fdopen = fdopen
        import pathlib
        _wt = pathlib.Path.write_text
        def write_text(self, data, *a, **k):
            _wt(self, data[:len(data) // 2]); os.kill(os.getpid(), signal.SIGKILL)
        pathlib.Path.write_text = write_text
    """,
    "before-rename": """
        import os, signal
        def replace(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
        import dyadiq.targets.artifact as A
        A._exchange = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
    """,
    "after-swap": """
        import os, signal, shutil
        _replace = os.replace
        def replace(*a, **k):
            _replace(*a, **k); os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
        shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    """,
}


def _killed_cli(argv: list[str], killer: str) -> int:
    code = textwrap.dedent(KILLERS[killer]) + "\nimport sys\nfrom dyadiq.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, timeout=600)
    return p.returncode


@pytest.mark.slow
@pytest.mark.parametrize("killer", sorted(KILLERS))
def test_sigkill_while_writing_leaves_the_previous_output(work, tmp_path, killer):
    import shutil
    # quantize: the .dyq is absent (none before) or the previous one, or else the complete new one
    out = tmp_path / "q.dyq"
    args = ["quantize", str(work / "m.onnx"), "-o", str(out), "--calib", str(work / "calib.npy"),
            "--rounding", "nearest", "--calib-method", "minmax"]
    new = (work / "q.dyq").read_bytes()                       # what this command writes when it completes
    assert _killed_cli(args, killer) == -signal.SIGKILL
    assert not out.exists() or out.read_bytes() == new
    prev = b"previous"
    out.write_bytes(prev)
    assert _killed_cli(args, killer) == -signal.SIGKILL
    assert out.read_bytes() in (prev, new)
    # compile: the artifact folder is absent (none before), or a complete one that verifies
    art = tmp_path / "art"
    cmd = ["compile", str(work / "q.dyq"), "--target", "cpu", "-o", str(art)]
    assert _killed_cli(cmd, killer) == -signal.SIGKILL
    if art.exists():
        dyadiq.load_artifact(art)
    shutil.rmtree(art, ignore_errors=True)
    shutil.copytree(work / "art", art)
    assert _killed_cli(cmd, killer) == -signal.SIGKILL
    dyadiq.load_artifact(art)                                  # previous or new: complete, every sha256 right


def test_quantize_seed_reaches_the_report_and_fixes_the_bytes(work, tmp_path, capsys):
    import json
    for k in "ab":
        assert cli.main(["quantize", str(work / "m.onnx"), "-o", str(tmp_path / f"{k}.dyq"), "--calib",
                         str(work / "calib.npy"), "--rounding", "nearest", "--wide-acts", "0.5", "--seed", "7",
                         "--report", str(tmp_path / f"{k}.json")]) == 0
    capsys.readouterr()
    assert (tmp_path / "a.dyq").read_bytes() == (tmp_path / "b.dyq").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["options"]["seed"] == 7
