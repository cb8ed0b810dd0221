# SPDX-License-Identifier: Apache-2.0
"""The numpy interpreter: ``run(g, inputs, mode="float"|"simulated"|"integer")``."""
from .run import run, run_all, run_batched  # noqa: F401
