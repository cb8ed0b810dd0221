# SPDX-License-Identifier: Apache-2.0
"""Merge a partial bench run (e.g. ``--config GPTQ --out /tmp/x``) into ``bench/results``: rows with the same
``config`` (and ``threads``, where present) are replaced, new rows appended, and the command note extended.

    python bench/merge_results.py ptq_accuracy /tmp/x "session 3 (commit abc1234): every GPTQ row"
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402


def key(row: dict) -> tuple:
    return row["config"], row.get("threads")


def main(name: str, partial: Path, note: str, results: Path = Path(__file__).parent / "results") -> None:
    old = json.loads((results / f"{name}.json").read_text())
    header = next(ln for ln in (results / f"{name}.md").read_text().splitlines() if ln.startswith("| "))
    new = json.loads((Path(partial) / f"{name}.json").read_text())
    fresh = {key(r): r for r in new["rows"]}
    rows = [fresh.pop(key(r), r) for r in old["rows"]] + list(fresh.values())
    meta = dict(old["meta"])
    meta["command"] = f"{meta.get('command', '')}; then {new['meta'].get('command', '')} ({note})"
    columns = [c.strip() for c in header.strip("|").split("|")]           # the old table's order, then new keys
    columns += [k for k in dict.fromkeys(k for r in rows for k in r) if k not in columns]
    print(write_results(name, rows, columns, meta, results))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
