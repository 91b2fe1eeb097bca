"""hw/golden/softmax.py: the exp2 table, the integer softmax against float, and Heaviside."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hw.golden import arith
from hw.golden.softmax import Heaviside, Softmax, exp2_table
from hw.errors import BinbertError

RNG = np.random.default_rng(1234)


def test_exp2_table_matches_definition():
    t = exp2_table(8, 15)
    assert t[0] == 2**15 and t.shape == (256,)
    f = np.arange(256)
    assert np.all(np.abs(t - 2.0 ** (15 - f / 256)) <= 0.5)
    assert np.all(np.diff(t) <= 0)


def _softmax_op(s_real_per_unit, s_p, bits=8, score_bits=20, g=8, eb=15):
    real = s_real_per_unit / math.log(2.0) * 2.0**g
    (mult,), shift = arith.fold_scale(np.array([real]))
    p = 1
    while math.floor(2.0 ** (p + 1) / s_p + 0.5) < 2.0**40:
        p += 1
    return Softmax(score_bits=score_bits, mult=int(mult), shift=shift, frac_bits=g, exp_bits=eb,
                   table=exp2_table(g, eb), recip_num=int(math.floor(2.0**p / s_p + 0.5)), recip_shift=p,
                   out_bits=bits, hi=(1 << (bits - 1)) - 1)


@pytest.mark.parametrize("bits", [4, 8])
def test_softmax_close_to_float(bits):
    scale = 0.01  # real score per integer unit
    s_p = 1.0 / ((1 << (bits - 1)) - 1)
    op = _softmax_op(scale, s_p, bits)
    scores = RNG.integers(-600, 600, (64, 24))
    valid = RNG.random((64, 24)) < 0.8
    valid[:, 0] = True
    p = op.compute(scores, valid)
    x = np.where(valid, scores * scale, -np.inf)
    ref = np.exp(x - x.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    ref_codes = np.clip(np.floor(ref / s_p + 0.5), 0, op.hi)
    assert np.all(p[~valid] == 0)
    # the only differences are codes next to a rounding boundary: at most one step, rarely
    assert np.abs(p - ref_codes).max() <= 1
    assert (p != ref_codes).mean() < 0.02


def test_softmax_no_valid_key_gives_zero():
    op = _softmax_op(0.01, 1 / 127)
    assert not op.compute(np.zeros((2, 5), dtype=np.int64), np.zeros((2, 5), bool)).any()


def test_softmax_rejects_foreign_table():
    op = _softmax_op(0.01, 1 / 127)
    with pytest.raises(BinbertError, match="table"):
        Softmax(**{**op.__dict__, "table": op.table + 1})


def test_heaviside_is_strict_and_masked():
    s = np.array([[-2, -1, 0, 1, 2]])
    v = np.array([[True, True, True, True, False]])
    assert Heaviside(score_bits=4).compute(s, v).tolist() == [[0, 0, 0, 1, 0]]
