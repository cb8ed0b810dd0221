# SPDX-License-Identifier: Apache-2.0
"""Fuzz the CLI's bad-input contract: N seeded mutants (``tests/fuzz_mutants.py``) through ``dyadiq.cli.main``.

Every case must exit 0 ("loaded") or exit 2 with exactly one ``error:`` line ("refused"); anything else
(exit 1 with a traceback, several lines, a signal) is a crash. Writes bench/results/fuzz.{json,md}.

    nice -n 19 python bench/fuzz.py --cases 10000 --seed 0
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RESULTS = Path(__file__).resolve().parent / "results"


def run_case(argv) -> tuple[int, str]:
    """(exit code, stderr) of one in-process CLI call."""
    from dyadiq import cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(list(argv))
    return rc, err.getvalue()


def classify(rc: int, err: str) -> str:
    """loaded | refused | crash (the CLI contract: 0, or 2 with one ``error:`` line)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("warning:", "mode:"))]
    if rc == 0:
        return "loaded"
    if rc == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return "refused"
    return "crash"


def fuzz(n: int, seed: int, work: Path, artifact: bool = True, log=None) -> dict:
    from fuzz_mutants import cases, make_files

    os.environ.setdefault("DYADIQ_MAX_ELEMENTS", str(1 << 24))      # a mutated dim must not eat the machine
    files = make_files(work, artifact=artifact)
    counts, by_kind, crashes = Counter(), Counter(), []
    t0 = time.perf_counter()
    for i, c in enumerate(cases(seed, n, files)):
        rc, err = run_case(c.argv)
        verdict = classify(rc, err)
        counts[verdict] += 1
        by_kind[(c.kind, verdict)] += 1
        if verdict == "crash":
            crashes.append({"case": i, "kind": c.kind, "what": c.what, "argv": list(c.argv), "rc": rc,
                            "stderr": err[-2000:]})
            if log:
                print(f"CRASH case {i} {c.kind} {c.what}: rc {rc}\n{err[-1500:]}", file=log, flush=True)
        if log and (i + 1) % 500 == 0:
            print(f"{i + 1}/{n} {dict(counts)} {time.perf_counter() - t0:.0f}s", file=log, flush=True)
    return {"cases": n, "seed": seed, "seconds": round(time.perf_counter() - t0, 1), **{k: counts[k] for k in
            ("loaded", "refused", "crash")},
            "by_kind": {f"{k}/{v}": c for (k, v), c in sorted(by_kind.items())}, "crashes": crashes}


def markdown(r: dict) -> str:
    kinds = sorted({k.split("/")[0] for k in r["by_kind"]})
    rows = [f"| {k} | {sum(v for kk, v in r['by_kind'].items() if kk.startswith(k + '/'))} | "
            f"{r['by_kind'].get(k + '/refused', 0)} | {r['by_kind'].get(k + '/loaded', 0)} | "
            f"{r['by_kind'].get(k + '/crash', 0)} |" for k in kinds]
    return "\n".join([
        "# Fuzzing the CLI's bad-input contract",
        "",
        f"`nice -n 19 python bench/fuzz.py --cases {r['cases']} --seed {r['seed']}` ({r['seconds']} s). Each case is a",
        "seeded mutant of a small ONNX CNN, of its quantized `.dyq`, or of a cpu artifact's manifest, run in-process",
        "through `dyadiq.cli.main` (inspect, run in each mode, quantize). *refused*: exit 2 with exactly one",
        "`error:` line; *loaded*: exit 0; *crash*: anything else (a traceback, exit 1, several lines).",
        "",
        "| kind | cases | refused | loaded | crashes |",
        "|---|---:|---:|---:|---:|",
        *rows,
        f"| **all** | **{r['cases']}** | **{r['refused']}** | **{r['loaded']}** | **{r['crash']}** |",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-artifact", action="store_true", help="skip the compiled-artifact cases (no TVM)")
    ap.add_argument("--out", default=str(RESULTS / "fuzz"), help="results path without suffix")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dyadiq-fuzz-") as d:
        r = fuzz(a.cases, a.seed, Path(d), artifact=not a.no_artifact, log=sys.stderr)
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(r))
    print(markdown(r))
    return 1 if r["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
