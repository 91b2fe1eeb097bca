"""hw/golden/requant.py: Requant against the contract's requant (docs/arithmetic.md §8), its
clamps, its threshold form, every bad parameter and its z width (the §8 folding of real scales,
hw.golden.fold.from_scales: tests/hw/golden/test_fold.py)."""
from __future__ import annotations

import numpy as np
import pytest

from hw.golden import arith
from hw.golden.arith import signed_bits, signed_range
from hw.golden.requant import Requant
from hw.errors import BinbertError

RNG = np.random.default_rng(1234)


def _fold(real, m_bits=16):
    return arith.fold_scale(np.atleast_2d(real), m_bits=m_bits)


@pytest.mark.parametrize("out_bits", [1, 2, 4, 8])
@pytest.mark.parametrize("terms", [1, 2])
def test_requant_equals_v1_golden(out_bits, terms):
    n, k = 17, 300
    mult, shift = _fold(RNG.uniform(0.001, 0.05, (terms, n)))
    bias = RNG.integers(-2**20, 2**20, n)
    accs = RNG.integers(-k, k + 1, (terms, 9, n))
    op = Requant(mult=mult, bias=bias, shift=shift, acc_bits=arith.acc_width(k, 1), out_bits=out_bits)
    assert np.array_equal(op.compute(accs), arith.requant(accs, mult, bias, shift, out_bits))


def test_requant_clamp_bounds_and_broadcast():
    op = Requant(mult=[[3]], bias=[5], shift=2, acc_bits=12, out_bits=4, lo=0, hi=5)
    acc = np.arange(-100, 100)[None, :, None]
    want = np.clip((acc[0, :, 0] * 3 + 5 + 2) >> 2, 0, 5)
    assert np.array_equal(op.compute(acc)[:, 0], want)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mult=[[1 << 16]], bias=[0], shift=1, acc_bits=8, out_bits=4), "mult"),
    (dict(mult=[[-1]], bias=[0], shift=1, acc_bits=8, out_bits=4), "mult"),
    (dict(mult=[[1]], bias=[0], shift=0, acc_bits=8, out_bits=4), "shift"),
    (dict(mult=[[1]], bias=[0], shift=1, acc_bits=8, out_bits=33), "out_bits"),
    (dict(mult=[[1]], bias=[0], shift=1, acc_bits=8, out_bits=4, lo=-9), "lo"),
    (dict(mult=[[1]], bias=[0], shift=1, acc_bits=50, out_bits=4), "z needs"),
    (dict(mult=[[1.5]], bias=[0], shift=1, acc_bits=8, out_bits=4), "integer"),
])
def test_requant_rejects_bad_params(kwargs, match):
    with pytest.raises(BinbertError, match=match):
        Requant(**kwargs)


@pytest.mark.parametrize("acc_bits", [2, 5, 9])
def test_requant_threshold_form_equals_sign_bit(acc_bits):
    """One term to one bit: [acc >= T] == [acc·M + B >= 0] for every accumulator value, with
    M = 0 rows and biases whose T falls outside the accumulator range on both sides."""
    rng = np.random.default_rng(acc_bits)
    n, mb = 64, 6
    mult = rng.integers(0, 1 << mb, (1, n))
    mult[0, :6] = 0
    bias = rng.integers(-(1 << (acc_bits + mb)), 1 << (acc_bits + mb), n)
    bias[:3], bias[3:6] = 0, -1   # M = 0 with B = 0 (always 1) and with B < 0 (never)
    rq = Requant(mult=mult, bias=bias, shift=4, acc_bits=acc_bits, out_bits=1, m_bits=mb)
    assert rq.is_threshold
    lo, hi = signed_range(acc_bits)
    accs = np.repeat(np.arange(lo, hi + 1)[None, :, None], n, axis=2)
    assert np.array_equal((accs[0] >= rq.thresholds()).astype(np.int64), rq.compute(accs))
    t = rq.thresholds()
    assert t.min() == lo and t.max() == hi + 1  # the clamps are exercised
    assert signed_bits(int(t.min()), int(t.max())) <= rq.t_bits
    # broadcast constants: one threshold
    one = Requant(mult=[[3]], bias=[-7], shift=2, acc_bits=acc_bits, out_bits=1)
    assert one.thresholds().tolist() == [min(3, hi + 1)]  # ceil(7 / 3)
    for multi in (Requant(mult=[[1], [2]], bias=[0], shift=2, acc_bits=4, out_bits=1),
                  Requant(mult=[[1]], bias=[0], shift=2, acc_bits=4, out_bits=2)):
        assert not multi.is_threshold
        with pytest.raises(BinbertError, match="Requant.thresholds: needs out_bits 1 and one term"):
            multi.thresholds()


def test_requant_rejects_out_of_range_accumulators():
    op = Requant(mult=[[1]], bias=[0], shift=1, acc_bits=4, out_bits=4)
    with pytest.raises(BinbertError, match="accumulators outside"):
        op.compute(np.array([[[8]]]))


def test_z_width_holds_extremes():
    p = Requant(mult=[[65535], [65535]], bias=[-(1 << 30)], shift=3, acc_bits=9, out_bits=8)
    zmin = 2 * (-256 * 65535) - (1 << 30)
    assert -(1 << (p.z_bits - 1)) <= zmin
