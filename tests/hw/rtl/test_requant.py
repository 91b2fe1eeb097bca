"""Requantizer (LSQ activation quantizer unit) == RequantParams.compute (hw.golden.arith.requant);
RequantParams validation and the §8 scale folding."""
import numpy as np
import pytest
from amaranth.back import verilog

from hw.errors import BinbertError
from hw.rtl.requant import RequantParams, Requantizer
from tests.hw.rtl.hwsim import recv, run, send


def simulate(params, accs, *, idle=0.0, stall=0.0, seed=0):
    """accs: (terms, V, n) -> RTL codes (V, n)."""
    terms, vectors, n = accs.shape
    L = params.lanes
    beats = []
    for v in range(vectors):
        for f in range(params.nf):
            beats.append([[int(accs[t, v, f * L + lane]) for t in range(terms)] for lane in range(L)])
    dut = params.create()
    got = []

    async def producer(ctx):
        await send(ctx, dut.i, beats, np.random.default_rng(seed + 1), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, len(beats), np.random.default_rng(seed + 2), stall,
                              convert=lambda v: [v[j] for j in range(L)]))

    run(dut, producer, consumer, deadline_cycles=20 * len(beats) + 100)
    return np.array(got, dtype=np.int64).reshape(vectors, n)


def _edge_accs(params, rng, vectors):
    """Accumulators that hit the corners: both saturation ends, exact half-way points, zero."""
    lim = 1 << (params.acc_width - 1)
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
        m = rng.integers(0, 1 << 16, terms)
        b = int(rng.integers(-(1 << 20), 1 << 20))
    params = RequantParams(n=n, lanes=lanes, terms=terms, acc_width=12, m=m, b=b, shift=18,
                           out_bits=out_bits)
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
    params = RequantParams(n=n, lanes=n, acc_width=8, m=[1], b=0, shift=shift, out_bits=4)
    accs = np.stack([ties, ties - 1, ties + 1, -ties])[None]
    got = simulate(params, accs)
    want = params.compute(accs)
    assert np.array_equal(got, want)
    # the tie cases are really ties and rounded up: q*2**S - z == 2**(S-1) where not clamped
    q = want[0]
    inside = (q > -8) & (q < 7)
    assert np.all(((q << shift) - ties)[inside] == half)


def test_requant_saturation_both_ends():
    params = RequantParams(n=2, lanes=2, acc_width=10, m=[60000], b=[1000, -1000], shift=4, out_bits=3)
    accs = np.array([[[511, -512], [-512, 511], [0, 0]]]).transpose(0, 1, 2)
    got = simulate(params, accs)
    want = params.compute(accs)
    assert np.array_equal(got, want)
    assert want.max() == 3 and want.min() == -4


def test_requant_threshold_zero_is_one():
    """out_bits = 1: z = 0 gives bit 1 (sign(0) = +1)."""
    params = RequantParams(n=3, lanes=3, acc_width=6, m=[2], b=[0, -2, 2], shift=1, out_bits=1)
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
    m = np.array([[0, 0, 1, 3, 7, 1000, 65535, 2]]) if vary else [3]
    b = np.array([5, -5, 0, -7, 20, -64000, 10**6, -10**6]) if vary else -7
    p = RequantParams(n=n, lanes=4, acc_width=acc_width, m=m, b=b, shift=4, out_bits=1)
    assert p.is_threshold
    every = np.arange(-(1 << (acc_width - 1)), 1 << (acc_width - 1))
    accs = np.repeat(every[None, :, None], n, axis=2)  # (1, 64, n): each row sees every value
    want = p.compute(accs)
    assert np.array_equal((accs[0] >= p.thresholds()).astype(np.int64), want)
    assert np.array_equal(simulate(p, accs, idle=0.2, stall=0.3), want)
    text = verilog.convert(p.create(), name="requant")
    assert " * " not in text and "prod" not in text
    two = RequantParams(n=n, lanes=4, terms=2, acc_width=acc_width, m=[3, 5], b=0, shift=4,
                        out_bits=1)
    assert not two.is_threshold and " * " in verilog.convert(two.create(), name="requant")
    with pytest.raises(BinbertError, match=r"RequantParams.thresholds: needs out_bits 1 and one "
                                           r"term, not out_bits 1 with 2 terms"):
        two.thresholds()


def test_requant_throughput_and_latency():
    params = RequantParams(n=8, lanes=2, acc_width=8, m=np.arange(8)[None] * 100, b=np.arange(8),
                           shift=5, out_bits=4)
    rng = np.random.default_rng(0)
    accs = rng.integers(-128, 128, (1, 10, 8))
    dut = params.create()
    beats = [[[int(accs[0, v, f * 2 + j])] for j in range(2)] for v in range(10) for f in range(4)]
    stats, got = {}, []

    async def producer(ctx):
        await send(ctx, dut.i, beats, rng)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, len(beats), rng, stats=stats,
                              convert=lambda v: [v[0], v[1]]))

    run(dut, producer, consumer)
    assert np.array_equal(np.array(got).reshape(10, 8), params.compute(accs))
    # one cycle after reset for the constant ROM, then one beat per cycle
    assert stats["first"] == params.latency + 2
    assert stats["cycles"] == stats["first"] + len(beats) - 1


@pytest.mark.parametrize("out_bits,vary", [(1, False), (4, True)])
def test_requant_verilog(out_bits, vary):
    m = np.arange(8)[None] + 3 if vary else [5]
    p = RequantParams(n=8, lanes=2, acc_width=10, m=m, b=0, shift=3, out_bits=out_bits)
    text = verilog.convert(p.create(), name="requant")
    assert "module requant" in text and "o__payload" in text


def test_requant_create_wrong_params():
    with pytest.raises(BinbertError, match="RequantParams"):
        Requantizer(object())


def test_from_scales_folds_per_section8():
    n = 6
    rng = np.random.default_rng(2)
    alpha = rng.uniform(0.01, 0.2, (2, n))
    beta = rng.uniform(-3, 3, n)
    s_x, s_y = 0.05, 0.11
    p = RequantParams.from_scales(n=n, lanes=3, acc_width=10, s_x=s_x, alpha=alpha, beta=beta,
                                  s_y=s_y, out_bits=4)
    assert p.terms == 2 and p.m.max() < (1 << 16)
    assert p.m.max() >= (1 << 15)  # the largest shift: the top multiplier uses the top bit
    real = s_x * alpha / s_y
    assert np.all(np.abs(p.m / 2.0**p.shift - real) <= 2.0 ** -(p.shift + 1))
    assert np.array_equal(p.b, np.floor(beta / s_y * 2.0**p.shift + 0.5).astype(np.int64))
    # the folded integer path approximates the real requantization
    accs = rng.integers(-512, 512, (2, 50, n))
    real_y = np.clip(np.floor((s_x * (alpha[0] * accs[0] + alpha[1] * accs[1]) + beta) / s_y + 0.5), -8, 7)
    assert np.mean(p.compute(accs) == real_y) > 0.95


@pytest.mark.parametrize("kwargs,match", [
    ({"lanes": 5}, "lanes=5 does not divide n=12"),
    ({"lanes": 0}, "lanes=0"),
    ({"n": 0}, "n=0"),
    ({"shift": 0}, "shift=0"),
    ({"out_bits": 0}, "out_bits=0"),
    ({"out_bits": 9}, "out_bits=9"),
    ({"acc_width": 1}, "acc_width=1"),
    ({"terms": 0}, "terms=0"),
    ({"m_bits": 0}, "m_bits=0"),
    ({"m": [1 << 16]}, "m values"),
    ({"m": [-1]}, "m values"),
    ({"m": [[1, 2]]}, r"m has shape \(1, 2\)"),
    ({"m": [0.5]}, "m must hold integers"),
    ({"b": np.zeros(5, dtype=int)}, r"b has shape \(5,\)"),
    ({"b": "x"}, "b must hold integers"),
])
def test_requant_params_errors(kwargs, match):
    base = dict(n=12, lanes=4, acc_width=8, m=[3], b=0, shift=4, out_bits=4)
    base.update(kwargs)
    with pytest.raises(BinbertError, match=match):
        RequantParams(**base)


@pytest.mark.parametrize("kwargs,match", [
    ({"s_x": 0.0}, "s_x=0.0"),
    ({"s_y": float("nan")}, "s_y=nan"),
    ({"alpha": [[0.1, 0.2]]}, "alpha has shape"),
    ({"alpha": [-0.1]}, "alpha must be finite"),
    ({"beta": [float("inf")] * 4}, "beta must be finite"),
])
def test_from_scales_errors(kwargs, match):
    base = dict(n=4, lanes=2, acc_width=8, s_x=0.1, alpha=[0.2], s_y=0.3, out_bits=4)
    base.update(kwargs)
    with pytest.raises(BinbertError, match=match):
        RequantParams.from_scales(**base)


def test_requant_compute_errors():
    p = RequantParams(n=4, lanes=2, acc_width=6, m=[3], b=0, shift=2, out_bits=2)
    with pytest.raises(BinbertError, match="expected"):
        p.compute(np.zeros((4,)))
    with pytest.raises(BinbertError, match="acc_width=6"):
        p.compute(np.full((1, 2, 4), 32))


def test_z_width_holds_extremes():
    p = RequantParams(n=1, lanes=1, terms=2, acc_width=9, m=[65535, 65535], b=[-(1 << 30)], shift=3,
                      out_bits=8)
    zmin = 2 * (-256 * 65535) - (1 << 30)
    assert -(1 << (p.z_width - 1)) <= zmin
