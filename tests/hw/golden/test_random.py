"""hw.golden.random: seeded random golden ops, folded through hw.golden.fold."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hw.errors import BinbertError
from hw.golden import arith, fold
from hw.golden import random as R
from hw.golden.softmax import Heaviside, Softmax


def rng(seed=7):
    return np.random.default_rng(seed)


def test_random_requant_folds_its_draws_through_fold_requant():
    got = R.random_requant(rng(), rows=6, terms=2, acc_bits=12, out_bits=4, real_scale=0.02, bias_scale=0.5)
    g = rng()
    reals = g.uniform(0.5, 1.5, (2, 6)) * 0.02
    want = fold.requant(reals, g.normal(0, 0.5, 6), 12, 4, lo=-8, hi=7)
    assert np.array_equal(got.mult, want.mult) and np.array_equal(got.bias, want.bias)
    assert (got.shift, got.lo, got.hi) == (want.shift, -8, 7)


def test_random_requant_code_ranges():
    kw = dict(rows=4, terms=1, acc_bits=10, real_scale=0.01)
    assert (R.random_requant(rng(), out_bits=4, kind="uniform", **kw).lo) == -7
    assert (R.random_requant(rng(), out_bits=4, lo=0, **kw).lo) == 0  # after a ReLU
    wide = R.random_requant(rng(), out_bits=16, **kw)
    assert (wide.lo, wide.hi) == (-(1 << 15), (1 << 15) - 1)
    assert R.random_requant(rng(), out_bits=1, lo=0, **kw).out_bits == 1
    assert R.random_requant(rng(), out_bits=4, per_row=False, **kw).mult.shape == (1, 1)


def test_random_layernorm_is_fold_layer_norm_of_its_draws():
    got = R.random_layernorm(24, rng(), eps=1e-3)
    g = rng()
    want = fold.layer_norm(g.normal(1.0, 0.4, 24), g.normal(0.0, 0.5, 24), 1e-3, in_bits=R.RES_BITS + 1,
                           in_frac=R.RES_FRAC, res_frac=R.RES_FRAC, out_bits=R.RES_BITS)
    assert np.array_equal(got.gamma, want.gamma) and np.array_equal(got.beta, want.beta)
    assert (got.eps, got.out_shift, got.recip_shift) == (want.eps, want.out_shift, want.recip_shift)


def test_ln_inputs_start_with_the_edge_rows_and_stay_in_range():
    ln = R.random_layernorm(16, rng())
    x = R.ln_inputs(ln, rng(), 30)
    lo, hi = -(1 << (ln.in_bits - 1)), (1 << (ln.in_bits - 1)) - 1
    assert x.shape == (12 + 30, 16) and x.min() >= lo and x.max() <= hi
    assert not x[0].any() and (x[1] == hi).all() and (x[2] == lo).all()


def test_random_gelu_lut_samples_gelu_over_its_index():
    lut = R.random_gelu_lut(rng(), rows=5, terms=2, acc_bits=12, out_bits=4, real_scale=0.05, index_bits=8)
    assert lut.table.size == 256 and lut.function == "gelu"
    s_out = 3.0 / 7
    s_i = (7.5 * s_out + 4.0) / 254
    i = np.arange(lut.index.lo, lut.index.hi + 1)
    assert np.array_equal(lut.table, np.clip(fold.round_half_up(R.gelu(i * s_i) / s_out), -8, 7))
    assert lut.table[0] == 0 and lut.table[-1] == 7  # gelu(-4) ~ 0; saturated at the top


def test_random_softmax_spreads_the_scores_over_about_12_nats():
    sm = R.random_softmax(rng(), score_bits=9, p_bits=4)
    assert isinstance(sm, Softmax) and sm.hi == 7
    nats = sm.mult / 2.0**sm.shift / 2**sm.frac_bits * math.log(2.0) * 255
    assert 6.0 <= nats <= 18.0


def test_score_rows_edge_cases():
    s, v = R.score_rows(rng(), 6, 8, 10)
    assert s.shape == v.shape == (16, 8)
    assert not v[0].any() and v[1].sum() == 1 and (s[2] == 31).all() and (s[4] == -32).all()
    assert s[5, 0] == 31 and not v[5, 0]


@pytest.mark.parametrize("out", ["code", "gelu", "res"])
def test_random_binary_linear_has_the_extreme_rows(out):
    lin = R.random_binary_linear(rng(), k=40, n=6, terms=2, in_bits=2, out=out)
    bits = arith.unpack_bits(lin.weights[0], 40)
    assert bits.shape == (6, 40) and bits[0].all() and not bits[1].any()
    if out == "res":
        assert (lin.out.lo, lin.out.hi) == (-(1 << 15), (1 << 15) - 1)
    if out == "gelu":
        assert lin.out.function == "gelu"


def test_random_codes_and_res_inputs_ranges():
    c = R.random_codes(rng(), 4, (200,))
    assert c.min() >= -8 and c.max() <= 7
    r = R.res_inputs(rng(), 50, 16, scale=100.0)
    assert r.min() >= -(1 << 15) and r.max() <= (1 << 15) - 1


def test_input_requant_sign_thresholds_and_codes():
    sign = R.input_requant(rng(), 1, n=8)
    assert sign.out_bits == 1 and sign.bias.shape == (8,) and sign.mult.tolist() == [[1]]
    code = R.input_requant(rng(), 4)
    assert (code.lo, code.hi, code.bias.tolist()) == (-8, 7, [0])


def test_random_encoder_layer_modes():
    bi = R.random_encoder_layer(rng(), mode="bi", heads=4, hidden=32, x_bits=1, c_bits=1, f_bits=1,
                                g_bits=1, head_thresholds=True)
    assert isinstance(bi.attention.probs, Heaviside)
    t = bi.attention.thresholds
    d = 8
    assert t.shape == (4,) and (np.abs(t) <= d + 1).all()
    assert sum(v in (-d - 1, d) for v in t) >= 1  # above two heads one is at the range's edge
    with pytest.raises(BinbertError, match="head_thresholds needs mode='bi'"):
        R.random_encoder_layer(rng(), head_thresholds=True)
    relu = R.random_encoder_layer(rng(), act="relu")
    assert relu.ffn_in.out.lo == 0


def test_random_layer_pair_is_the_split_and_the_bibert_layer_in_that_order():
    split, bi = R.random_layer_pair(rng(R.CONFIG_SEED), hidden=16, heads=2, ffn=32, max_len=4)
    assert split.query.terms == 2 and isinstance(split.attention.probs, Softmax)
    assert bi.query.terms == 1 and isinstance(bi.attention.probs, Heaviside)
    again, _ = R.random_layer_pair(rng(R.CONFIG_SEED), hidden=16, heads=2, ffn=32, max_len=4)
    assert np.array_equal(again.query.weights, split.query.weights)
