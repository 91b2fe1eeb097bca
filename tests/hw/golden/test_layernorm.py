"""hw/golden/layernorm.py: the integer LayerNorm within the §17 error budget of float, its
saturation, and widths that hold the worst case."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hw.golden.arith import signed_range
from hw.golden.layernorm import LayerNorm

RNG = np.random.default_rng(1234)


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
