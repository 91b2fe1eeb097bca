"""Encoder-level integer ops (docs/arithmetic.md §10-§19) against float references and v1 golden."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hw.golden import arith
from hw.golden.arith import isqrt, signed_bits, signed_range
from hw.golden.attention import Attention
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Heaviside, Softmax, exp2_table
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


def test_isqrt_exact():
    x = np.concatenate([np.arange(0, 5000), RNG.integers(0, 2**62, 5000), (np.arange(1, 3000) ** 2) - 1,
                        np.arange(1, 3000) ** 2, [2**62 - 1]]).astype(np.int64)
    assert np.array_equal(isqrt(x), np.array([math.isqrt(int(v)) for v in x]))


def test_signed_bits():
    for lo, hi in [(-1, 0), (-128, 127), (-129, 0), (0, 128), (-5, 300)]:
        b = signed_bits(lo, hi)
        r = signed_range(b)
        assert r[0] <= lo and hi <= r[1]
        r1 = signed_range(b - 1) if b > 1 else (0, -1)
        assert lo < r1[0] or hi > r1[1]


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


def _ln_op(n, in_frac, gamma, beta, in_bits=17, out_bits=16, out_frac=8, e=4, nf=12, eps=1e-12):
    p = 24 + in_frac + e
    g_frac = 12
    return LayerNorm(n=n, in_bits=in_bits, extra_bits=e, eps=int(math.floor(eps * 2.0 ** (2 * (in_frac + e)) + .5)),
                     recip_shift=p, norm_shift=p - nf, gamma=np.floor(gamma * 2**g_frac + .5).astype(np.int64),
                     beta=np.floor(beta * 2.0 ** (nf + g_frac) + .5).astype(np.int64),
                     out_shift=nf + g_frac - out_frac, out_bits=out_bits)


@pytest.mark.parametrize("n,scale", [(64, 1.0), (384, 20.0), (96, 0.05)])
def test_layernorm_close_to_float(n, scale):
    frac = 8
    gamma = RNG.uniform(0.5, 2.0, n)
    beta = RNG.uniform(-1, 1, n)
    op = _ln_op(n, frac, gamma, beta)
    x = RNG.normal(0, scale, (50, n)) + RNG.normal(0, scale, (50, 1))
    v = np.floor(x * 2**frac + 0.5).astype(np.int64)
    y = op.compute(v) / 2**frac
    xv = v / 2**frac
    ref = gamma * (xv - xv.mean(1, keepdims=True)) / np.sqrt(xv.var(1, keepdims=True) + 1e-12) + beta
    # §17 error budget: output rounding 2^-(F+1); mean rounding 2^-(F+E+1)/σ and u / γ / β rounding
    # (2^-11) times |γ|; σ flooring (relative 2^-(F+E)/σ) and R flooring times |γ·n̂|
    sd = xv.std(1, keepdims=True)
    bound = (2.0 ** -(frac + 1) + np.abs(gamma) * (2.0 ** -(frac + 5) / sd + 2.0**-11)
             + np.abs(ref - beta) * (2.0 ** -(frac + 4) / sd + 2.0**-12))
    assert np.all(np.abs(y - ref) <= bound)


def test_layernorm_constant_row_and_saturation():
    n = 8
    op = _ln_op(n, 8, np.full(n, 4.0), np.zeros(n), out_bits=8)
    assert not op.compute(np.full((1, n), 77)).any()  # σ clamps to 1, d = 0
    y = op.compute(np.array([[-5000, 5000, 0, 0, 0, 0, 0, 0]]))
    lo, hi = signed_range(8)
    assert y.min() == lo and y.max() == hi  # saturates, never wraps


def test_layernorm_widths_hold_worst_case():
    n = 768
    op = _ln_op(n, 8, np.full(n, 1.0), np.zeros(n))
    lo, hi = signed_range(op.in_bits)
    worst = [np.array([[hi] + [lo] * (n - 1)]), np.array([[1] + [0] * (n - 1)]), np.array([[hi, lo] * (n // 2)])]
    for v in worst:
        mu = (2 * (int(v.sum()) << 4) + n) // (2 * n)
        d = (v.astype(object) << 4) - mu
        var = int((d ** 2).sum()) // n
        std = max(math.isqrt(var), 1)
        r = (1 << op.recip_shift) // std
        assert max(abs(int(x) * r) for x in d[0]) < op.d_r_bound
        assert int(np.abs(op.compute(v)).max()) <= hi


def _lin(k, n, in_bits, terms, out):
    bits = RNG.integers(0, 2, (terms, n, k))
    return bits, BinaryLinear(weights=np.stack([arith.pack_bits(b) for b in bits]), k=k, in_bits=in_bits, out=out)


@pytest.mark.parametrize("in_bits", [1, 3, 8])
def test_binary_linear_dot_products(in_bits):
    k, n, t = 70, 5, 2
    out = Requant(mult=np.ones((t, 1), np.int64), bias=[0], shift=1, acc_bits=arith.acc_width(k, in_bits), out_bits=32)
    bits, lin = _lin(k, n, in_bits, t, out)
    lo, hi = (0, 1) if in_bits == 1 else signed_range(in_bits)
    x = RNG.integers(lo, hi + 1, (6, k))
    xv = 2 * x - 1 if in_bits == 1 else x
    want = sum(xv @ (2 * bits[i] - 1).T for i in range(t))
    assert np.array_equal(lin.accumulate(x).sum(0), want)
    assert np.array_equal(lin.accumulate(x, bitserial=True), lin.accumulate(x))  # §4/§5 XNOR-popcount


def test_binary_linear_rejects_wide_input_and_tail_bits():
    out = Requant(mult=[[1]], bias=[0], shift=1, acc_bits=20, out_bits=4)
    _, lin = _lin(10, 3, 2, 1, out)
    with pytest.raises(BinbertError, match="input codes outside"):
        lin.compute(np.full((1, 10), 2))
    w = np.array(lin.weights)
    w[0, 0, 0] |= np.uint64(1 << 20)
    with pytest.raises(BinbertError, match="tail bits"):
        BinaryLinear(weights=w, k=10, in_bits=2, out=out)
    with pytest.raises(BinbertError, match="in_bits"):
        BinaryLinear(weights=lin.weights, k=10, in_bits=9, out=out)


def test_int_linear_and_lut():
    w = RNG.integers(-127, 128, (3, 40))
    x = RNG.integers(-127, 128, (5, 40))
    index = Requant(mult=[[1]], bias=[0], shift=8, acc_bits=24, out_bits=9, lo=-200, hi=55)
    table = np.clip(np.arange(-200, 56) // 4, -8, 7)
    lut = Lut(index=index, table=table, out_bits=4)
    lin = IntLinear(weight=w, w_bits=8, in_bits=8, out=lut)
    acc = x @ w.T
    idx = np.clip((acc + 128) >> 8, -200, 55)
    assert np.array_equal(lin.compute(x), table[idx + 200])
    with pytest.raises(BinbertError, match="entries"):
        Lut(index=index, table=table[:-1], out_bits=4)


@pytest.mark.parametrize("thresholds", [None, [3, -2]])
def test_attention_matches_float_formula(thresholds):
    b, l, h, d = 2, 7, 2, 8
    out = Requant(mult=[[1]], bias=[0], shift=1, acc_bits=20, out_bits=20)
    att = Attention(heads=h, head_dim=d, q_bits=1, k_bits=1, v_bits=1, probs=Heaviside(score_bits=8),
                    context=out, max_len=16, thresholds=thresholds)
    t = [0, 0] if thresholds is None else thresholds
    q, k, v = (RNG.integers(0, 2, (b, l, h * d)) for _ in range(3))
    valid = np.ones((b, l), bool)
    valid[1, 5:] = False
    c = att.compute(q, k, v, valid)
    qv, kv, vv = (2 * a - 1 for a in (q, k, v))
    for bi in range(b):
        for hi in range(h):
            sl = slice(hi * d, (hi + 1) * d)
            p = ((qv[bi][:, sl] @ kv[bi][:, sl].T) > t[hi]) & valid[bi][None]
            want = (p @ vv[bi][:, sl] + 1) >> 1  # Requant shift=1 of ctx (mult 1)
            assert np.array_equal(c[bi][:, sl], want)
    with pytest.raises(BinbertError, match="max_len"):
        att.compute(*(np.zeros((1, 17, h * d), np.int64),) * 3, np.ones((1, 17), bool))


def test_attention_thresholds_are_validated():
    """Per-head thresholds: Heaviside only, one per head, in [-b - 1, b]; they widen S - T."""
    out = Requant(mult=[[1]], bias=[0], shift=1, acc_bits=20, out_bits=20)
    kw = dict(heads=2, head_dim=8, q_bits=1, k_bits=1, v_bits=1, context=out, max_len=16)
    assert Attention(**kw, probs=Heaviside(score_bits=5)).score_bits == 5
    assert Attention(**kw, probs=Heaviside(score_bits=6), thresholds=[-9, 8]).score_bits == 6  # [-16, 17]
    with pytest.raises(BinbertError, match="probs: score_bits=5, scores need 6"):
        Attention(**kw, probs=Heaviside(score_bits=5), thresholds=[-9, 0])
    with pytest.raises(BinbertError, match="thresholds: value 9 above 8"):
        Attention(**kw, probs=Heaviside(score_bits=8), thresholds=[9, 0])
    with pytest.raises(BinbertError, match="3 values for 2 heads"):
        Attention(**kw, probs=Heaviside(score_bits=8), thresholds=[1, 2, 3])
    with pytest.raises(BinbertError, match="thresholds need Heaviside"):
        Attention(**kw, probs=Softmax(score_bits=8, mult=1, shift=1, frac_bits=2, exp_bits=4,
                                       table=exp2_table(2, 4), recip_num=1, recip_shift=1, out_bits=4, hi=7),
                  thresholds=[1, 2])
