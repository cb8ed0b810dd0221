# SPDX-License-Identifier: Apache-2.0
"""One error hierarchy: every user-facing failure is a DyadiqError subclass.

The CLI turns any DyadiqError into one ``error: ...`` line and exit code 2.
"""
from __future__ import annotations


class DyadiqError(Exception):
    """Root of all dyadiq errors; ``node`` (a Node) prefixes the message with ``[%name op]``."""

    def __init__(self, msg: str, *, node=None):
        if node is not None:
            msg = f"[%{node.name} {node.op}] {msg}"
        super().__init__(msg)


class IRError(DyadiqError):
    """Malformed graph, value or type."""


class VerifyError(IRError):
    """A graph breaks an invariant (types, topological order, op legality)."""


class ParseError(IRError):
    """Printed IR text that cannot be parsed; carries line and column."""

    def __init__(self, msg: str, line: int = 0, col: int = 0):
        super().__init__(f"line {line}:{col}: {msg}" if line else msg)
        self.line, self.col = line, col


class SerializationError(DyadiqError):
    """A .dyq file that is truncated, tampered with or of an unknown version."""


class FrontendError(DyadiqError):
    """A model that cannot be imported (unsupported op, bad file, failed capture)."""


class PassError(DyadiqError):
    """A pass cannot be applied (bad option, inexpressible quantization)."""


class InterpError(DyadiqError):
    """The interpreter got bad inputs (wrong name, shape or dtype)."""


class CodegenError(DyadiqError):
    """Code generation or building an artifact failed."""


class ArtifactError(DyadiqError):
    """A compiled artifact is missing files, tampered with, or cannot run here."""


class InputError(DyadiqError):
    """Bad user input at the API/CLI boundary (files, options, data)."""


class DyadiqWarning(UserWarning):
    """Questionable input that dyadiq accepts (the CLI prints it as one ``warning: ...`` line on stderr)."""
