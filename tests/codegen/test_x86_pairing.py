# SPDX-License-Identifier: Apache-2.0
"""codegen.x86.pairing: full-range 8-bit weights run on AVX2's saturating ``vpmaddubsw`` kernel only when no
channel pair can leave int16, and reordering a chain's channels to make that so changes no output bit.

- the pair rule is exact at its edges: (127, 1) and (-128, 0) and (127, -128) pass, (127, 2) and (-127, -2)
  do not; an odd channel count pairs its last channel with the zero padding;
- a conv whose stored pairs pass takes the u8 kernel even at 8 bits, and is bit-exact at the saturation
  limit (activations at 0 / 255 next to weights at 127 / 1 and -128 / 0);
- ``conv -> requantize -> depthwise -> requantize -> conv`` whose last conv's 8-bit weights fail as stored
  but pass in another order: the channels are relabelled through the chain (per-channel requantize
  parameters and clamps included), the reader takes the u8 kernel, and both the relabelled graph in the
  interpreter and the compiled artifact equal the original graph bit for bit;
- a chain whose internal value has a second reader is left alone.
"""
import numpy as np
import pytest

from dyadiq.codegen.tvm import to_relax
from dyadiq.codegen.x86.pairing import pair_order, pairable, permute_channels
from dyadiq.interp import run
from dyadiq.ir.builder import GraphBuilder
from dyadiq.targets.cpu import compile_cpu, host_cpu_flags

RNG = np.random.default_rng(11)
needs_avx2 = pytest.mark.skipif("avx2" not in (host_cpu_flags() or set()), reason="needs an AVX2 host")


@pytest.mark.parametrize("pair, ok", [((127, 1), True), ((-128, 0), True), ((127, -128), True),
                                      ((64, 64), True), ((127, 2), False), ((-127, -2), False), ((-64, -65), False)])
def test_the_pair_rule_at_its_edges(pair, ok):
    w = np.zeros((2, 1, 1, 4), np.int64)
    w[1, 0, 0, 2:] = pair
    assert pairable(w) == ok


def test_an_odd_channel_count_pairs_the_last_channel_with_padding():
    assert pairable(np.array([[[[5, -3, 127]]]]))
    assert pair_order(np.array([[[[127, 127, 127]]]])) is None            # two large ones must meet
    order = pair_order(np.array([[[[127, 127, -5]]], [[[1, -128, 127]]]]))
    assert order is not None and sorted(order) == [0, 1, 2]


def test_channels_a_greedy_pass_leaves_alone_are_paired_along_augmenting_paths():
    # most-constrained-first greedy pairs these so that two channels are left with no partner; a perfect
    # pairing exists (found by the augmenting-path pass)
    w = np.array([[0, -60, 0, -60, 30, 127], [-128, 70, 70, -128, 0, 0]])[:, None, None, :]
    order = pair_order(w)
    assert order is not None and sorted(order) == list(range(6))
    assert pairable(w[..., order])


@pytest.mark.parametrize("seed", range(40))
def test_pair_order_on_small_random_layers_agrees_with_a_brute_force_search(seed):
    """An order is found exactly when some pairing of the (up to 8) channels passes."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 9))
    w = rng.choice([-128, -100, -60, -5, 0, 30, 70, 127], size=(int(rng.integers(1, 4)), 1, 1, c))

    def perfect(chs):
        if len(chs) <= 1:
            return True                                   # an odd count's last channel pairs with padding
        a, rest = chs[0], chs[1:]
        return any(pairable(w[..., [a, b]]) and perfect([x for x in rest if x != b]) for b in rest) or (
            len(chs) % 2 == 1 and perfect(rest) and pairable(w[..., [a]]))
    order = pair_order(w)
    if order is not None:
        assert sorted(order) == list(range(c)) and pairable(w[..., order])
    assert (order is not None) == perfect(list(range(c)))


def _projection_weights(o: int, c: int) -> np.ndarray:
    """8-bit rows that reach +-127 on channels placed so that the stored adjacent pairs collide but a
    reordering exists: row r has a large weight on channels 2r and 2r + 1, small ones elsewhere."""
    w = RNG.integers(-20, 21, size=(o, c, 1, 1)).astype(np.int8)
    for r in range(o):
        w[r, (2 * r) % c, 0, 0] = 127
        w[r, (2 * r + 1) % c, 0, 0] = 100
    return w


def _rq(b, acc, name, o, clamp):
    m = RNG.integers(2**30, 2**31, size=(1, o, 1, 1)).astype(np.int32)
    s = RNG.integers(36, 40, size=(1, o, 1, 1)).astype(np.int32)
    ins = [acc, b.const(f"{name}_m", m), b.const(f"{name}_s", s)]
    if clamp:
        ins += [b.const(f"{name}_lo", RNG.integers(-128, -60, size=(1, o, 1, 1)).astype(np.int32)),
                b.const(f"{name}_hi", RNG.integers(60, 128, size=(1, o, 1, 1)).astype(np.int32))]
    return b.op("requantize", ins, in_zp=0, out_zp=-3, qmin=-128, qmax=127, dtype="i8")


def _block(c: int = 16, o: int = 6, second_reader: bool = False):
    """expand 1x1 (8 -> c) -> requantize -> depthwise 3x3 -> requantize (clamped) -> project 1x1 (c -> o)."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 7, 7), "i8")
    e = b.op("qconv2d", [x, b.const("we", RNG.integers(-127, 128, size=(c, 8, 1, 1)).astype(np.int8)),
                         b.const("be", RNG.integers(-3000, 3000, size=c).astype(np.int32))], x_zp=-2)
    e = _rq(b, e, "e", c, clamp=False)
    d = b.op("qconv2d", [e, b.const("wd", RNG.integers(-127, 128, size=(c, 1, 3, 3)).astype(np.int8)),
                         b.const("bd", RNG.integers(-3000, 3000, size=c).astype(np.int32))],
             x_zp=-3, groups=c, pad=(1, 1, 1, 1))
    d = _rq(b, d, "d", c, clamp=True)
    p = b.op("qconv2d", [d, b.const("wp", _projection_weights(o, c))], x_zp=-3)
    y = _rq(b, p, "p", o, clamp=False)
    return b.build([y, d] if second_reader else [y])


def _isas(g):
    return sorted(gv.name_hint for gv in to_relax(g, isa="avx2").functions if gv.name_hint.startswith("dq_gemm"))


def test_a_chain_is_relabelled_so_the_reader_pairs_and_nothing_changes():
    g = _block()
    w4 = g.const("wp").astype(np.int64).transpose(0, 2, 3, 1)
    assert not pairable(w4)
    pg = permute_channels(g)
    assert pairable(pg.const("wp").astype(np.int64).transpose(0, 2, 3, 1))
    assert not np.array_equal(pg.const("we"), g.const("we")) and not np.array_equal(pg.const("d_lo"), g.const("d_lo"))
    x = RNG.integers(-128, 128, size=(1, 8, 7, 7)).astype(np.int8)
    np.testing.assert_array_equal(run(pg, [x]), run(g, [x]))


def test_a_chain_value_with_another_reader_is_left_alone():
    g = _block(second_reader=True)
    assert permute_channels(g) is g


@needs_avx2
def test_the_relabelled_chain_compiles_to_the_u8_kernel_bit_exact():
    g = _block()
    assert "dq_gemm_avx2u8" in _isas(g)
    art = compile_cpu(g, mcpu="x86-64-v3")   # AVX2 without VNNI: the u8 kernel
    for _ in range(3):
        x = np.where(RNG.random((1, 8, 7, 7)) < 0.5, 127, -128).astype(np.int8)
        np.testing.assert_array_equal(art.run([x]), run(g, [x]))


@needs_avx2
def test_pairable_8_bit_weights_are_exact_at_the_saturation_limit():
    """Stored pairs (127, 1) and (-128, 0): with activations at 255 the pair sums are +-32640."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 5, 5), "u8")
    w = np.tile(np.array([127, 1, -128, 0, 127, -128, 1, 127], np.int8), (9, 1)).reshape(9, 8, 1, 1)
    w[1::2] = -w[1::2].clip(-127, 127)
    acc = b.op("qconv2d", [x, b.const("w", w)], x_zp=0)
    y = b.op("requantize", [acc, b.const("m", np.full((1, 9, 1, 1), 2**30, np.int32)),
                            b.const("s", np.full((1, 9, 1, 1), 40, np.int32))],
             in_zp=0, out_zp=0, qmin=-128, qmax=127, dtype="i8")
    g = b.build([y])
    assert _isas(g) == ["dq_gemm_avx2u8"]
    xs = [np.full((1, 8, 5, 5), 255, np.uint8), np.where(RNG.random((1, 8, 5, 5)) < 0.6, 255, 0).astype(np.uint8)]
    art = compile_cpu(g, mcpu="x86-64-v3")   # AVX2 without VNNI: the u8 kernel
    for xv in xs:
        np.testing.assert_array_equal(art.run([xv]), run(g, [xv]))
