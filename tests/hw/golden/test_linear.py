"""hw/golden/linear.py: BinaryLinear's dot products (word-level and XNOR-popcount), its input
checks, and IntLinear into a Lut."""
from __future__ import annotations

import numpy as np
import pytest

from hw.golden import arith
from hw.golden.arith import signed_range
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.requant import Lut, Requant
from hw.errors import BinbertError

RNG = np.random.default_rng(1234)


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
