"""LayerNormUnit and SharedLayerNormUnit == LayerNorm.compute (§17) on edge and random rows,
under idles and backpressure; steady-state cycles per token within 1.10x of the params' model
(the shared unit's: exactly); bad params."""
import numpy as np
import pytest

from hw.errors import BinbertError
from hw.rtl.layernorm import LayerNormUnit, LayerNormUnitParams, SharedLayerNormUnit
from hw.golden.random import ln_inputs, random_layernorm
from tests.hw.rtl.hwsim import recv, run, send


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


GOLDEN_CASES = [(16, 1, 0.3, 0.3, 1e-5), (32, 4, 0.0, 0.5, 1e-12), (24, 8, 0.2, 0.0, 1e-5),
                (128, 32, 0.1, 0.1, 0.0)]


# the shared unit spends ~3 products per feature: its n = 128 case would take minutes
@pytest.mark.parametrize("n,lanes,idle,stall,eps,multiplier",
                         [c + ("parallel",) for c in GOLDEN_CASES]
                         + [c + ("shared",) for c in GOLDEN_CASES if c[0] <= 32])
def test_layernorm_matches_golden(n, lanes, idle, stall, eps, multiplier):
    rng = np.random.default_rng(n * 10 + lanes)
    ln = random_layernorm(n, rng, eps=eps)
    params = LayerNormUnitParams(ln=ln, lanes=lanes, multiplier=multiplier)
    rows = ln_inputs(ln, rng, 4 if multiplier == "shared" else 30)
    got, _ = _run_ln(params, rows, idle=idle, stall=stall)
    want = params.compute(rows)
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad[:5]} differ: got {got[bad[0]]} want {want[bad[0]]}"


@pytest.mark.parametrize("lanes,slots,multiplier", [(2, None, "parallel"), (1, 2, "parallel"),
                                                    (1, None, "shared"), (4, 1, "shared")])
def test_layernorm_throughput(lanes, slots, multiplier):
    rng = np.random.default_rng(5)
    ln = random_layernorm(32, rng, eps=1e-12)
    params = LayerNormUnitParams(ln=ln, lanes=lanes, slots=slots, multiplier=multiplier)
    tokens = 24 if multiplier == "parallel" else 6
    rows = ln_inputs(ln, rng, tokens)[-tokens:]
    got, stats = _run_ln(params, rows)
    assert np.array_equal(got, params.compute(rows))
    first_token = stats["each"][params.beats - 1]   # the first token's last beat
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
    with pytest.raises(BinbertError, match="ln must be a hw.golden.layernorm.LayerNorm"):
        LayerNormUnitParams(ln="ln")
    with pytest.raises(BinbertError, match="params must be LayerNormUnitParams"):
        LayerNormUnit(ln)
    with pytest.raises(BinbertError, match="multiplier='dsp' must be one of parallel, shared"):
        LayerNormUnitParams(ln=ln, multiplier="dsp")
    with pytest.raises(BinbertError, match="mul_steps=5 must be an integer in 1..4"):
        LayerNormUnitParams(ln=ln, multiplier="shared", mul_steps=5)
    with pytest.raises(BinbertError, match="slots=2: a shared-multiplier unit buffers one token"):
        LayerNormUnitParams(ln=ln, multiplier="shared", slots=2)
    with pytest.raises(BinbertError, match="multiplier='shared'"):
        SharedLayerNormUnit(LayerNormUnitParams(ln=ln))


def test_addnorm_bad_params():
    from hw.rtl.layernorm import AddNorm, AddNormParams

    norm = LayerNormUnitParams(ln=random_layernorm(8, np.random.default_rng(0)), lanes=2)
    with pytest.raises(BinbertError, match="a 17-bit \\+ 16-bit sum needs 18"):
        AddNormParams(norm=norm, a_bits=17, b_bits=16)
    with pytest.raises(BinbertError, match="a_bits=0"):
        AddNormParams(norm=norm, a_bits=0, b_bits=16)
    with pytest.raises(BinbertError, match="norm must be LayerNormUnitParams"):
        AddNormParams(norm=None, a_bits=16, b_bits=16)
    with pytest.raises(BinbertError, match="params must be AddNormParams"):
        AddNorm(norm)
