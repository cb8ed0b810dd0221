# SPDX-License-Identifier: Apache-2.0
"""Compile targets: ``compile(q, target)`` -> Artifact; ``load_artifact(dir)`` -> Artifact.

``TARGETS`` maps each target name to a pair of functions ``(build(ig, **options) -> Artifact,
load(folder, manifest) -> Artifact)`` imported only when used. A quantized float graph is integerized
first (``passes.integerize``); an artifact runs bit-exactly like ``interp.run(ig, x)``.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import ArtifactError, InputError
from ..ir.graph import Graph
from .artifact import Artifact, verify_folder

__all__ = ["TARGETS", "Artifact", "compile", "load_artifact"]

TARGETS: dict[str, tuple[str, str, str]] = {   # name -> (module, build function, load function)
    "cpu": ("dyadiq.targets.cpu", "compile_cpu", "load_cpu"),
}


def _target(name: str) -> tuple:
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r} (available: {', '.join(TARGETS)})")
    mod, build, load = TARGETS[name]
    m = importlib.import_module(mod)
    return getattr(m, build), getattr(m, load)


def compile(q_or_ig: Graph, target: str = "cpu", *, mcpu: str | None = None, tune: int = 0,  # noqa: A001
            cache_dir: str | os.PathLike | None = None, **options) -> Artifact:
    """Build a quantized (or already integerized) graph for ``target``.

    ``mcpu``: LLVM CPU name (default: the host's x86-64 level); ``tune``: MetaSchedule trials (0: none);
    ``cache_dir``: tuning database cache (default ``~/.cache/dyadiq/tune``); other options go to the target.
    """
    build, _ = _target(target)
    from ..passes.integerize import integerize
    return build(integerize(q_or_ig), mcpu=mcpu, tune=tune, cache_dir=cache_dir, **options)


def load_artifact(path: str | os.PathLike) -> Artifact:
    """An artifact folder, after verifying its manifest's sha256s and that this machine can run it."""
    manifest = verify_folder(path)
    name = manifest.get("target")
    if name not in TARGETS:
        raise ArtifactError(f"{path}: unknown target {name!r} in manifest (this dyadiq knows "
                            f"{', '.join(TARGETS)})")
    _, load = _target(name)
    return load(Path(path), manifest)
