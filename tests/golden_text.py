# SPDX-License-Identifier: Apache-2.0
"""Golden printed-IR files under tests/golden/<pass>/: compare, or rewrite with DYADIQ_UPDATE_GOLDEN=1."""
import os
from pathlib import Path

from dyadiq.ir import print_text

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_text(pass_name: str, before, after) -> str:
    return "# before\n" + print_text(before) + f"# after {pass_name}\n" + print_text(after)


def check_golden_text(pass_name: str, name: str, text: str) -> None:
    """Compare ``text`` with tests/golden/<pass_name>/<name>.dq; rewrite it when DYADIQ_UPDATE_GOLDEN=1."""
    path = GOLDEN / pass_name / f"{name}.dq"
    if os.environ.get("DYADIQ_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with DYADIQ_UPDATE_GOLDEN=1"
    assert text == path.read_text()
