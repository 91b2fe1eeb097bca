"""sw.quant.ste: straight-through gradients against the papers' formulas."""
import math

import numpy as np
import pytest
import torch

from sw import quant as Q
from tests.sw.quant.common import gauss as _gauss


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


