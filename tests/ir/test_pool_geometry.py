# SPDX-License-Identifier: Apache-2.0
"""Pool window geometry is computed in one place (ir.ops.window.pool_geometry): type inference, the float and
integer kernels and the TVM backend agree on dilated, ceil-mode windows (the integer copies once dropped
dilation: a 4x4 type with a 3x3 qavgpool result)."""
import numpy as np
import pytest

from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.ir.ops.window import pool_geometry
from dyadiq.passes.integerize import integerize
from dyadiq.targets import compile as build
from quant_helpers import simple_quantize

RNG = np.random.default_rng(3)
DILATED = {"kernel": (2, 2), "stride": (2, 2), "dilation": (2, 2), "ceil_mode": True}


@pytest.mark.parametrize("hw,attrs,out,extra", [
    ((8, 8), DILATED, (4, 4), (1, 1)),
    ((8, 8), {"kernel": (3, 3), "stride": (2, 2), "ceil_mode": True}, (4, 4), (1, 1)),
    ((7, 9), {"kernel": (3, 2), "stride": (2, 3), "pad": (1, 0, 1, 1), "dilation": (1, 2)}, (4, 3), (0, 0)),
])
def test_pool_geometry(hw, attrs, out, extra):
    assert pool_geometry(hw, attrs) == (out, extra)


@pytest.mark.parametrize("op", ["avgpool", "maxpool"])
def test_dilated_ceil_mode_pool_agrees_in_types_interpreter_and_tvm(op):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.op(op, [b.op("relu", [x])], **DILATED)
    g = b.build([y])
    assert g.type_of(y).shape == (1, 3, 4, 4)
    calib = RNG.normal(size=(8, 3, 8, 8)).astype(np.float32)
    q = simple_quantize(g, calib)
    ig = integerize(q)
    xin = calib[:1]
    got = run(ig, [xin])
    assert got.shape == (1, 3, 4, 4)
    scale = q.quant_of(q.outputs[0]).scale[0]
    assert np.max(np.abs(got - run(q, [xin], "simulated"))) <= scale * 1.0001
    np.testing.assert_array_equal(build(ig, "cpu").run([xin]), got)
