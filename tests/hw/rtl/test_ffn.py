"""FfnBlock == the layer's FFN ops composed as EncoderLayer.compute (ffn_in_q, ffn_in + GELU
table / ReLU, ffn_out to the residual, + h, ln2), with idles and backpressure; cycles/token."""
import numpy as np
import pytest

from hw.errors import BinbertError
from hw.rtl.ffn import FfnBlock, FfnParams
from hw.golden.random import random_encoder_layer, res_inputs
from tests.hw.rtl.hwsim import recv, run, send


def _run(params, h, *, idle=0.0, stall=0.0):
    dut = params.create()
    lanes = params.lanes
    payloads = [[int(v) for v in row[j:j + lanes]] for row in h for j in range(0, len(row), lanes)]
    got, stats = [], {}

    async def prod(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(1), idle)

    async def cons(ctx):
        got.extend(await recv(ctx, dut.o, len(payloads), np.random.default_rng(2), stall,
                              convert=lambda v: [int(c) for c in v], stats=stats))

    run(dut, prod, cons, deadline_cycles=10 * len(h) * params.latency + 1000)
    return np.array(got).reshape(h.shape), stats


@pytest.mark.parametrize("terms,f_bits,g_bits,act,idle,stall", [
    (1, 2, 3, "gelu", 0.2, 0.3), (2, 1, 1, "gelu", 0.0, 0.4), (1, 4, 2, "relu", 0.3, 0.0)])
def test_ffn_matches_golden(terms, f_bits, g_bits, act, idle, stall):
    rng = np.random.default_rng(terms * 100 + f_bits * 10 + g_bits)
    layer = random_encoder_layer(rng, hidden=16, ffn=32, terms=terms, f_bits=f_bits, g_bits=g_bits, act=act)
    params = FfnParams.from_layer(layer, lanes=4, pe1=4 * terms, simd1=8, pe2=2 * terms, simd2=16)
    h = res_inputs(rng, 10, 16)
    got, _ = _run(params, h, idle=idle, stall=stall)
    want = params.compute(h)
    assert np.array_equal(got, want)


def test_ffn_throughput():
    rng = np.random.default_rng(11)
    layer = random_encoder_layer(rng, hidden=32, ffn=64, terms=1, f_bits=2, g_bits=2)
    params = FfnParams.from_layer(layer, lanes=2, pe1=8, simd1=16, pe2=4, simd2=32)
    tokens = 12
    h = res_inputs(rng, tokens, 32)
    got, stats = _run(params, h)
    assert np.array_equal(got, params.compute(h))
    first = stats["first"] + params.beats - 1
    per_token = (stats["cycles"] - first) / (tokens - 1)
    print(f"ffn: {per_token:.2f} cycles/token, model {params.cycles_per_token} {params.stage_cycles}")
    assert per_token <= 1.10 * params.cycles_per_token


def test_ffn_bad_params():
    layer = random_encoder_layer(np.random.default_rng(0), hidden=16, ffn=32)
    with pytest.raises(BinbertError, match="lanes=3 does not divide hidden=16"):
        FfnParams.from_layer(layer, lanes=3, pe1=4, simd1=8, pe2=2, simd2=16)
    with pytest.raises(BinbertError, match="simd=5 does not divide k=16"):
        FfnParams.from_layer(layer, lanes=4, pe1=4, simd1=5, pe2=2, simd2=16)
    with pytest.raises(BinbertError, match="expected an EncoderLayer"):
        FfnParams.from_layer(None, lanes=4, pe1=4, simd1=8, pe2=2, simd2=16)
    with pytest.raises(BinbertError, match="params must be FfnParams"):
        FfnBlock(layer)
