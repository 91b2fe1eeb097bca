"""MatrixVectorUnit == MVUParams.compute (golden, hw.golden.arith) under idles and backpressure,
at the model's cycle count; parameter validation; ROM images; Verilog generation."""
import numpy as np
import pytest
from amaranth.back import verilog

from hw.errors import BinbertError
from hw.rtl.mvu import MatrixVectorUnit
from hw.rtl.params import MVUParams
from tests.hw.rtl.hwsim import recv, run, send


def _random_params(rng, *, k, n, pe, simd, a_bits=1, mmv=1, pipeline=1, balanced=False, **kw):
    w = rng.integers(0, 2, (n, k), dtype=np.uint8)
    if balanced:  # every row has the same number of -1 weights: constant row offsets
        w[:] = 0
        w[:, : k // 2] = 1
        w = np.array([rng.permutation(row) for row in w])
    return MVUParams(k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv, weights=w, pipeline=pipeline, **kw)


def _random_inputs(rng, params, vectors):
    if params.a_bits == 1:
        return rng.integers(0, 2, (vectors, params.k))
    lo, hi = -(1 << (params.a_bits - 1)), (1 << (params.a_bits - 1))
    x = rng.integers(lo, hi, (vectors, params.k))
    x[0] = lo  # extremes: the largest |y| the accumulator must hold
    if vectors > 1:
        x[1] = hi - 1
    return x


def simulate(params, x, *, idle=0.0, stall=0.0, seed=0):
    """Run x through the RTL; returns (y (V, n), stats)."""
    dut = params.create()
    beats = params.pack_input(x)
    n_out = (x.shape[0] // params.mmv) * params.nf
    lanes = params.pe * params.mmv
    got, stats = [], {}

    async def producer(ctx):
        await send(ctx, dut.i, beats, np.random.default_rng(seed + 1), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, n_out, np.random.default_rng(seed + 2), stall,
                              convert=lambda v: [v[j] for j in range(lanes)], stats=stats))

    budget = (len(beats) + n_out) * 4 + x.shape[0] // params.mmv * params.cycles_per_vector * 6 + 200
    run(dut, producer, consumer, deadline_cycles=budget)
    return params.unpack_output(got), stats


CASES = [
    # k, n, pe, simd, a_bits, mmv
    (16, 8, 2, 4, 1, 1),
    (12, 6, 3, 3, 1, 1),     # odd SIMD, odd K
    (32, 4, 4, 32, 1, 1),    # SF = 1, NF = 1
    (24, 8, 1, 8, 1, 2),     # MMV
    (16, 8, 4, 8, 2, 1),
    (18, 6, 2, 6, 4, 1),
    (16, 4, 2, 4, 8, 1),
    (16, 8, 2, 8, 4, 2),     # bit-serial with MMV
    (64, 8, 4, 64, 1, 1),    # the benchmark's SIMD 64 lane
]


@pytest.mark.parametrize("k,n,pe,simd,a_bits,mmv", CASES)
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.5)])
def test_mvu_matches_golden(k, n, pe, simd, a_bits, mmv, idle, stall):
    rng = np.random.default_rng(k * 131 + n * 7 + a_bits + mmv)
    params = _random_params(rng, k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv)
    x = _random_inputs(rng, params, 6 * mmv)
    y, _ = simulate(params, x, idle=idle, stall=stall, seed=k + n)
    assert np.array_equal(y, params.compute(x))


@pytest.mark.parametrize("pipeline", [0, 2, "max"])
@pytest.mark.parametrize("a_bits", [1, 3])
def test_mvu_pipeline_depths(pipeline, a_bits):
    rng = np.random.default_rng(5 + a_bits)
    pipe = params_max = None
    probe = _random_params(rng, k=16, n=4, pe=2, simd=8, a_bits=a_bits)
    pipe = probe.pe_params.max_pipeline if pipeline == "max" else pipeline
    params = _random_params(rng, k=16, n=4, pe=2, simd=8, a_bits=a_bits, pipeline=pipe)
    x = _random_inputs(rng, params, 5)
    y, _ = simulate(params, x, idle=0.2, stall=0.3, seed=pipe)
    assert np.array_equal(y, params.compute(x))


@pytest.mark.parametrize("a_bits", [1, 2])
def test_mvu_constant_row_offsets(a_bits):
    """Rows with equal N_w take the constant-table path instead of the offset ROM."""
    rng = np.random.default_rng(11)
    params = _random_params(rng, k=16, n=8, pe=2, simd=4, a_bits=a_bits, balanced=True)
    d, r = params.row_constants()
    assert np.all(d == d[0]) and np.all(r == r[0])
    x = _random_inputs(rng, params, 4)
    y, _ = simulate(params, x, idle=0.2, stall=0.2)
    assert np.array_equal(y, params.compute(x))


@pytest.mark.parametrize("k,n,pe,simd,a_bits,mmv", [
    (16, 8, 2, 4, 1, 1),    # NF = SF = 4: loading and computing balanced ... and
    (8, 2, 2, 8, 1, 1),     # NF = SF = 1: the tightest ping-pong case
    (16, 8, 4, 4, 2, 1),
    (12, 4, 4, 4, 1, 2),
])
def test_mvu_throughput(k, n, pe, simd, a_bits, mmv):
    """A burst with an always-ready output takes <= 1.10x the model's A*NF*SF per vector
    (after the fixed fill latency)."""
    rng = np.random.default_rng(3)
    params = _random_params(rng, k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv)
    groups = 24
    x = _random_inputs(rng, params, groups * mmv)
    y, stats = simulate(params, x)
    assert np.array_equal(y, params.compute(x))
    model = groups * params.cycles_per_vector
    fill = params.sf + params.latency  # first vector's load + pipeline
    assert stats["cycles"] <= 1.10 * model + fill, (stats, model, fill)
    # steady state: exactly one group per A*NF*SF cycles, measured between first and last beat
    per_fold = params.a_bits * params.sf
    assert stats["cycles"] - stats["first"] == (groups - 1) * params.cycles_per_vector + (params.nf - 1) * per_fold


@pytest.mark.parametrize("a_bits,balanced,buffer", [(1, False, "auto"), (4, False, "block"), (2, True, "logic")])
def test_mvu_verilog(a_bits, balanced, buffer):
    rng = np.random.default_rng(4)
    params = _random_params(rng, k=32, n=8, pe=4, simd=8, a_bits=a_bits, mmv=2, balanced=balanced,
                            buffer=buffer)
    text = verilog.convert(params.create(), name="mvu")
    assert "module mvu" in text and "o__payload" in text and "i__ready" in text
    assert (f'ram_style = "{buffer}"' in text) == (buffer != "auto")


def test_mvu_create_wrong_params():
    with pytest.raises(BinbertError, match="MVUParams"):
        MatrixVectorUnit(object())
