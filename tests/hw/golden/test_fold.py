"""hw.golden.fold: real scales -> integer constants (docs/arithmetic.md §8, §11-§18), among them
from_scales, the §8 folding of a linear's scales."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hw.errors import BinbertError
from hw.golden import fold
from hw.golden.arith import signed_bits


def test_round_half_up_rounds_ties_towards_plus_infinity():
    got = fold.round_half_up([-2.5, -1.5, -0.5, 0.5, 1.5, 2.49, -2.51])
    assert got.dtype == np.int64
    assert got.tolist() == [-2, -1, 0, 1, 2, 2, -3]


def test_act_range_and_mag():
    assert fold.act_range(1) == (0, 1)
    assert fold.act_range(4) == (-8, 7)
    assert fold.act_range(4, "uniform") == (-7, 7)
    assert [fold.mag(b) for b in (1, 2, 4, 8)] == [1, 2, 8, 128]


def test_requant_approximates_the_real_scale_and_bias():
    rng = np.random.default_rng(0)
    reals = rng.uniform(0.001, 0.01, (2, 5))
    bias = rng.normal(0, 3, 5)
    r = fold.requant(reals, bias, 12, 8, lo=-128, hi=127, m_bits=16)
    assert r.mult.max() < 1 << 16 and r.mult.max() >= 1 << 15  # the largest shift that fits m_bits
    assert np.all(np.abs(r.mult / 2.0**r.shift - reals) <= 2.0 ** -(r.shift + 1))
    assert np.all(np.abs(r.bias / 2.0**r.shift - bias) <= 2.0 ** -(r.shift + 1))
    acc = rng.integers(-2000, 2000, (2, 50, 5))
    want = np.clip(np.floor((acc * reals[:, None, :]).sum(0) + bias + 0.5), -128, 127)
    assert np.abs(r.compute(acc) - want).max() <= 1


def test_from_scales_folds_per_section8():
    n = 6
    rng = np.random.default_rng(2)
    alpha = rng.uniform(0.01, 0.2, (2, n))
    beta = rng.uniform(-3, 3, n)
    s_x, s_y = 0.05, 0.11
    p = fold.from_scales(n=n, acc_bits=10, s_x=s_x, alpha=alpha, beta=beta, s_y=s_y, out_bits=4)
    assert p.terms == 2 and p.mult.max() < (1 << 16)
    assert p.mult.max() >= (1 << 15)  # the largest shift: the top multiplier uses the top bit
    real = s_x * alpha / s_y
    assert np.all(np.abs(p.mult / 2.0**p.shift - real) <= 2.0 ** -(p.shift + 1))
    assert np.array_equal(p.bias, np.floor(beta / s_y * 2.0**p.shift + 0.5).astype(np.int64))
    # the folded integer path approximates the real requantization
    accs = rng.integers(-512, 512, (2, 50, n))
    real_y = np.clip(np.floor((s_x * (alpha[0] * accs[0] + alpha[1] * accs[1]) + beta) / s_y + 0.5), -8, 7)
    assert np.mean(p.compute(accs) == real_y) > 0.95


@pytest.mark.parametrize("kwargs,match", [
    ({"s_x": 0.0}, "s_x=0.0"),
    ({"s_y": float("nan")}, "s_y=nan"),
    ({"alpha": [[0.1, 0.2]]}, "alpha has shape"),
    ({"alpha": [-0.1]}, "alpha must be finite"),
    ({"beta": [float("inf")] * 4}, "beta must be finite"),
])
def test_from_scales_errors(kwargs, match):
    base = dict(n=4, acc_bits=8, s_x=0.1, alpha=[0.2], s_y=0.3, out_bits=4)
    base.update(kwargs)
    with pytest.raises(BinbertError, match=match):
        fold.from_scales(**base)


def test_requant_sign_output_has_no_clamp_and_bad_reals_are_named():
    r = fold.requant([[0.5]], [0.0], 8, 1, lo=-3, hi=3)
    assert r.out_bits == 1 and r.compute(np.array([[[-1, 0, 1]]])).tolist() == [[0, 1, 1]]
    with pytest.raises(BinbertError, match="layer.q: non-finite scale or bias"):
        fold.requant([[math.inf]], [0.0], 8, 4, name="layer.q")
    with pytest.raises(BinbertError, match="layer.q: non-finite scale or bias"):
        fold.requant_to([[1.0]], [math.nan], 1.0, 8, 4, name="layer.q")


def test_requant_to_divides_by_the_output_step_and_takes_the_code_range():
    act = fold.Act(4, 0.25, -8, 7)
    r = fold.requant_to([[0.01, 0.02]], [0.5, -0.5], act.step, 10, act)
    ref = fold.requant(np.array([[0.01, 0.02]]) / 0.25, np.array([0.5, -0.5]) / 0.25, 10, 4, lo=-8, hi=7)
    assert np.array_equal(r.mult, ref.mult) and np.array_equal(r.bias, ref.bias) and r.shift == ref.shift
    assert (r.lo, r.hi) == (-8, 7)
    assert (fold.requant_to([[0.01]], [0.0], 1.0, 10, act, lo=0).lo) == 0  # after a ReLU
    wide = fold.requant_to([[0.01]], [0.0], 1.0, 10, 20)  # a plain signed output
    assert (wide.lo, wide.hi) == (-(1 << 19), (1 << 19) - 1)


def test_requant_to_a_sign_code_keeps_full_multiplier_precision():
    sign = fold.Act(1, 1.0, 0, 1)
    r = fold.requant_to([[1e-6, 3e-6]], [-2e-6, 1e-6], 123.0, 10, sign, m_bits=12)
    assert r.mult.max() >= 1 << 11  # s_out = the largest real, not the (meaningless) 123
    acc = np.arange(-5, 6)[None, :, None].repeat(2, axis=2)
    want = (acc[0] * np.array([1e-6, 3e-6]) + np.array([-2e-6, 1e-6]) >= 0).astype(int)
    assert np.array_equal(r.compute(acc), want)


def test_always_one_and_threshold_bias():
    r = fold.always_one(np.ones((2, 3)), 8)
    assert r.compute(np.array([[[-128, 0, 127]], [[5, -5, 0]]])).tolist() == [[1, 1, 1]]
    assert fold.threshold_bias([0.5, -1.0], 2, "x").tolist() == [-0.5, 1.0]
    with pytest.raises(BinbertError, match="x: 3 thresholds for 2 features"):
        fold.threshold_bias([0.1, 0.2, 0.3], 2, "x")


def test_act_function_kinds():
    x = np.linspace(-3, 3, 13)
    assert np.allclose(fold.act_function("gelu")(x), fold.gelu_tanh(x), atol=2e-3)
    assert fold.act_function("tanh") is np.tanh
    with pytest.raises(BinbertError, match="no lookup table for activation 'swish'"):
        fold.act_function("swish")


def test_lut_covers_the_interval_where_the_code_moves():
    out = fold.Act(4, 0.4, -8, 7)
    x_lo, x_hi = fold.lut_interval(fold.gelu, out)
    grid = np.linspace(-64.0, 20.0, 200001)
    codes = np.clip(fold.round_half_up(fold.gelu(grid) / out.step), -8, 7)
    assert np.all(codes[grid < x_lo] == codes[0])  # constant below the interval
    assert np.all(codes[grid >= x_hi] == out.hi)  # saturated above it
    lut = fold.lut(fold.gelu, "gelu", [[0.01]], [0.0], 12, out)
    assert lut.table.shape == (fold.lut_depth(4),) == (1 << 10,)
    assert lut.function == "gelu" and (lut.lo, lut.hi) == (-8, 7)
    i = np.arange(lut.index.lo, lut.index.hi + 1)
    s_i = (x_hi - x_lo) / (lut.table.size - 2)
    assert lut.index.lo <= x_lo / s_i and lut.index.hi >= x_hi / s_i
    assert np.array_equal(lut.table, np.clip(fold.round_half_up(fold.gelu(i * s_i) / 0.4), -8, 7))


def test_lut_depth():
    assert [fold.lut_depth(b) for b in (1, 4, 5, 8)] == [1 << 10, 1 << 10, 1 << 11, 1 << 12]
    assert fold.lut_depth(8, lut_bits=6) == 64


def test_lut_over_a_fixed_interval():
    out = fold.Act(2, 1.5, -2, 1)
    lut = fold.lut_over(np.tanh, "tanh", [[0.1, 0.2]], [0.0, 0.3], 8, out, x_lo=-2.0, x_hi=2.0, depth=16)
    s_i = 4.0 / 14
    assert (lut.index.lo, lut.index.hi) == (math.floor(-2.0 / s_i), math.floor(-2.0 / s_i) + 15)
    assert np.all(np.abs(lut.index.mult / 2.0**lut.index.shift - np.array([[0.1, 0.2]]) / s_i)
                  <= 2.0 ** -(lut.index.shift + 1))


def test_softmax_constants():
    sm = fold.softmax(9, 0.01 * fold.LOG2E, 1 / 7.5, 4, 7, frac_bits=8, exp_bits=15, recip_bits=40)
    assert abs(sm.mult / 2.0**sm.shift - 0.01 * fold.LOG2E * 2**8) <= 2.0 ** -(sm.shift + 1)
    assert sm.recip_num < 2**40 <= 2 * sm.recip_num or sm.recip_shift == 62
    assert abs(sm.recip_num / 2.0**sm.recip_shift - 7.5) < 1e-9
    assert sm.table.shape == (1 << 8,) and (sm.out_bits, sm.hi) == (4, 7)


def test_head_thresholds_floor_and_clamp():
    t = fold.head_thresholds([0.26, -0.24, 100.0, -100.0], 0.25, 8, "att")
    assert t.dtype == np.int64 and t.tolist() == [1, -1, 8, -9]
    with pytest.raises(BinbertError, match="att: not finite"):
        fold.head_thresholds([math.nan], 0.25, 8, "att")


def test_layer_norm_fits_gamma_in_16_bits():
    gamma = np.array([1.0, -3.5, 0.25])
    ln = fold.layer_norm(gamma, np.zeros(3), 1e-5, in_bits=21, in_frac=12, res_frac=12, out_bits=20)
    g_frac = ln.out_shift + 12 - fold.LN_NORM_FRAC
    assert np.abs(ln.gamma).max() < 1 << 15 <= 2 * np.abs(ln.gamma).max()
    assert np.array_equal(ln.gamma, fold.round_half_up(gamma * 2.0**g_frac))
    assert ln.recip_shift == fold.LN_RECIP_BITS + 12 + fold.LN_EXTRA_BITS
    assert ln.norm_shift == ln.recip_shift - fold.LN_NORM_FRAC
    assert ln.eps == int(fold.round_half_up(1e-5 * 2.0 ** (2 * (12 + fold.LN_EXTRA_BITS))))
    with pytest.raises(BinbertError, match=r"big.ln: gamma up to 1e\+06 leaves no fraction bits"):
        fold.layer_norm([1e6], [0.0], 1e-5, in_bits=21, in_frac=12, res_frac=12, out_bits=20, name="big.ln")


def test_int_linear_rounds_each_row_to_its_own_scale():
    w = np.array([[0.5, -0.25, 0.1], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.0]])
    seen = {}

    def out_fn(reals, bias, acc_bits):
        seen.update(reals=reals, bias=bias, acc_bits=acc_bits)
        return fold.requant(reals, bias, acc_bits, 16)

    lin = fold.int_linear(w, np.zeros(3), in_bits=8, s_in=0.5, w_bits=8, out_fn=out_fn)
    assert lin.weight.tolist() == [[127, -63, 25], [0, 0, 0], [-127, 64, 0]]  # ties (-63.5, 63.5) round up
    assert np.allclose(seen["reals"], 0.5 * np.array([[0.5 / 127, 1.0, 2.0 / 127]]))  # a zero row: scale 1
    bound = 3 * 128 * 128
    assert seen["acc_bits"] == signed_bits(-bound, bound)


def test_binary_linear_scales_the_terms_by_the_input_step():
    bits = [np.array([[1, 0, 1], [0, 0, 1]], dtype=np.uint8)] * 2
    seen = {}

    def out_fn(reals, bias, acc_bits):
        seen.update(reals=reals, acc_bits=acc_bits)
        return fold.requant(reals, bias, acc_bits, 8)

    lin = fold.binary_linear(bits, [np.array([1.0, 2.0]), np.array([0.5, 0.5])], np.zeros(2),
                             fold.Act(4, 0.1, -8, 7), out_fn)
    assert (lin.k, lin.n, lin.terms) == (3, 2, 2)
    assert np.allclose(seen["reals"], [[0.1, 0.2], [0.05, 0.05]])


def test_embedding_frac_is_the_finest_that_fits():
    pos, tt = np.full((4, 2), 0.05), np.zeros((2, 2))
    frac = fold.embedding_frac(pos, tt, table_bits=8, word_table=np.full((3, 2), -0.3))
    assert round(0.3 * 2**frac) <= 127 < round(0.3 * 2 ** (frac + 1))
    # binary word terms: the largest entry is the sum of the terms' largest alphas
    assert fold.embedding_frac(pos, tt, table_bits=8, word_alphas=[np.array([0.2]), np.array([0.1])]) == frac
    with pytest.raises(BinbertError, match="embeddings: values up to 1000 do not fit emb_bits=8"):
        fold.embedding_frac(pos, tt, table_bits=8, word_table=np.full((3, 2), 1000.0))


def test_export_options_defaults_are_the_fold_defaults():
    o = fold.ExportOptions()
    assert (o.m_bits, o.ln_extra_bits, o.ln_norm_frac, o.ln_recip_bits) == (
        fold.M_BITS, fold.LN_EXTRA_BITS, fold.LN_NORM_FRAC, fold.LN_RECIP_BITS)
    assert (o.softmax_frac_bits, o.softmax_exp_bits, o.softmax_recip_bits) == (
        fold.SOFTMAX_FRAC_BITS, fold.SOFTMAX_EXP_BITS, fold.SOFTMAX_RECIP_BITS)


@pytest.mark.parametrize("value", [True, 3, 25, 8.0])
def test_export_options_refuse_a_res_bits_that_is_not_an_int_in_range(value):
    with pytest.raises(BinbertError, match=r"export option res_bits=.* out of range \[4, 24\]"):
        fold.ExportOptions(res_bits=value)
