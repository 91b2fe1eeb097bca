"""sw.quant.modules: the quantizer modules (initialisation, codes, learned thresholds and gains),
QuantLinear / QuantEmbedding against the pure functions, and their validation."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw.errors import BinbertError
from sw import quant as Q
from tests.sw.quant.common import gauss as _gauss

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
    (lambda: Q.WeightQuantizer(Q.WeightQuantConfig("bwn", per_row=True, learned_scale=True)), "rows"),
    (lambda: Q.ActQuantizer(Q.ActQuantConfig("sign", threshold=True)), "features"),
    (lambda: Q.ActQuantizer(Q.ActQuantConfig("sign", threshold=True), features=0), "features"),
    (lambda: Q.WeightQuantizer("twn"), "WeightQuantConfig"),
    (lambda: Q.QuantLinear.from_linear(nn.Conv1d(2, 2, 1)), "nn.Linear"),
])
def test_bad_input_names_the_field(make, field):
    with pytest.raises(BinbertError, match=field):
        make()
