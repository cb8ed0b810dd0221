# SPDX-License-Identifier: Apache-2.0
"""FileCheck-style tests: each tests/filecheck/*.check names a model (``# MODEL:``) and a ``dyadiq`` command
(``# RUN:``, ``%s`` = the model saved as .dyq); the command's stdout must match the file's CHECK lines
(LLVM FileCheck syntax, checked by the ``filecheck`` package)."""
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dyadiq.cli import main
from dyadiq.ir.serialize import save

HERE = Path(__file__).resolve().parent / "filecheck"
sys.path.insert(0, str(HERE))
from models import MODELS  # noqa: E402

CHECKS = sorted(HERE.glob("*.check"))


def _directive(text: str, key: str) -> str:
    return next(line.split(f"{key}:", 1)[1].strip() for line in text.splitlines() if f"# {key}:" in line)


@pytest.mark.skipif(shutil.which("filecheck") is None, reason="the filecheck package is not installed")
@pytest.mark.parametrize("check", CHECKS, ids=[c.stem for c in CHECKS])
def test_filecheck(check, tmp_path, capsys):
    text = check.read_text()
    model = tmp_path / "model.dyq"
    save(MODELS[_directive(text, "MODEL")](), model)
    argv = [a.replace("%s", str(model)) for a in shlex.split(_directive(text, "RUN"))]
    assert argv[0] == "dyadiq"
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    r = subprocess.run(["filecheck", str(check)], input=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr + "\n--- output ---\n" + out
