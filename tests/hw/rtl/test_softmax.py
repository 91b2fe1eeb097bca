"""SoftmaxUnit / HeavisideUnit == Softmax.compute / Heaviside.compute (§13, §14) on edge rows
(no valid key, one valid key, ties, extremes, masked keys above the maximum) and random rows,
under idles and backpressure; rows per cycle within 1.10x of the params' model."""
import numpy as np
import pytest

from hw.golden.softmax import Heaviside
from hw.errors import BinbertError
from hw.rtl.softmax import HeavisideUnit, ProbsParams, SoftmaxUnit
from hw.golden.random import random_softmax, score_rows
from tests.hw.rtl.hwsim import recv, run, send


def _run(params, s, v, *, idle=0.0, stall=0.0, seed=0):
    dut = params.create()
    payloads = [{"s": int(x), "valid": int(b)} for row_s, row_v in zip(s, v) for x, b in zip(row_s, row_v)]
    got, stats = [], {}

    async def prod(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(seed), idle)

    async def cons(ctx):
        got.extend(await recv(ctx, dut.o, len(payloads), np.random.default_rng(seed + 1), stall,
                              convert=int, stats=stats))

    run(dut, prod, cons, deadline_cycles=8 * len(s) * (params.latency + 10) + 1000)
    return np.array(got).reshape(s.shape), stats


@pytest.mark.parametrize("length,score_bits,p_bits,idle,stall", [
    (8, 6, 4, 0.2, 0.3), (5, 9, 8, 0.0, 0.5), (16, 4, 2, 0.3, 0.0), (1, 5, 4, 0.1, 0.1)])
def test_softmax_matches_golden(length, score_bits, p_bits, idle, stall):
    rng = np.random.default_rng(length * 100 + score_bits)
    params = ProbsParams(probs=random_softmax(rng, score_bits=score_bits, p_bits=p_bits), length=length)
    s, v = score_rows(rng, score_bits, length, 40)
    got, _ = _run(params, s, v, idle=idle, stall=stall)
    want = params.compute(s, v)
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad[:4]}: got {got[bad[0]]} want {want[bad[0]]} (s {s[bad[0]]}, v {v[bad[0]]})"
    assert want.max() == params.probs.hi  # the clamp at hi is reached


@pytest.mark.parametrize("length", [8, 32])
def test_softmax_throughput(length):
    rng = np.random.default_rng(length)
    params = ProbsParams(probs=random_softmax(rng, score_bits=7), length=length)
    rows = 20
    s, v = score_rows(rng, 7, length, rows)
    s, v = s[-rows:], v[-rows:]
    got, stats = _run(params, s, v)
    assert np.array_equal(got, params.compute(s, v))
    first_row = stats["first"] + length - 1
    per_row = (stats["cycles"] - first_row) / (rows - 1)
    print(f"L={length}: {per_row:.2f} cycles/row (model {params.cycles}), first row {first_row} "
          f"(model {params.latency})")
    assert per_row <= 1.10 * params.cycles
    assert first_row <= params.latency + 2


def test_heaviside_matches_golden():
    rng = np.random.default_rng(7)
    params = ProbsParams(probs=Heaviside(score_bits=5), length=6)
    s, v = score_rows(rng, 5, 6, 50)
    s[7] = 0  # heaviside(0) = 0
    got, stats = _run(params, s, v, idle=0.2, stall=0.3)
    assert np.array_equal(got, params.compute(s, v))


def test_probs_bad_params():
    sm = random_softmax(np.random.default_rng(0), score_bits=6)
    with pytest.raises(BinbertError, match="length=0"):
        ProbsParams(probs=sm, length=0)
    with pytest.raises(BinbertError, match="banks=0"):
        ProbsParams(probs=sm, length=4, banks=0)
    with pytest.raises(BinbertError, match="probs must be"):
        ProbsParams(probs=None, length=4)
    with pytest.raises(BinbertError, match="params must be ProbsParams of a Heaviside"):
        HeavisideUnit(ProbsParams(probs=sm, length=4))
    with pytest.raises(BinbertError, match="params must be ProbsParams of a Softmax"):
        SoftmaxUnit(ProbsParams(probs=Heaviside(score_bits=4), length=4))
