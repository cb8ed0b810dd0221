# SPDX-License-Identifier: Apache-2.0
"""Issue: activation precision per tensor — a few 16-bit activations next to 8-bit ones.

- ``act_bits_by_value`` gives exactly the named values the wider QuantType, the others keep ``act_bits``;
- the mixed graph integerizes (int16 next to int8 tensors) and its integer code equals simulated mode's
  codes, and the cpu artifact is bit-exact with the integer interpreter;
- widening the activations that cost most lowers the output error;
- a name that is not a float activation is one clear error.
"""
import numpy as np
import pytest
import torch

import dyadiq
from dyadiq.errors import PassError
from dyadiq.interp import run
from dyadiq.interp.run import run_batched
from dyadiq.zoo.blocks import BLOCKS


@pytest.fixture(scope="module")
def mbv2():
    torch.manual_seed(0)
    model, x = BLOCKS["mbv2_block"]()
    g = dyadiq.from_torch(model, (x,))
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, *x.shape[1:])).astype(np.float32)
    return g, calib


def _widths(q):
    return {k: v.quant.bits for k, v in q.values.items() if v.quant is not None and not q.is_const(k)}


def test_named_values_get_the_wider_type_and_the_rest_keep_act_bits(mbv2):
    g, calib = mbv2
    q8, _ = dyadiq.quantize(g, calib, calib_method="minmax", rounding="nearest")
    acts = sorted(_widths(q8))
    wide = {acts[0]: 16, acts[len(acts) // 2]: 16}
    q, report = dyadiq.quantize(g, calib, act_bits_by_value=wide, calib_method="minmax", rounding="nearest")
    widths = _widths(q)
    assert {k for k, b in widths.items() if b == 16} == set(wide)
    assert all(b == 8 for k, b in widths.items() if k not in wide)
    assert report["activations"]["bits_by_value"] == wide


def test_mixed_widths_compile_bit_exact(mbv2):
    g, calib = mbv2
    q8, _ = dyadiq.quantize(g, calib, calib_method="minmax", rounding="nearest")
    wide = {k: 16 for k in sorted(_widths(q8))[::2]}
    q, _ = dyadiq.quantize(g, calib, act_bits_by_value=wide, calib_method="minmax", rounding="nearest")
    ig = dyadiq.integerize(q)
    dtypes = {ig.type_of(v).dtype for n in ig.nodes for v in n.outputs}
    assert {"i8", "i16"} <= dtypes
    art = dyadiq.compile(ig, target="cpu")
    batch = g.type_of(g.inputs[0]).shape[0]
    for i in range(0, 4 * batch, batch):
        x = calib[i:i + batch]
        assert np.array_equal(art.run(x), run(ig, x))


def test_widening_every_activation_lowers_the_error(mbv2):
    g, calib = mbv2
    ref = run_batched(g, calib, "float")
    q8, _ = dyadiq.quantize(g, calib, act_bits=4, calib_method="minmax", rounding="nearest")
    q, _ = dyadiq.quantize(g, calib, act_bits=4, act_bits_by_value={k: 16 for k in _widths(q8)}, calib_method="minmax", rounding="nearest")
    err = lambda qq: float(np.mean((run_batched(qq, calib, "simulated") - ref) ** 2))
    assert err(q) < err(q8)


@pytest.mark.parametrize("wide, msg", [({"no_such_value": 16}, "not a float activation"),
                                       ({"x": 17}, "must be 2..16")])
def test_bad_widths_are_refused(mbv2, wide, msg):
    g, calib = mbv2
    name = next(iter(wide))
    wide = {g.inputs[0] if name == "x" else name: wide[name]}
    with pytest.raises(PassError, match=msg):
        dyadiq.quantize(g, calib, act_bits_by_value=wide, calib_method="minmax", rounding="nearest")
