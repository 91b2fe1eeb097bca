"""AttentionCore == Attention.compute (§13-§15: softmax or Heaviside, P·V, context requant) and
AttentionBlock == the layer's attention half (qkv_in, Q/K/V projections, core, attn_out, + r,
ln1), with masks (padding, no valid key), idles and backpressure; cycles per sequence."""
import dataclasses

import numpy as np
import pytest

from hw.rtl.attention import AttentionBlock, AttentionCore, AttentionCoreParams, AttentionParams
from hw.errors import BinbertError
from hw.golden.random import random_binary_linear, random_codes, random_encoder_layer
from tests.hw.rtl.hwsim import recv, run, send
from tests.hw.rtl.seqsim import masked_residuals, run_sequences, steady_cycles


def _core_inputs(rng, att, seqs, seq_len):
    q = random_codes(rng, att.q_bits, (seqs, seq_len, att.hidden))
    k = random_codes(rng, att.k_bits, (seqs, seq_len, att.hidden))
    v = random_codes(rng, att.v_bits, (seqs, seq_len, att.hidden))
    valid = rng.random((seqs, seq_len)) < 0.75
    valid[:, 0] = True
    valid[0, 1:] = False      # one real token, the rest padding
    if seqs > 2:
        valid[2] = False      # no valid key at all
    return q, k, v, valid


def _run_core(params, q, k, v, valid, *, idle=0.0, stall=0.0):
    dut = params.create()
    a = params.att
    d, H = a.head_dim, a.heads
    seqs, L, _ = q.shape

    def beats(x):
        return [[int(c) for c in x[s, t, h * d:(h + 1) * d]] for s in range(seqs) for t in range(L) for h in range(H)]

    got, stats = [], {}
    cl = params.ctx_lanes

    def producer(port, payloads, seed):
        async def tb(ctx):
            await send(ctx, port, payloads, np.random.default_rng(seed), idle)
        return tb

    async def cons(ctx):
        got.extend(await recv(ctx, dut.o, seqs * L * H * (d // cl), np.random.default_rng(9), stall,
                              convert=lambda x: [int(c) for c in x], stats=stats))

    run(dut, producer(dut.q, beats(q), 1), producer(dut.k, beats(k), 2), producer(dut.v, beats(v), 3),
        producer(dut.mask, [int(b) for b in valid.reshape(-1)], 4), cons,
        deadline_cycles=6 * seqs * (params.latency + L * H * 4) + 2000)
    return np.array(got).reshape(seqs, L, a.hidden), stats


@pytest.mark.parametrize("mode,bits,seq_len,banks,ctx_lanes,idle,stall", [
    ("softmax", 2, 6, 2, None, 0.2, 0.3), ("bi", 1, 8, 1, 2, 0.1, 0.2), ("softmax", 3, 4, 1, 8, 0.0, 0.0),
    ("softmax", 1, 5, 2, 1, 0.3, 0.0)])
def test_attention_core_matches_golden(mode, bits, seq_len, banks, ctx_lanes, idle, stall):
    rng = np.random.default_rng(seq_len * 10 + bits)
    layer = random_encoder_layer(rng, hidden=16, heads=2, max_len=8, q_bits=bits, k_bits=bits, v_bits=bits,
                                 mode=mode)
    params = AttentionCoreParams(att=layer.attention, seq_len=seq_len, banks=banks, ctx_lanes=ctx_lanes)
    q, k, v, valid = _core_inputs(rng, layer.attention, 4, seq_len)
    got, _ = _run_core(params, q, k, v, valid, idle=idle, stall=stall)
    want = np.concatenate([params.compute(q[s:s + 1], k[s:s + 1], v[s:s + 1], valid[s:s + 1]) for s in range(4)])
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 1


@pytest.mark.parametrize("heads,seq_len,banks", [(4, 6, 2), (1, 5, 1)])
def test_attention_core_per_head_thresholds(heads, seq_len, banks):
    """Learned Bi-Attention thresholds (§14): the core subtracts each row's T_h from its scores;
    one head at the edge of the range (keeps every key or none) when there are more than two."""
    rng = np.random.default_rng(heads * 7 + seq_len)
    layer = random_encoder_layer(rng, hidden=8 * heads, heads=heads, max_len=8, mode="bi",
                                 head_thresholds=True)
    att = layer.attention
    assert att.thresholds is not None and (att.thresholds != 0).all()
    params = AttentionCoreParams(att=att, seq_len=seq_len, banks=banks, ctx_lanes=4)
    q, k, v, valid = _core_inputs(rng, att, 3, seq_len)
    got, _ = _run_core(params, q, k, v, valid, idle=0.2, stall=0.2)
    want = np.concatenate([params.compute(q[s:s + 1], k[s:s + 1], v[s:s + 1], valid[s:s + 1]) for s in range(3)])
    assert np.array_equal(got, want)
    plain = dataclasses.replace(att, thresholds=None)
    assert not np.array_equal(want, plain.compute(q, k, v, valid))  # the thresholds are used


def test_attention_core_bad_params():
    layer = random_encoder_layer(np.random.default_rng(0), hidden=16, heads=2, max_len=8)
    with pytest.raises(BinbertError, match="seq_len=9 exceeds the attention's max_len=8"):
        AttentionCoreParams(att=layer.attention, seq_len=9)
    with pytest.raises(BinbertError, match="banks=3 must be 1 or 2"):
        AttentionCoreParams(att=layer.attention, seq_len=4, banks=3)
    with pytest.raises(BinbertError, match="att must be"):
        AttentionCoreParams(att=None, seq_len=4)
    with pytest.raises(BinbertError, match="ctx_lanes=3 does not divide head_dim=8"):
        AttentionCoreParams(att=layer.attention, seq_len=4, ctx_lanes=3)
    with pytest.raises(BinbertError, match="params must be AttentionCoreParams"):
        AttentionCore(layer.attention)


def _block_case(seed, **kw):
    rng = np.random.default_rng(seed)
    layer = random_encoder_layer(rng, hidden=16, heads=2, max_len=8, **kw)
    return layer, *masked_residuals(rng, 3, 6, 16)


@pytest.mark.parametrize("mode,terms,banks,idle,stall,thr", [("softmax", 1, 2, 0.2, 0.3, False),
                                                              ("bi", 2, 1, 0.0, 0.3, False), ("bi", 1, 2, 0.2, 0.2, True)])
def test_attention_block_matches_golden(mode, terms, banks, idle, stall, thr):
    layer, r, valid = _block_case(5 + terms, mode=mode, terms=terms, head_thresholds=thr)
    params = AttentionParams(layer=layer, seq_len=6, lanes=4, pe_qkv=4 * terms, simd_qkv=8,
                             pe_o=2 * terms, simd_o=16, banks=banks)
    got, _ = run_sequences(params, r, valid, idle=idle, stall=stall)
    want = params.compute(r, valid)
    assert np.array_equal(got, want)


def test_attention_block_throughput():
    rng = np.random.default_rng(21)
    layer = random_encoder_layer(rng, hidden=16, heads=2, max_len=8)
    params = AttentionParams(layer=layer, seq_len=8, lanes=2, pe_qkv=4, simd_qkv=8, pe_o=4, simd_o=8)
    r, valid = masked_residuals(rng, 5, 8, 16, keep=1.0)
    got, ends = run_sequences(params, r, valid)
    assert np.array_equal(got, params.compute(r, valid))
    per_seq = steady_cycles(ends)
    print(f"attention: {per_seq:.1f} cycles/sequence, model {params.cycles} {params.stage_cycles}")
    assert per_seq <= 1.10 * params.cycles


def test_attention_block_bad_params():
    layer = random_encoder_layer(np.random.default_rng(0), hidden=16, heads=2, max_len=8)
    fold = dict(seq_len=4, pe_qkv=4, simd_qkv=8, pe_o=4, simd_o=8)
    with pytest.raises(BinbertError, match="AttentionParams: layer must be a hw.golden.encoder_layer.EncoderLayer"):
        AttentionParams(layer=layer.attention, lanes=4, **fold)
    with pytest.raises(BinbertError, match="AttentionParams: lanes=3 does not divide hidden=16"):
        AttentionParams(layer=layer, lanes=3, **fold)
    with pytest.raises(BinbertError, match="AttentionParams: lanes=0 must be an integer >= 1"):
        AttentionParams(layer=layer, lanes=0, **fold)
    # Q/K/V and attn_out chain with the attention (EncoderLayer checks that) but not with ln1's width
    rng = np.random.default_rng(1)
    q = layer.query
    wide_q = random_binary_linear(rng, k=24, n=q.n, terms=q.terms, in_bits=q.in_bits, out="code",
                                  out_bits=q.out.out_bits)
    with pytest.raises(BinbertError, match="AttentionParams: query reads 24 features, expected hidden=16"):
        AttentionParams(layer=dataclasses.replace(layer, query=wide_q), lanes=4, **fold)
    o = layer.attn_out
    tall_o = random_binary_linear(rng, k=o.k, n=24, terms=o.terms, in_bits=o.in_bits, out="res")
    with pytest.raises(BinbertError, match="AttentionParams: attn_out has 24 rows, expected hidden=16"):
        AttentionParams(layer=dataclasses.replace(layer, attn_out=tall_o), lanes=4, **fold)
    with pytest.raises(BinbertError, match="params must be AttentionParams"):
        AttentionBlock(layer)
