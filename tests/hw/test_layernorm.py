"""LayerNormUnit == LayerNorm.compute (§17) on edge and random rows, under idles and
backpressure; steady-state cycles per token within 1.10x of the params' model; bad params."""
import numpy as np
import pytest

from hw.errors import BinbertError
from hw.layernorm import LayerNormUnit, LayerNormUnitParams
from sim.layers import ln_inputs, random_layernorm
from tests.hw.hwsim import recv, run, send


def _run_ln(params, rows, *, idle=0.0, stall=0.0, seed=0):
    dut = params.create()
    lanes, beats = params.lanes, params.beats
    payloads = [[int(v) for v in row[b * lanes:(b + 1) * lanes]] for row in rows for b in range(beats)]
    stats, got = {}, []

    async def producer(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(seed), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, len(payloads), np.random.default_rng(seed + 1), stall,
                              convert=lambda v: [int(x) for x in v], stats=stats))

    run(dut, producer, consumer, deadline_cycles=len(rows) * params.latency * 4 + 2000)
    return np.array(got).reshape(len(rows), -1), stats


@pytest.mark.parametrize("n,lanes,idle,stall,eps", [(16, 1, 0.3, 0.3, 1e-5), (32, 4, 0.0, 0.5, 1e-12),
                                                    (24, 8, 0.2, 0.0, 1e-5), (128, 32, 0.1, 0.1, 0.0)])
def test_layernorm_matches_golden(n, lanes, idle, stall, eps):
    rng = np.random.default_rng(n * 10 + lanes)
    ln = random_layernorm(n, rng, eps=eps)
    params = LayerNormUnitParams(ln=ln, lanes=lanes)
    rows = ln_inputs(ln, rng, 30)
    got, _ = _run_ln(params, rows, idle=idle, stall=stall)
    want = params.compute(rows)
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad[:5]} differ: got {got[bad[0]]} want {want[bad[0]]}"


@pytest.mark.parametrize("lanes,slots", [(2, None), (1, 2)])
def test_layernorm_throughput(lanes, slots):
    rng = np.random.default_rng(5)
    ln = random_layernorm(32, rng, eps=1e-12)
    params = LayerNormUnitParams(ln=ln, lanes=lanes, slots=slots)
    tokens = 24
    rows = ln_inputs(ln, rng, tokens)[-tokens:]
    got, stats = _run_ln(params, rows)
    assert np.array_equal(got, params.compute(rows))
    first_token = stats["first"] + params.beats - 1
    per_token = (stats["cycles"] - first_token) / (tokens - 1)
    print(f"lanes={lanes} slots={params.slots}: {per_token:.2f} cycles/token "
          f"(model {params.cycles_per_token}), first token {first_token} (model {params.latency})")
    assert per_token <= 1.10 * params.cycles_per_token, (per_token, params.cycles_per_token)
    assert first_token <= params.latency + 2, (first_token, params.latency)


def test_layernorm_bad_params():
    ln = random_layernorm(12, np.random.default_rng(0))
    with pytest.raises(BinbertError, match="lanes=5 does not divide n=12"):
        LayerNormUnitParams(ln=ln, lanes=5)
    with pytest.raises(BinbertError, match="lanes=0"):
        LayerNormUnitParams(ln=ln, lanes=0)
    with pytest.raises(BinbertError, match="slots=0"):
        LayerNormUnitParams(ln=ln, slots=0)
    with pytest.raises(BinbertError, match="ln must be a hw.encoder_params.LayerNorm"):
        LayerNormUnitParams(ln="ln")
    with pytest.raises(BinbertError, match="params must be LayerNormUnitParams"):
        LayerNormUnit(ln)


def test_addnorm_bad_params():
    from hw.layernorm import AddNorm, AddNormParams

    norm = LayerNormUnitParams(ln=random_layernorm(8, np.random.default_rng(0)), lanes=2)
    with pytest.raises(BinbertError, match="a 17-bit \\+ 16-bit sum needs 18"):
        AddNormParams(norm=norm, a_bits=17, b_bits=16)
    with pytest.raises(BinbertError, match="a_bits=0"):
        AddNormParams(norm=norm, a_bits=0, b_bits=16)
    with pytest.raises(BinbertError, match="norm must be LayerNormUnitParams"):
        AddNormParams(norm=None, a_bits=16, b_bits=16)
    with pytest.raises(BinbertError, match="params must be AddNormParams"):
        AddNorm(norm)
