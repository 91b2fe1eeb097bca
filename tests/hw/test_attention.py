"""AttentionCore == Attention.compute (§13-§15: softmax or Heaviside, P·V, context requant) and
AttentionBlock == the layer's attention half (qkv_in, Q/K/V projections, core, attn_out, + r,
ln1), with masks (padding, no valid key), idles and backpressure; cycles per sequence."""
import numpy as np
import pytest

from hw.attention import AttentionCore, AttentionCoreParams
from hw.errors import BinbertError
from sim.layers import random_codes, random_encoder_layer
from tests.hw.hwsim import recv, run, send  # noqa: F401


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


def _run_block(params, r, valid, *, idle=0.0, stall=0.0):
    dut = params.create()
    lanes = params.lanes
    seqs, L, hidden = r.shape
    payloads = [{"r": [int(x) for x in r[s, t, j:j + lanes]], "valid": int(valid[s, t])}
                for s in range(seqs) for t in range(L) for j in range(0, hidden, lanes)]
    got, stats = [], {}

    async def prod(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(1), idle)

    async def cons(ctx):
        # like hwsim.recv, but keeps the cycle of every beat (sequence ends give the steady state)
        rng, cycle, ends = np.random.default_rng(2), 0, []
        while len(got) < len(payloads):
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _, _, ok, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if ready and ok:
                got.append([int(c) for c in payload])
                if len(got) % (L * params.beats) == 0:
                    ends.append(cycle)
        stats["ends"] = ends

    run(dut, prod, cons, deadline_cycles=4 * seqs * params.latency + 5000)
    return np.array(got).reshape(r.shape), stats


def _block_case(seed, **kw):
    from sim.layers import res_inputs
    rng = np.random.default_rng(seed)
    layer = random_encoder_layer(rng, hidden=16, heads=2, max_len=8, **kw)
    seqs, L = 3, 6
    r = res_inputs(rng, seqs * L, 16).reshape(seqs, L, 16)
    valid = rng.random((seqs, L)) < 0.8
    valid[:, 0] = True
    return layer, r, valid


@pytest.mark.parametrize("mode,terms,banks,idle,stall", [("softmax", 1, 2, 0.2, 0.3), ("bi", 2, 1, 0.0, 0.3)])
def test_attention_block_matches_golden(mode, terms, banks, idle, stall):
    from hw.attention import AttentionParams
    layer, r, valid = _block_case(5 + terms, mode=mode, terms=terms)
    params = AttentionParams.from_layer(layer, seq_len=6, lanes=4, pe_qkv=4 * terms, simd_qkv=8,
                                        pe_o=2 * terms, simd_o=16, banks=banks)
    got, _ = _run_block(params, r, valid, idle=idle, stall=stall)
    want = params.compute(r, valid)
    assert np.array_equal(got, want)


def test_attention_block_throughput():
    from hw.attention import AttentionParams
    from sim.layers import res_inputs
    rng = np.random.default_rng(21)
    layer = random_encoder_layer(rng, hidden=16, heads=2, max_len=8)
    params = AttentionParams.from_layer(layer, seq_len=8, lanes=2, pe_qkv=4, simd_qkv=8, pe_o=4, simd_o=8)
    seqs = 5
    r = res_inputs(rng, seqs * 8, 16).reshape(seqs, 8, 16)
    valid = np.ones((seqs, 8), dtype=bool)
    got, stats = _run_block(params, r, valid)
    assert np.array_equal(got, params.compute(r, valid))
    ends = stats["ends"]
    per_seq = (ends[-1] - ends[1]) / (seqs - 2)
    print(f"attention: {per_seq:.1f} cycles/sequence, model {params.cycles_per_sequence} {params.stage_cycles}")
    assert per_seq <= 1.10 * params.cycles_per_sequence
