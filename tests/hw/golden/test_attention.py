"""hw/golden/attention.py: binary attention against its float formula; threshold checks."""
from __future__ import annotations

import numpy as np
import pytest

from hw.golden.attention import Attention
from hw.golden.requant import Requant
from hw.golden.softmax import Heaviside, Softmax, exp2_table
from hw.errors import BinbertError

RNG = np.random.default_rng(1234)


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
