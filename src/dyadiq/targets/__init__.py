# SPDX-License-Identifier: Apache-2.0
"""Compile targets: ``compile(q, target, **options)`` -> Artifact; ``load_artifact(dir)`` -> Artifact.

Every target is a ``Backend`` (``targets.backend``) listed in ``BACKENDS`` and imported only when used.
A quantized float graph is integerized first (``passes.integerize``); the backend then refuses, before
building anything, every op it cannot lower; an artifact runs bit-exactly like ``interp.run(ig, x)``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArtifactError
from ..ir.graph import Graph
from .artifact import Artifact, verify_folder
from .backend import BACKENDS, Backend, backend, check_supported, parse_options

__all__ = ["BACKENDS", "Artifact", "Backend", "backend", "compile", "load_artifact"]


def compile(q_or_ig: Graph, target: str = "cpu", **options) -> Artifact:  # noqa: A001
    """Build a quantized (or already integerized) graph for ``target`` with that target's ``options``
    (``backend(target).options``; e.g. cpu: ``mcpu``, ``tune``, ``kernels``, ``cache_dir``)."""
    b = backend(target)
    opts = parse_options(b, options)
    from ..passes.integerize import integerize
    ig = integerize(q_or_ig)
    check_supported(b, ig)
    return b.build(ig, **opts)


def load_artifact(path: str | os.PathLike) -> Artifact:
    """An artifact folder, after verifying its manifest's sha256s and that this machine can run it."""
    manifest = verify_folder(path)
    name = manifest.get("target")
    if name not in BACKENDS:
        raise ArtifactError(f"{path}: unknown target {name!r} in manifest (this dyadiq knows "
                            f"{', '.join(BACKENDS)})")
    return backend(name).load(Path(path), manifest)
