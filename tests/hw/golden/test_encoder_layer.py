"""EncoderLayer (§19): compute is its two named halves, attention_block then ffn_block, each the
formula of the class docstring; feed_forward is ffn_block from the four FFN ops alone."""
import numpy as np
import pytest

from hw.golden.encoder_layer import feed_forward
from hw.golden.random import random_encoder_layer, random_layer_pair, res_inputs


def _inputs(rng, seqs=3, seq_len=5, hidden=16):
    r = res_inputs(rng, seqs * seq_len, hidden).reshape(seqs, seq_len, hidden)
    valid = rng.random((seqs, seq_len)) < 0.7
    valid[:, 0] = True
    return r, valid


@pytest.mark.parametrize("which", ["split", "bi", "relu"])
def test_compute_is_the_two_halves(which):
    rng = np.random.default_rng(7)
    if which == "relu":
        lyr = random_encoder_layer(rng, hidden=16, heads=2, ffn=32, max_len=6, act="relu")
    else:
        split, bi = random_layer_pair(rng, hidden=16, heads=2, ffn=32, max_len=6)
        lyr = split if which == "split" else bi
    r, valid = _inputs(rng)
    # the docstring's formula, written out
    x = lyr.qkv_in.compute(r[None])
    c = lyr.attention.compute(lyr.query.compute(x), lyr.key.compute(x), lyr.value.compute(x), valid)
    s = lyr.attn_out.compute(c) + r
    h = lyr.ln1.compute(s)
    out = lyr.ln2.compute(lyr.ffn_out.compute(lyr.ffn_in.compute(lyr.ffn_in_q.compute(h[None]))) + h)

    assert np.array_equal(lyr.attention_sum(r, valid), s)
    assert np.array_equal(lyr.attention_block(r, valid), h)
    assert np.array_equal(lyr.ffn_block(h), out)
    assert np.array_equal(lyr.compute(r, valid), out)
    assert np.array_equal(lyr.compute(r.tolist(), valid), out)  # any integer array-like
    assert np.array_equal(feed_forward(h, ffn_in_q=lyr.ffn_in_q, ffn_in=lyr.ffn_in,
                                       ffn_out=lyr.ffn_out, ln=lyr.ln2), out)
    # token by token: the FFN half reads one token at a time
    assert np.array_equal(lyr.ffn_block(h[valid]), out[valid])
