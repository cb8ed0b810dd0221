# SPDX-License-Identifier: Apache-2.0
"""Shared benchmark helpers: agreement metrics, machine description, JSON + markdown output."""
from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import numpy as np


def agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """Top-1 / top-5 agreement with the reference logits and mean per-sample SQNR (dB)."""
    top1 = ref.argmax(1)
    top5_ref = np.argsort(-ref, 1)[:, :5]
    top5_got = np.argsort(-got, 1)[:, :5]
    noise = ((ref - got) ** 2).sum(1)
    sqnr = 10 * np.log10((ref ** 2).sum(1) / np.maximum(noise, 1e-30))
    return {"top1": float((got.argmax(1) == top1).mean()),
            "top5": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_ref, top5_got)])),
            "top1_in_top5": float(np.mean([t in g for t, g in zip(top1, top5_got)])),
            "sqnr_db": float(np.mean(sqnr))}


def cpu_description() -> dict:
    """CPU model name and its vector features (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or "unknown", []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    vec = [f for f in flags if f.startswith(("avx", "sse4", "fma", "amx")) or "vnni" in f]
    return {"model": model, "features": sorted(set(vec)), "cores": _nproc()}


def _nproc() -> int:
    try:
        return int(subprocess.check_output(["nproc"]).strip())
    except Exception:  # noqa: BLE001
        return 0


def write_results(name: str, rows: list[dict], columns: list[str], meta: dict, out_dir: Path) -> str:
    """Write ``<name>.json`` and ``<name>.md`` and return the markdown table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, sort_keys=True))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    md = "\n".join(lines)
    header = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    (out_dir / f"{name}.md").write_text(f"# {name}\n\n{header}\n\n{md}\n")
    return md
