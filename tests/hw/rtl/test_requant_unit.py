"""RequantUnit == Requant.compute / Lut.compute (§10, §12) with idles and backpressure: T = 1/2,
per-row and broadcast constants, sign, A-bit, ReLU-clamped, residual (16-bit) and GELU outputs."""
import numpy as np
import pytest

from hw.errors import BinbertError
from hw.rtl.requant_unit import RequantUnit, RequantUnitParams
from sim.layers import random_gelu_lut, random_requant
from tests.hw.rtl.hwsim import recv, run, send


def _accs(rng, terms, count, n, acc_bits):
    lim = 1 << (acc_bits - 1)
    a = rng.integers(-lim, lim, (terms, count, n))
    a[:, 0] = lim - 1   # extremes of the accumulator range
    a[:, 1] = -lim
    a[:, 2] = 0
    return a


def _run_unit(params, accs, *, idle=0.0, stall=0.0, seed=0):
    dut = params.create()
    t, count, n = accs.shape
    lanes = params.lanes
    payloads = []
    for v in range(count):
        for b in range(params.beats):
            payloads.append([int(accs[tt, v, b * lanes + l]) for l in range(lanes) for tt in range(t)])
    got, stats = [], {}

    async def producer(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(seed), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, len(payloads), np.random.default_rng(seed + 1), stall,
                              convert=lambda x: [int(c) for c in x], stats=stats))

    run(dut, producer, consumer, deadline_cycles=20 * len(payloads) + 200)
    return np.array(got).reshape(count, n), stats


CASES = {
    "sign_T2_rows": dict(terms=2, acc_bits=9, out_bits=1, real_scale=0.02, per_row=True),
    # one term to one bit: the threshold form (acc >= T)
    "sign_T1_rows": dict(terms=1, acc_bits=9, out_bits=1, real_scale=0.02, per_row=True,
                         bias_scale=3.0),
    "sign_T1_bcast": dict(terms=1, acc_bits=7, out_bits=1, real_scale=0.02, per_row=False),
    "a4_T1_bcast": dict(terms=1, acc_bits=12, out_bits=4, real_scale=0.01, per_row=False),
    "a2_T2_rows": dict(terms=2, acc_bits=10, out_bits=2, real_scale=0.01, per_row=True),
    "relu_a3": dict(terms=1, acc_bits=10, out_bits=3, real_scale=0.02, per_row=True, lo=0),
    "residual16": dict(terms=2, acc_bits=11, out_bits=16, real_scale=40.0, per_row=True, bias_scale=2000),
    "uniform_a4": dict(terms=1, acc_bits=12, out_bits=4, real_scale=0.01, per_row=True, kind="uniform"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("lanes", [1, 4])
def test_requant_unit_matches_golden(case, lanes):
    rng = np.random.default_rng(len(case) * 7 + lanes)
    n = 8
    op = random_requant(rng, rows=n, **CASES[case])
    params = RequantUnitParams(op=op, n=n, lanes=lanes)
    accs = _accs(rng, op.terms, 40, n, op.acc_bits)
    got, _ = _run_unit(params, accs, idle=0.2, stall=0.3)
    assert np.array_equal(got, params.compute(accs))
    assert op.is_threshold == (op.out_bits == 1 and op.terms == 1)
    if op.out_bits > 1:  # the case exercises both clamps
        want = params.compute(accs)
        assert want.min() == op.lo and want.max() == op.hi


@pytest.mark.parametrize("lanes,out_bits", [(2, 4), (1, 3)])
def test_gelu_lut_matches_golden(lanes, out_bits):
    rng = np.random.default_rng(3 + lanes)
    n = 8
    op = random_gelu_lut(rng, rows=n, terms=2, acc_bits=10, out_bits=out_bits, real_scale=0.01)
    params = RequantUnitParams(op=op, n=n, lanes=lanes)
    accs = _accs(rng, 2, 60, n, op.acc_bits)
    got, _ = _run_unit(params, accs, idle=0.3, stall=0.2)
    want = params.compute(accs)
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 3  # the table is actually exercised


def test_threshold_unit_every_accumulator_value():
    """The threshold form on every accumulator value, with rows whose T lies below, inside and
    above the accumulator range (M = 0 rows included)."""
    from hw.golden.requant import Requant

    acc_bits, n = 6, 8
    mult = np.array([[0, 0, 5, 1, 40, 7, 3, 60]])
    bias = np.array([0, -1, 12, -31, 5000, -5000, 0, -200])
    op = Requant(mult=mult, bias=bias, shift=3, acc_bits=acc_bits, out_bits=1, m_bits=6)
    t = op.thresholds()
    assert t.min() == -32 and t.max() == 32 and len(set(t.tolist())) > 4
    params = RequantUnitParams(op=op, n=n, lanes=2)
    accs = np.repeat(np.arange(-32, 32)[None, :, None], n, axis=2)
    got, _ = _run_unit(params, accs, idle=0.1, stall=0.2, seed=3)
    assert np.array_equal(got, params.compute(accs))


def test_requant_unit_one_beat_per_cycle():
    rng = np.random.default_rng(9)
    op = random_gelu_lut(rng, rows=16, terms=1, acc_bits=10, out_bits=4, real_scale=0.01)
    params = RequantUnitParams(op=op, n=16, lanes=2)
    accs = _accs(rng, 1, 10, 16, op.acc_bits)
    got, stats = _run_unit(params, accs)
    assert np.array_equal(got, params.compute(accs))
    assert stats["first"] == params.latency + 1
    assert stats["cycles"] == params.latency + 10 * params.beats


def test_requant_unit_bad_params():
    rng = np.random.default_rng(0)
    op = random_requant(rng, rows=8, terms=1, acc_bits=8, out_bits=4, real_scale=0.1)
    with pytest.raises(BinbertError, match="lanes=3 does not divide n=8"):
        RequantUnitParams(op=op, n=8, lanes=3)
    with pytest.raises(BinbertError, match="op has 8 rows, vectors have n=16"):
        RequantUnitParams(op=op, n=16)
    with pytest.raises(BinbertError, match="op must be"):
        RequantUnitParams(op=None, n=8)
    with pytest.raises(BinbertError, match="n=0"):
        RequantUnitParams(op=op, n=0)
    with pytest.raises(BinbertError, match="params must be RequantUnitParams"):
        RequantUnit(op)
