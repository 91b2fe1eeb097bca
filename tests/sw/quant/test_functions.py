"""sw.quant.functions: pure quantizers against independent numpy references, the integer
rounding rule against hw.golden.arith."""
import numpy as np
import pytest
import torch

from hw.golden import arith
from hw.errors import BinbertError
from sw import quant as Q
from tests.sw.quant.common import gauss as _gauss


# ---------------------------------------------------------------- numpy references

def np_twn(w: np.ndarray, per_row: bool):
    rows = w.reshape(w.shape[0], -1) if per_row else w.reshape(1, -1)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        delta = 0.7 * np.abs(row).mean()
        keep = np.abs(row) >= delta
        alpha = np.abs(row[keep]).mean()
        out[r] = np.where(keep, alpha * np.where(row >= 0, 1.0, -1.0), 0.0)
    return out.reshape(w.shape)


def np_bwn(w: np.ndarray, per_row: bool, centered: bool):
    rows = w.reshape(w.shape[0], -1)
    alpha = np.abs(rows).mean(axis=1, keepdims=True) if per_row else np.abs(rows).mean()
    c = rows - rows.mean(axis=1, keepdims=True) if centered else rows
    return (alpha * np.where(c >= 0, 1.0, -1.0)).reshape(w.shape)


# ---------------------------------------------------------------- sign / heaviside

def test_sign_zero_is_plus_one_and_matches_golden_bits():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    s = Q.sign(x)
    assert s.tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]
    assert np.array_equal(Q.sign_codes(x).numpy(), arith.sign_bits(x.numpy()))
    assert np.array_equal(arith.bits_to_pm1(Q.sign_codes(x).numpy()), s.numpy().astype(np.int8))


def test_heaviside_zero_is_zero():
    x = _gauss(1000)
    x[:10] = 0.0
    h = Q.heaviside(x)
    assert torch.equal(h, torch.from_numpy((x.numpy() > 0).astype(np.float32)))
    assert h[:10].sum() == 0


# ---------------------------------------------------------------- TWN / BWN

@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("shape", [(7, 13), (64, 32), (5, 3, 4)])
def test_twn_matches_reference(per_row, shape):
    w = _gauss(*shape, seed=sum(shape), dtype=torch.float64)
    got = Q.twn_quantize(w, per_row)
    np.testing.assert_allclose(got.numpy(), np_twn(w.numpy(), per_row), rtol=1e-12, atol=0)
    codes, alpha = Q.twn_codes(w, per_row)
    assert set(codes.unique().tolist()) <= {-1, 0, 1}
    torch.testing.assert_close(codes.to(w.dtype) * alpha, got, rtol=0, atol=0)
    delta, alpha2 = Q.twn_params(w, per_row)
    assert torch.equal(alpha, alpha2) and torch.all(delta < alpha)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("centered", [False, True])
def test_bwn_matches_reference(per_row, centered):
    w = _gauss(33, 20, seed=3, dtype=torch.float64) + 0.3  # an offset makes centring matter
    got = Q.bwn_quantize(w, per_row, centered)
    np.testing.assert_allclose(got.numpy(), np_bwn(w.numpy(), per_row, centered), rtol=1e-12)
    bits, alpha = Q.bwn_codes(w, per_row, centered)
    torch.testing.assert_close((2 * bits.to(w.dtype) - 1) * alpha, got, rtol=0, atol=0)
    if centered:  # every row is balanced around its mean, so both signs appear
        assert torch.all((bits == 1).any(1) & (bits == 0).any(1))


def test_per_row_needs_a_matrix():
    with pytest.raises(BinbertError, match="per_row"):
        Q.twn_quantize(torch.ones(5), per_row=True)


# ---------------------------------------------------------------- LSQ / uniform pure functions

@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_codes_range_and_rounding(bits):
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    step = 0.25
    ks = np.arange(-qn - 3, qp + 3)
    ties = torch.tensor((ks + 0.5) * step, dtype=torch.float64)  # exact halves
    even = Q.lsq_codes(ties, step, bits, "half_even").numpy()
    up = Q.lsq_codes(ties, step, bits, "half_up").numpy()
    np.testing.assert_array_equal(even, np.clip(np.round(ks + 0.5), -qn, qp))
    np.testing.assert_array_equal(up, np.clip(np.floor(ks + 1.0), -qn, qp))
    assert (even != up).any()  # the two rules really differ on ties
    x = _gauss(4000, seed=bits, dtype=torch.float64) * 3
    c = Q.lsq_codes(x, step, bits)
    assert c.min() >= -qn and c.max() <= qp
    inside = (x / step >= -qn) & (x / step <= qp)
    assert torch.all((Q.lsq_quantize(x, step, bits) - x)[inside].abs() <= step / 2 + 1e-12)


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_half_up_codes_equal_golden_requant(bits):
    """Integer mode == docs/arithmetic.md §7 requantizer on the same fixed-point value."""
    shift = 6
    rng = np.random.default_rng(bits)
    z = rng.integers(-(1 << (shift + bits)), 1 << (shift + bits), size=5000)
    z[:50] = (2 * rng.integers(-40, 40, size=50) + 1) << (shift - 1)  # exact ties
    golden = arith.requant(z[None, :], np.array([1]), 0, shift, bits)
    mine = Q.lsq_codes(torch.tensor(z / 2.0 ** shift, dtype=torch.float64), 1.0, bits, "half_up")
    np.testing.assert_array_equal(mine.numpy().astype(np.int64), golden)


@pytest.mark.parametrize("bits", [2, 8])
def test_uniform_quantize(bits):
    qp = 2 ** (bits - 1) - 1
    clip = 1.5
    x = _gauss(3000, seed=7, dtype=torch.float64) * 2
    c = Q.uniform_codes(x, clip, bits)
    assert c.min() >= -qp and c.max() <= qp
    y = Q.uniform_quantize(x, clip, bits)
    s = clip / qp
    inside = x.abs() <= clip
    assert torch.all((y - x)[inside].abs() <= s / 2 + 1e-12)
    assert torch.all(y[~inside] == clip * torch.sign(x[~inside]))



# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("make,field", [
    (lambda: Q.lsq_codes(torch.ones(2), 1.0, 9), "bits"),
    (lambda: Q.lsq_codes(torch.ones(2), 1.0, 4, "floor"), "rounding"),
])
def test_bad_input_names_the_field(make, field):
    with pytest.raises(BinbertError, match=field):
        make()
