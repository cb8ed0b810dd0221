# SPDX-License-Identifier: Apache-2.0
"""The seam every compile target goes through: a ``Backend`` names itself, declares its own options,
says which integer ops it lowers (and why not the others), builds an artifact and loads one.

``targets.compile`` and the CLI know backends only through this protocol and the ``BACKENDS`` table
(name -> ``"module:attribute"``, imported when first used), so adding a target is one module plus one
line in the table; no target imports another target's or another codegen's internals.

Options are typed: each backend lists ``Option``s; ``parse_options`` fills defaults, converts and
checks ``choices``, and refuses an option that belongs to another target (``--arch`` with ``cpu``)
with one ``InputError`` naming it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from ..errors import CodegenError, InputError
from ..ir.graph import Graph


@dataclass(frozen=True)
class Option:
    """One target option: a keyword in Python, ``--name-with-dashes`` on the CLI."""

    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@runtime_checkable
class Backend(Protocol):
    """What a compile target provides (module-level objects or class instances alike)."""

    name: str
    help: str
    options: tuple[Option, ...]

    def unsupported(self, ig: Graph) -> dict[str, str]:
        """``{op: reason}`` for every op of the integer graph this backend cannot lower (empty: all)."""

    def build(self, ig: Graph, **options) -> Any:
        """An Artifact for the integer graph ``ig`` (options already parsed)."""

    def load(self, folder: Path, manifest: dict) -> Any:
        """The Artifact in a verified folder (checks that this machine can run it first)."""


BACKENDS: dict[str, str] = {   # target name -> "module:attribute" of its Backend
    "cpu": "dyadiq.targets.cpu:BACKEND",
    "hls": "dyadiq.targets.hls:BACKEND",
    "tosa": "dyadiq.targets.tosa:BACKEND",
    "cuda": "dyadiq.targets.cuda:BACKEND",
}


def backend(name: str) -> Backend:
    """The Backend called ``name`` (InputError listing the known ones otherwise)."""
    if name not in BACKENDS:
        raise InputError(f"unknown target {name!r} (available: {', '.join(BACKENDS)})")
    mod, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(mod), attr)


def available() -> dict[str, Backend]:
    """The backends whose modules import here (one that does not is left out, not fatal: choosing it then
    reports its import error)."""
    out = {}
    for name in BACKENDS:
        try:
            out[name] = backend(name)
        except ImportError:
            continue
    return out


def all_options() -> dict[str, list[tuple[str, Option]]]:
    """Option name -> [(backend name, Option)] over every importable backend (for the CLI's flags)."""
    out: dict[str, list[tuple[str, Option]]] = {}
    for name, b in available().items():
        for o in b.options:
            out.setdefault(o.name, []).append((name, o))
    return out


def parse_options(b: Backend, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (None = not given) checked against ``b.options``, with defaults filled in."""
    own = {o.name: o for o in b.options}
    opts = {}
    for k, v in given.items():
        if v is None:
            continue
        o = own.get(k)
        if o is None:
            flag = "--" + k.replace("_", "-")
            where = [n for n in BACKENDS if n != b.name and any(x.name == k for x in backend(n).options)]
            hint = f" (it belongs to target {', '.join(where)})" if where else ""
            raise InputError(f"option {flag} does not apply to target {b.name!r}{hint}")
        try:
            v = o.type(v)
        except (TypeError, ValueError):
            raise InputError(f"option {o.flag}: bad value {v!r}") from None
        if o.choices is not None and v not in o.choices:
            raise InputError(f"option {o.flag}: {v!r} is not one of {', '.join(map(str, o.choices))}")
        opts[k] = v
    for o in b.options:
        opts.setdefault(o.name, o.default)
    return opts


def check_supported(b: Backend, ig: Graph) -> None:
    """CodegenError naming every op of ``ig`` that ``b`` cannot lower, with the reason, before building."""
    bad = b.unsupported(ig)
    if bad:
        what = "; ".join(f"{op}: {why}" for op, why in sorted(bad.items()))
        raise CodegenError(f"target {b.name!r} cannot lower {len(bad)} op(s) of this graph: {what}")
