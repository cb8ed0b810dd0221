# SPDX-License-Identifier: Apache-2.0
"""Op traits live on the registry: every op set that passes, planners and code generators use is derived from
it, and no module keeps a hand-written set that names an op the registry does not have."""
import importlib
import pkgutil

import pytest

import dyadiq
from dyadiq.errors import IRError
from dyadiq.ir.ops import OPS
from dyadiq.ir.ops.registry import is_weighted, ops_with, register


def _modules():
    for info in pkgutil.walk_packages(dyadiq.__path__, "dyadiq."):
        if info.name.startswith(("dyadiq.frontend", "dyadiq.zoo", "dyadiq.cli")):
            continue        # frontends map foreign op names; the zoo builds models
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # an optional toolchain missing on this machine
            continue


def test_no_module_level_op_set_names_an_unregistered_op():
    """A set, frozenset or tuple of strings at module level that is mostly op names (more than half registered)
    must name only registered ops (``"flatten"`` in a set of data-movement ops was such a stale name)."""
    stale = []
    for m in _modules():
        for key, v in vars(m).items():
            if key.startswith("__") or not isinstance(v, (set, frozenset, tuple)) or not v:
                continue
            if not all(isinstance(s, str) for s in v):
                continue
            if 2 * sum(s in OPS for s in v) > len(v):
                stale += [f"{m.__name__}.{key}: {s!r}" for s in v if s not in OPS]
    assert not stale, stale


def test_derived_sets():
    assert ops_with(weight=True, integer=False) == {"conv2d", "linear"}
    assert ops_with(weight=True, integer=True) == {"qconv2d", "qlinear"}
    assert {"relu", "clip", "minimum", "maximum"} <= ops_with(clamp=True)
    assert {"reshape", "transpose", "slice", "pad", "maxpool"} <= ops_with(quant="inherit")
    assert ops_with(quant="shared") == {"concat"}
    assert is_weighted("conv2d") and not is_weighted("add") and not is_weighted("nonexistent")


def test_every_integer_op_declares_its_arithmetic_bound():
    """Only the float boundary (quantize, dequantize) has no bound for ir.verify_integer to prove."""
    missing = sorted(n for n, d in OPS.items() if d.integer and d.acc_bound is None)
    assert missing == ["dequantize", "quantize"]


def test_unknown_traits_and_bad_trait_values_are_rejected_when_registering():
    with pytest.raises(IRError, match="unknown trait"):
        register("never_registered_op", 1, movesdata=True)
    with pytest.raises(IRError, match="quant rule"):
        register("never_registered_op2", 1, quant="borrowed")(lambda: (None, None))
    with pytest.raises(IRError, match="outside its arity"):
        register("never_registered_op3", 1, weight=1)(lambda: (None, None))
    assert not {"never_registered_op2", "never_registered_op3"} & set(OPS)
    with pytest.raises(IRError, match="unknown trait"):
        ops_with(heavy=True)
