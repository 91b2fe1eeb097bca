"""RequantUnit == Requant.compute / Lut.compute (§7, §10, §12) with idles and backpressure: T = 1/2,
per-row and broadcast constants, sign, A-bit, ReLU-clamped, residual (16-bit) and GELU outputs;
exact ties, both clamps, the threshold form, timing and parameter validation (the golden op and
the folding of real scales: tests/hw/golden/test_requant.py, tests/hw/golden/test_fold.py)."""
import numpy as np
import pytest
from amaranth.back import verilog

from hw.errors import BinbertError
from hw.golden.random import random_gelu_lut, random_requant
from hw.golden.requant import Requant
from hw.rtl.requant import RequantUnit, RequantUnitParams
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


def _unit(*, n=12, lanes=4, acc_bits=8, mult=((3,),), bias=(0,), shift=4, out_bits=4, m_bits=16):
    op = Requant(mult=np.asarray(mult), bias=np.asarray(bias), shift=shift, acc_bits=acc_bits,
                 out_bits=out_bits, m_bits=m_bits)
    return RequantUnitParams(op=op, n=n, lanes=lanes)


def simulate(params, accs, *, idle=0.0, stall=0.0, seed=0):
    """accs: (terms, V, n) -> RTL codes (V, n); idles and stalls drawn from seeds seed + 1, + 2."""
    return _run_unit(params, accs, idle=idle, stall=stall, seed=seed + 1)[0]


def _edge_accs(params, rng, vectors):
    """Accumulators that hit the corners: both saturation ends, exact half-way points, zero."""
    lim = 1 << (params.acc_bits - 1)
    accs = rng.integers(-lim, lim, (params.terms, vectors, params.n))
    accs[:, 0] = -lim
    accs[:, 1] = lim - 1
    accs[:, 2] = 0
    return accs


@pytest.mark.parametrize("out_bits", [1, 2, 4, 8])
@pytest.mark.parametrize("terms", [1, 2])
@pytest.mark.parametrize("vary", [False, True])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_requant_matches_golden(out_bits, terms, vary, idle, stall):
    rng = np.random.default_rng(out_bits * 10 + terms + 3 * vary)
    n, lanes = 12, 4
    if vary:
        m = rng.integers(0, 1 << 16, (terms, n))
        b = rng.integers(-(1 << 20), 1 << 20, n)
    else:
        m = rng.integers(0, 1 << 16, terms)[:, None]
        b = [int(rng.integers(-(1 << 20), 1 << 20))]
    params = _unit(n=n, lanes=lanes, acc_bits=12, mult=m, bias=b, shift=18, out_bits=out_bits)
    accs = _edge_accs(params, rng, 8)
    got = simulate(params, accs, idle=idle, stall=stall, seed=out_bits)
    assert np.array_equal(got, params.compute(accs))


@pytest.mark.parametrize("shift", [1, 3])
def test_requant_half_way_and_negative(shift):
    """M = 1, B = 0: z = acc, so every (2j+1) * 2**(S-1) is an exact tie; round half up means
    -2.5 -> -2 and 2.5 -> 3 (checked against the golden model, which test_arith pins down)."""
    half = 1 << (shift - 1)
    ties = np.array([(2 * j + 1) * half for j in range(-6, 6)])
    n = len(ties)
    params = _unit(n=n, lanes=n, acc_bits=8, mult=[[1]], bias=[0], shift=shift, out_bits=4)
    accs = np.stack([ties, ties - 1, ties + 1, -ties])[None]
    got = simulate(params, accs)
    want = params.compute(accs)
    assert np.array_equal(got, want)
    # the tie cases are really ties and rounded up: q*2**S - z == 2**(S-1) where not clamped
    q = want[0]
    inside = (q > -8) & (q < 7)
    assert np.all(((q << shift) - ties)[inside] == half)


def test_requant_saturation_both_ends():
    params = _unit(n=2, lanes=2, acc_bits=10, mult=[[60000]], bias=[1000, -1000], shift=4, out_bits=3)
    accs = np.array([[[511, -512], [-512, 511], [0, 0]]]).transpose(0, 1, 2)
    got = simulate(params, accs)
    want = params.compute(accs)
    assert np.array_equal(got, want)
    assert want.max() == 3 and want.min() == -4


def test_requant_threshold_zero_is_one():
    """out_bits = 1: z = 0 gives bit 1 (sign(0) = +1)."""
    params = _unit(n=3, lanes=3, acc_bits=6, mult=[[2]], bias=[0, -2, 2], shift=1, out_bits=1)
    accs = np.array([[[0, 1, -1], [1, 0, 0], [-1, 1, -2]]])
    got = simulate(params, accs)
    assert np.array_equal(got, params.compute(accs))
    assert got[0].tolist() == [1, 1, 1] and got[2].tolist() == [0, 1, 0]


@pytest.mark.parametrize("vary", [False, True])
def test_one_bit_one_term_is_a_threshold_compare(vary):
    """One term to one bit: [acc·M + B >= 0] == [acc >= T] for every accumulator (M = 0 rows
    included: the constant [B >= 0]), and the RTL compares with T: no multiplier in its
    Verilog, the same bits as the golden model on every accumulator value."""
    n, acc_width = 8, 6
    m = np.array([[0, 0, 1, 3, 7, 1000, 65535, 2]]) if vary else [[3]]
    b = np.array([5, -5, 0, -7, 20, -64000, 10**6, -10**6]) if vary else [-7]
    p = _unit(n=n, lanes=4, acc_bits=acc_width, mult=m, bias=b, shift=4, out_bits=1)
    assert p.requant.is_threshold
    every = np.arange(-(1 << (acc_width - 1)), 1 << (acc_width - 1))
    accs = np.repeat(every[None, :, None], n, axis=2)  # (1, 64, n): each row sees every value
    want = p.compute(accs)
    assert np.array_equal((accs[0] >= p.requant.thresholds()).astype(np.int64), want)
    assert np.array_equal(simulate(p, accs, idle=0.2, stall=0.3), want)
    text = verilog.convert(p.create(), name="requant")
    assert " * " not in text and "prod" not in text
    two = _unit(n=n, lanes=4, acc_bits=acc_width, mult=[[3], [5]], bias=[0], shift=4, out_bits=1)
    assert not two.requant.is_threshold and " * " in verilog.convert(two.create(), name="requant")
    with pytest.raises(BinbertError, match=r"Requant.thresholds: needs out_bits 1 and one "
                                           r"term, not out_bits 1 with 2 terms"):
        two.requant.thresholds()


def test_requant_throughput_and_latency():
    params = _unit(n=8, lanes=2, acc_bits=8, mult=np.arange(8)[None] * 100, bias=np.arange(8),
                   shift=5, out_bits=4)
    rng = np.random.default_rng(0)
    accs = rng.integers(-128, 128, (1, 10, 8))
    dut = params.create()
    beats = [[int(accs[0, v, f * 2 + j]) for j in range(2)] for v in range(10) for f in range(4)]
    stats, got = {}, []

    async def producer(ctx):
        await send(ctx, dut.i, beats, rng)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, len(beats), rng, stats=stats,
                              convert=lambda v: [v[0], v[1]]))

    run(dut, producer, consumer)
    assert np.array_equal(np.array(got).reshape(10, 8), params.compute(accs))
    # the first beat after the pipeline's registers, then one beat per cycle
    assert stats["first"] == params.latency + 1
    assert stats["cycles"] == stats["first"] + len(beats) - 1


@pytest.mark.parametrize("out_bits,vary", [(1, False), (4, True)])
def test_requant_verilog(out_bits, vary):
    m = np.arange(8)[None] + 3 if vary else [[5]]
    p = _unit(n=8, lanes=2, acc_bits=10, mult=m, bias=[0], shift=3, out_bits=out_bits)
    text = verilog.convert(p.create(), name="requant")
    assert "module requant" in text and "o__payload" in text


def test_requant_create_wrong_params():
    with pytest.raises(BinbertError, match="RequantUnitParams"):
        RequantUnit(object())


@pytest.mark.parametrize("kwargs,match", [
    ({"lanes": 5}, "lanes=5 does not divide n=12"),
    ({"lanes": 0}, "lanes=0"),
    ({"n": 0}, "n=0"),
    ({"shift": 0}, "shift=0"),
    ({"out_bits": 0}, "out_bits=0"),
    ({"acc_bits": 0}, "acc_bits=0"),
    ({"mult": np.zeros((0, 1), dtype=int)}, "needs at least one term"),
    ({"m_bits": 0}, "m_bits=0"),
    ({"mult": [[1 << 16]]}, "mult: value 65536 above 65535"),
    ({"mult": [[-1]]}, "mult: value -1 below 0"),
    ({"mult": [[1, 2]]}, "op has 2 rows, vectors have n=12"),
    ({"mult": [[0.5]]}, "mult: must be an integer array"),
    ({"bias": np.zeros(5, dtype=int)}, "op has 5 rows, vectors have n=12"),
    ({"bias": "x"}, "bias: must be an integer array"),
])
def test_requant_params_errors(kwargs, match):
    with pytest.raises(BinbertError, match=match):
        _unit(**kwargs)


def test_requant_compute_errors():
    p = _unit(n=4, lanes=2, acc_bits=6, mult=[[3]], bias=[0], shift=2, out_bits=2)
    with pytest.raises(BinbertError, match="expected"):
        p.compute(np.zeros((4,)))
    with pytest.raises(BinbertError, match=r"accumulators outside \[-32, 31\]"):
        p.compute(np.full((1, 2, 4), 32))
