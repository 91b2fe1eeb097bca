"""hw/golden/arith.py — the executable integer contract — against plain-integer reference computations."""
import math
from fractions import Fraction

import numpy as np
import pytest

from hw.golden import arith
from hw.golden.arith import isqrt, signed_bits, signed_range
from hw.errors import BinbertError


@pytest.mark.parametrize("k", [1, 7, 63, 64, 65, 130])
def test_pack_unpack_roundtrip(k):
    rng = np.random.default_rng(k)
    bits = rng.integers(0, 2, (3, 4, k), dtype=np.uint8)
    packed = arith.pack_bits(bits)
    assert packed.dtype == np.uint64 and packed.shape == (3, 4, arith.n_words(k))
    assert np.array_equal(arith.unpack_bits(packed, k), bits)
    # element j at bit j % 64 of word j // 64, tail bits zero
    flat = bits.reshape(-1, k)
    for row, words in zip(flat, packed.reshape(-1, arith.n_words(k))):
        as_int = sum(int(w) << (64 * i) for i, w in enumerate(words))
        assert as_int == sum(int(b) << j for j, b in enumerate(row))


def test_pack_errors():
    with pytest.raises(BinbertError, match="at least one axis"):
        arith.pack_bits(np.uint8(1))
    with pytest.raises(BinbertError, match="0 or 1"):
        arith.pack_bits(np.array([0, 2]))
    with pytest.raises(BinbertError, match="cannot hold k=65"):
        arith.unpack_bits(np.zeros((1, 1), dtype=np.uint64), 65)


def test_sign_and_pm1():
    assert arith.sign_bits(np.array([-1.5, -0.0, 0.0, 2.0])).tolist() == [0, 1, 1, 1]
    assert arith.bits_to_pm1(np.array([0, 1])).tolist() == [-1, 1]


@pytest.mark.parametrize("a_bits", range(2, 9))
def test_bit_planes_reconstruct(a_bits):
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1))
    codes = np.arange(lo, hi).reshape(1, -1)
    planes = arith.bit_planes(codes, a_bits)
    c = arith.plane_weights(a_bits)
    assert c.sum() == -1  # the identity behind y = sum_b c_b p_b + N_w (§5)
    assert np.array_equal(np.tensordot(c, planes.astype(np.int64), axes=1), codes)


@pytest.mark.parametrize("args,match", [
    ((np.array([0]), 1), "a_bits=1 unsupported"),
    ((np.array([0]), 9), "a_bits=9 unsupported"),
    ((np.array([0.5]), 2), "must be integers"),
    ((np.array([2]), 2), r"outside the 2-bit range \[-2, 1\]"),
    ((np.array([-3]), 2), "outside"),
])
def test_check_codes_errors(args, match):
    with pytest.raises(BinbertError, match=match):
        arith.check_codes(*args)


def test_acc_width_bounds():
    for k in (1, 2, 3, 64, 100, 768):
        for a in range(1, 9):
            w = arith.acc_width(k, a)
            bound = k if a == 1 else k * (1 << (a - 1))
            assert -(1 << (w - 1)) <= -bound and bound <= (1 << (w - 1)) - 1
            assert bound > (1 << (w - 2)) - 1 or -bound < -(1 << (w - 2))  # and no wider than needed
    with pytest.raises(BinbertError, match="k=0"):
        arith.acc_width(0, 1)
    with pytest.raises(BinbertError, match="a_bits=0"):
        arith.acc_width(8, 0)


@pytest.mark.parametrize("k", [1, 63, 65, 201])
def test_gemm_w1a1_is_integer_matmul(k):
    rng = np.random.default_rng(k)
    x = rng.integers(0, 2, (9, k))
    w = rng.integers(0, 2, (5, k))
    y = arith.gemm_w1a1(arith.pack_bits(x), arith.pack_bits(w), k)
    assert y.dtype == np.int64
    assert np.array_equal(y, (2 * x - 1) @ (2 * w - 1).T)
    assert np.array_equal(arith.gemm_w1a(x, arith.pack_bits(w), k, 1), y)


@pytest.mark.parametrize("a_bits", range(2, 9))
def test_gemm_w1a_is_integer_matmul(a_bits):
    k = 67
    rng = np.random.default_rng(a_bits)
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1))
    x = rng.integers(lo, hi, (6, k))
    x[0] = lo
    w = rng.integers(0, 2, (4, k))
    w[0] = 0
    y = arith.gemm_w1a(x, arith.pack_bits(w), k, a_bits)
    assert np.array_equal(y, x @ (2 * w - 1).T)
    assert np.abs(y).max() < (1 << (arith.acc_width(k, a_bits) - 1))


def test_neg_count_and_gemm_errors():
    w = np.array([[1, 0, 0, 1, 0]])
    assert arith.neg_count(arith.pack_bits(w), 5).tolist() == [3]
    with pytest.raises(BinbertError, match="packed operand"):
        arith.gemm_w1a1(np.zeros((1, 1), dtype=np.int64), arith.pack_bits(w), 5)
    with pytest.raises(BinbertError, match="expected"):
        arith.gemm_w1a(np.zeros((2, 4), dtype=np.int64), arith.pack_bits(w), 5, 2)
    with pytest.raises(BinbertError, match="do not match"):
        arith.hamming(np.zeros((1, 1), dtype=np.uint64), np.zeros((1, 2), dtype=np.uint64))


def _requant_ref(z, shift, out_bits):
    """Round half up with exact rationals, then clamp (independent of hw.golden.arith's shifts)."""
    q = math.floor(Fraction(int(z), 1 << shift) + Fraction(1, 2))
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return min(max(q, lo), hi)


@pytest.mark.parametrize("shift", [1, 2, 7])
@pytest.mark.parametrize("out_bits", [2, 4, 8])
def test_requant_rounding_and_clamp(shift, out_bits):
    rng = np.random.default_rng(shift * 10 + out_bits)
    accs = rng.integers(-3000, 3000, (2, 40, 3))
    m = rng.integers(0, 50, (2, 3))
    b = rng.integers(-500, 500, 3)
    got = arith.requant(accs, m, b, shift, out_bits)
    z = accs[0] * m[0] + accs[1] * m[1] + b
    want = np.vectorize(lambda v: _requant_ref(v, shift, out_bits))(z)
    assert np.array_equal(got, want)
    # exact ties go up: z = (2j+1) * 2**(shift-1)
    ties = np.array([(2 * j + 1) << (shift - 1) for j in range(-3, 3)])
    got = arith.requant(ties[None], np.array([1]), 0, shift, 8)
    assert got.tolist() == [_requant_ref(t, shift, 8) for t in ties]
    assert got.tolist() == [j + 1 for j in range(-3, 3)]


def test_requant_threshold_and_errors():
    accs = np.array([[-1, 0, 1]])
    assert arith.requant(accs, np.array([1]), 0, 1, 1).tolist() == [0, 1, 1]
    with pytest.raises(BinbertError, match="2 accumulator terms but 1"):
        arith.requant(np.zeros((2, 3)), np.array([1]), 0, 1, 4)
    with pytest.raises(BinbertError, match="multipliers must be >= 0"):
        arith.requant(accs, np.array([-1]), 0, 1, 4)
    with pytest.raises(BinbertError, match="shift=0"):
        arith.requant(accs, np.array([1]), 0, 0, 4)
    with pytest.raises(BinbertError, match="out_bits=9"):
        arith.requant(accs, np.array([1]), 0, 1, 9)


def test_fold_scale():
    real = np.array([0.013, 0.2, 1.7, 0.0])
    m, s = arith.fold_scale(real)
    assert m.max() < (1 << 16) and np.array_equal(m, np.floor(real * 2.0**s + 0.5))
    # the largest shift: one more bit would overflow M_BITS (or S is at its cap of 40)
    assert s == 40 or np.floor(real.max() * 2.0 ** (s + 1) + 0.5) >= (1 << 16)
    m, s = arith.fold_scale(np.array([1e-9]))
    assert s == 40
    m, s = arith.fold_scale(np.zeros(3))
    assert m.tolist() == [0, 0, 0] and s == 1
    m, s = arith.fold_scale(np.array([0.5, 0.25]), m_bits=4)
    assert s == 4 and m.tolist() == [8, 4]


@pytest.mark.parametrize("real,match", [
    (np.array([-0.1]), "finite and >= 0"),
    (np.array([np.nan]), "finite"),
    (np.array([]), "finite"),
    (np.array([1e6]), "needs more than m_bits=16"),
])
def test_fold_scale_errors(real, match):
    with pytest.raises(BinbertError, match=match):
        arith.fold_scale(real)


RNG = np.random.default_rng(1234)


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
