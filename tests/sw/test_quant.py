"""sw.quant: pure quantizers against independent numpy references, STE gradients against the
papers' formulas, the integer rounding rule against hw.golden.arith, modules and validation."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw.golden import arith
from hw.errors import BinbertError
from sw import quant as Q


def _gauss(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


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


# ---------------------------------------------------------------- straight-through estimators

def test_weight_stes_are_identity():
    w = _gauss(8, 6, seed=1).requires_grad_()
    g = _gauss(8, 6, seed=2)
    for fn, args in ((Q.TWNSTE, (False,)), (Q.BWNSTE, (True, True))):
        (wg,) = torch.autograd.grad((fn.apply(w, *args) * g).sum(), w)
        assert torch.equal(wg, g)


@pytest.mark.parametrize("fn", [Q.SignSTE, Q.HeavisideSTE])
def test_clipped_stes(fn):
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]).requires_grad_()
    g = torch.arange(1.0, 8.0)
    (xg,) = torch.autograd.grad((fn.apply(x) * g).sum(), x)
    assert xg.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_gradients_follow_esser(bits):
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    x = _gauss(6, 50, seed=bits, dtype=torch.float64) * qp * 0.2
    step = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_()
    g = _gauss(6, 50, seed=100 + bits, dtype=torch.float64)
    out = Q.LSQSTE.apply(xr, step, bits, "half_even")
    gx, gs = torch.autograd.grad((out * g).sum(), (xr, step))
    # reference, elementwise from the paper
    v = x.numpy() / 0.2
    gn = g.numpy()
    ref_gx = np.where((v >= -qn) & (v <= qp), gn, 0.0)
    dv = np.where(v < -qn, -qn, np.where(v > qp, qp, np.round(v) - v))
    ref_gs = (gn * dv).sum() / math.sqrt(x.numel() * qp)
    np.testing.assert_allclose(gx.numpy(), ref_gx, rtol=0, atol=0)
    np.testing.assert_allclose(gs.item(), ref_gs, rtol=1e-12)
    assert (v < -qn).any() and (v > qp).any()  # both saturation branches were exercised


def test_uniform_clip_gradient():
    bits, clip = 4, 1.0
    qp = 2 ** (bits - 1) - 1
    x = _gauss(500, seed=9, dtype=torch.float64) * 1.5
    c = torch.tensor(clip, dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_()
    gx, gc = torch.autograd.grad(Q.UniformSTE.apply(xr, c, bits, "half_even").sum(), (xr, c))
    v = x.numpy() * qp / clip
    inside = np.abs(v) <= qp
    np.testing.assert_array_equal(gx.numpy(), inside.astype(np.float64))
    ref = np.where(inside, (np.round(v) - v) / qp, np.sign(v)).sum()
    np.testing.assert_allclose(gc.item(), ref, rtol=1e-12)
    # outside the clip the output is exactly +-c, so the true derivative there is sign(x)
    eps = 1e-6
    out_only = torch.from_numpy(~inside)
    f = lambda cc: (Q.uniform_quantize(x, cc, bits)[out_only]).sum().item()  # noqa: E731
    assert abs((f(clip + eps) - f(clip - eps)) / (2 * eps) - np.sign(v[~inside]).sum()) < 1e-6


# ---------------------------------------------------------------- modules

def test_lsq_quantizer_initialises_once_and_round_trips():
    aq = Q.ActQuantizer(Q.ActQuantConfig("lsq", bits=4))
    x = _gauss(4, 10, 16, seed=11)
    y = aq(x)
    expect = 2 * x.abs().mean().item() / math.sqrt(7)
    assert bool(aq.initialized) and aq.step.item() == pytest.approx(expect, rel=1e-6)
    torch.testing.assert_close(y, Q.lsq_quantize(x, aq.step.detach(), 4))
    aq(x * 10)  # a second batch must not re-initialise
    assert aq.step.item() == pytest.approx(expect, rel=1e-6)
    codes = aq.codes(x)
    assert codes.dtype == torch.int32 and codes.min() >= -8 and codes.max() <= 7
    torch.testing.assert_close(codes.float() * aq.step.detach(), y.detach())
    fresh = Q.ActQuantizer(Q.ActQuantConfig("lsq", bits=4))
    fresh.load_state_dict(aq.state_dict())
    assert bool(fresh.initialized)
    torch.testing.assert_close(fresh(x * 3), aq(x * 3))


def test_uniform_quantizer_init_and_explicit_init():
    x = _gauss(100, seed=12)
    aq = Q.ActQuantizer(Q.ActQuantConfig("uniform", bits=8))
    aq(x)
    assert aq.clip.item() == pytest.approx(x.abs().max().item())
    aq2 = Q.ActQuantizer(Q.ActQuantConfig("uniform", bits=8, init=2.5))
    aq2(x)
    assert aq2.clip.item() == 2.5 and aq2.scale.item() == pytest.approx(2.5 / 127)


def test_integer_switch_rounds_half_up():
    aq = Q.ActQuantizer(Q.ActQuantConfig("lsq", bits=8, init=1.0))
    ties = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    assert aq(ties).tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0]
    aq.integer = True
    assert aq(ties).tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert aq.codes(ties).tolist() == [-2, -1, 0, 1, 2, 3]


def test_sign_quantizer_codes_are_bits():
    aq = Q.ActQuantizer(Q.ActQuantConfig("sign"))
    x = torch.tensor([-1.0, 0.0, 2.0])
    assert aq(x).tolist() == [-1.0, 1.0, 1.0] and aq.codes(x).tolist() == [0, 1, 1] and aq.bits == 1


def test_sign_threshold_is_a_learned_per_feature_shift():
    """RSign: code = [x >= beta] per feature; beta starts at 0 (plain sign) and its gradient is
    minus the clipped STE's, summed over the batch."""
    aq = Q.ActQuantizer(Q.ActQuantConfig("sign", threshold=True), features=3)
    x = torch.tensor([[0.2, -0.1, 2.0], [0.6, 0.4, -3.0]], requires_grad=True)
    assert aq.beta.tolist() == [0.0, 0.0, 0.0] and aq.codes(x).tolist() == [[1, 0, 1], [1, 1, 0]]
    with torch.no_grad():
        aq.beta.copy_(torch.tensor([0.5, 0.4, -2.5]))
    assert aq.codes(x).tolist() == [[0, 0, 1], [1, 1, 0]]
    y = aq(x)
    assert y.tolist() == [[-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y.backward(g)
    inside = ((x - aq.beta).abs() <= 1).float()  # |x - beta| <= 1 passes the gradient
    assert torch.equal(x.grad, g * inside) and torch.equal(aq.beta.grad, -(g * inside).sum(0))
    assert "threshold=3" in repr(aq)
    with pytest.raises(BinbertError, match="4 features, beta has 3"):
        aq(torch.zeros(2, 4))


@pytest.mark.parametrize("per_row", [True, False])
def test_learned_scale_is_a_gain_on_the_bwn_scale(per_row):
    """learned_scale: w_q = g * alpha * sign(w'), g starting at 1 (plain BWN); its gradient is
    the weight gradient projected on alpha * sign(w') (per row or summed); codes() hands the
    exporter the product g * alpha, the only scale the hardware sees."""
    cfg = Q.WeightQuantConfig("bwn", per_row=per_row, centered=True, learned_scale=True)
    wq = Q.WeightQuantizer(cfg, rows=4)
    w = _gauss(4, 6, seed=3)
    plain = Q.bwn_quantize(w, per_row, centered=True)
    assert torch.equal(wq(w), plain)  # the gain starts at 1
    gain = torch.tensor([0.5, 1.0, 2.0, 3.0]) if per_row else torch.tensor(1.5)
    with torch.no_grad():
        wq.gain.copy_(gain)
    col = gain[:, None] if per_row else gain
    assert torch.allclose(wq(w), plain * col)
    g = _gauss(4, 6, seed=4)
    (wq(w) * g).sum().backward()
    want = (g * plain).sum(1) if per_row else (g * plain).sum()
    assert torch.allclose(wq.gain.grad, want)
    bits, alpha = wq.codes(w)
    assert torch.equal(bits, Q.bwn_codes(w, per_row, True)[0])
    assert torch.allclose(alpha, Q.bwn_params(w, per_row) * col)
    if per_row:
        with pytest.raises(BinbertError, match="weight has 5 rows, gain has 4"):
            wq(_gauss(5, 6, seed=5))


def test_codes_before_init_and_fp_codes_raise():
    with pytest.raises(BinbertError, match="not initialized"):
        Q.ActQuantizer(Q.ActQuantConfig("lsq", bits=4)).codes(torch.ones(3))
    with pytest.raises(BinbertError, match="fp"):
        Q.ActQuantizer().codes(torch.ones(3))


@pytest.mark.parametrize("wm,am", [("fp", "fp"), ("twn", "lsq"), ("bwn", "uniform"), ("bwn", "sign")])
def test_quant_linear_forward_and_shared_parameters(wm, am):
    torch.manual_seed(0)
    lin = nn.Linear(24, 10)
    x = _gauss(3, 5, 24, seed=13)
    q = Q.QuantLinear.from_linear(lin, Q.WeightQuantConfig(wm), Q.ActQuantConfig(am, bits=4))
    assert q.weight is lin.weight and q.bias is lin.bias
    y = q(x)
    xq = {"fp": x, "sign": Q.sign(x)}.get(am)
    if am == "lsq":
        xq = Q.lsq_quantize(x, q.act_quant.step.detach(), 4)
    if am == "uniform":
        xq = Q.uniform_quantize(x, q.act_quant.clip.detach(), 4)
    wq = {"fp": lin.weight, "twn": Q.twn_quantize(lin.weight), "bwn": Q.bwn_quantize(lin.weight)}[wm]
    torch.testing.assert_close(y, F.linear(xq, wq, lin.bias), rtol=1e-6, atol=1e-6)
    if wm == "fp" and am == "fp":
        assert torch.equal(y, lin(x))
    y.square().sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


@pytest.mark.parametrize("method", ["twn", "bwn"])
@pytest.mark.parametrize("per_row", [True, False])
def test_quant_embedding_gather_equals_full_table(method, per_row):
    torch.manual_seed(1)
    emb = nn.Embedding(50, 12, padding_idx=0)
    q = Q.QuantEmbedding.from_embedding(emb, Q.WeightQuantConfig(method, per_row=per_row))
    ids = torch.tensor([[0, 3, 3, 49], [7, 1, 0, 2]])
    full = F.embedding(ids, q.quantized_weight())
    got = q(ids)
    torch.testing.assert_close(got, full, rtol=0, atol=0)
    got.sum().backward()
    assert emb.weight.grad[0].abs().sum() == 0  # padding row gets no gradient
    assert emb.weight.grad[3].abs().sum() > 0


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("make,field", [
    (lambda: Q.WeightQuantConfig("xnor"), "weight method"),
    (lambda: Q.WeightQuantConfig("twn", per_row="yes"), "per_row"),
    (lambda: Q.WeightQuantConfig("twn", centered=True), "centered"),
    (lambda: Q.WeightQuantConfig("twn", learned_scale=True), "learned_scale"),
    (lambda: Q.WeightQuantConfig("bwn", learned_scale="yes"), "learned_scale"),
    (lambda: Q.WeightQuantizer(Q.WeightQuantConfig("bwn", per_row=True, learned_scale=True)), "rows"),
    (lambda: Q.ActQuantConfig("log"), "act method"),
    (lambda: Q.ActQuantConfig("lsq", bits=1), "act bits"),
    (lambda: Q.ActQuantConfig("uniform", bits=9), "act bits"),
    (lambda: Q.ActQuantConfig("lsq", bits="4"), "act bits"),
    (lambda: Q.ActQuantConfig("lsq", bits=True), "act bits"),
    (lambda: Q.ActQuantConfig("lsq", init=-1.0), "init"),
    (lambda: Q.ActQuantConfig("lsq", integer=1), "integer"),
    (lambda: Q.ActQuantConfig("lsq", threshold=True), "threshold"),
    (lambda: Q.ActQuantConfig("sign", threshold=1), "threshold"),
    (lambda: Q.ActQuantizer(Q.ActQuantConfig("sign", threshold=True)), "features"),
    (lambda: Q.ActQuantizer(Q.ActQuantConfig("sign", threshold=True), features=0), "features"),
    (lambda: Q.lsq_codes(torch.ones(2), 1.0, 9), "bits"),
    (lambda: Q.lsq_codes(torch.ones(2), 1.0, 4, "floor"), "rounding"),
    (lambda: Q.WeightQuantizer("twn"), "WeightQuantConfig"),
    (lambda: Q.QuantLinear.from_linear(nn.Conv1d(2, 2, 1)), "nn.Linear"),
])
def test_bad_input_names_the_field(make, field):
    with pytest.raises(BinbertError, match=field):
        make()
