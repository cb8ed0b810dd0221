# SPDX-License-Identifier: Apache-2.0
"""Fuzzing the bad-input contract: 600 seeded mutants (``fuzz_mutants``) of an ONNX CNN, its quantized
``.dyq`` and a cpu artifact's manifest, each run in-process through ``dyadiq.cli.main``: every command
exits 0, or exits 2 with one ``error:`` line (``warning:`` lines allowed); none raises, none crashes.
bench/fuzz.py runs the same with 10,000 cases (bench/results/fuzz.md).
"""
from __future__ import annotations

import contextlib
import io

import pytest

from dyadiq import cli
from fuzz_mutants import cases, make_files

N_CASES = 600


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("onnx")
    return make_files(tmp_path_factory.mktemp("fuzz"))


def _run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(list(argv))
    return rc, err.getvalue()


def test_every_mutant_is_loaded_or_refused_with_one_error_line(files, monkeypatch):
    monkeypatch.setenv("DYADIQ_MAX_ELEMENTS", str(1 << 24))
    seen, bad = {"loaded": 0, "refused": 0}, []
    for i, c in enumerate(cases(seed=12345, n=N_CASES, files=files)):
        rc, err = _run(c.argv)
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("warning: ", "mode: "))]
        if rc == 0:
            seen["loaded"] += 1
        elif rc == 2 and len(lines) == 1 and lines[0].startswith("error: "):
            seen["refused"] += 1
        else:
            bad.append(f"case {i} ({c.kind}: {c.what}) {' '.join(c.argv)} -> rc {rc}\n{err[-1500:]}")
    assert not bad, f"{len(bad)} crash(es):\n" + "\n".join(bad[:3])
    assert seen["refused"] >= N_CASES // 2 and seen["loaded"] >= 20, seen     # the mutants reach both sides


def test_a_zero_stride_or_negative_window_names_the_op_and_node(files, tmp_path):
    import onnx
    from onnx import helper

    from fuzz_mutants import base_onnx
    for node_name, attr, value, what in (("conv1", "strides", [0, 1], "stride"),
                                         ("pool1", "kernel_shape", [-2, 2], "kernel")):
        m = base_onnx()
        n = next(n for n in m.graph.node if n.name == node_name)
        a = next(a for a in n.attribute if a.name == attr)
        n.attribute.remove(a)
        n.attribute.append(helper.make_attribute(attr, value))
        path = tmp_path / f"{node_name}.onnx"
        onnx.save(m, str(path))
        rc, err = _run(["inspect", str(path)])
        assert rc == 2 and err.count("\n") == 1 and node_name in err and what in err, err
