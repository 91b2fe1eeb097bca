"""LinearUnit (MVU + requantizer) == BinaryLinear.compute for T = 1/2 terms, 1-bit and A-bit
inputs, code / GELU-table / residual outputs; steady state = the MVU's A·NF·SF per vector."""
import numpy as np
import pytest

from hw.errors import BinbertError
from hw.rtl.linear import LinearUnit, LinearUnitParams
from hw.golden.random import random_binary_linear, random_codes
from tests.hw.rtl.hwsim import recv, run, send


def _run(params, x, *, idle=0.0, stall=0.0):
    dut = params.create()
    simd, ol = params.simd, params.out_lanes
    payloads = [[int(v) for v in row[j:j + simd]] for row in x for j in range(0, len(row), simd)]
    got, stats = [], {}

    async def prod(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(1), idle)

    async def cons(ctx):
        got.extend(await recv(ctx, dut.o, len(x) * params.out_beats, np.random.default_rng(2), stall,
                              convert=lambda v: [int(c) for c in v], stats=stats))

    run(dut, prod, cons, deadline_cycles=10 * len(x) * (params.latency + params.cycles) + 500)
    return np.array(got).reshape(len(x), -1), stats


@pytest.mark.parametrize("terms,in_bits,out,pe,simd,out_lanes", [
    (1, 1, "code", 4, 8, None), (2, 2, "gelu", 4, 4, 4), (2, 1, "res", 2, 16, 2), (1, 3, "code", 8, 8, 2),
    (2, 4, "code", 2, 32, 4)])   # SF = 1 with A = 4 and per-row MVU constants (a regression)
def test_linear_matches_golden(terms, in_bits, out, pe, simd, out_lanes):
    rng = np.random.default_rng(terms * 10 + in_bits)
    lin = random_binary_linear(rng, k=32, n=16, terms=terms, in_bits=in_bits, out=out, out_bits=4)
    params = LinearUnitParams(lin=lin, pe=pe, simd=simd, out_lanes=out_lanes)
    x = random_codes(rng, in_bits, (12, 32))
    got, _ = _run(params, x, idle=0.2, stall=0.3)
    want = params.compute(x)
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 2


def test_linear_throughput():
    rng = np.random.default_rng(3)
    lin = random_binary_linear(rng, k=32, n=16, terms=2, in_bits=2, out="code")
    params = LinearUnitParams(lin=lin, pe=8, simd=8)
    vectors = 16
    x = random_codes(rng, 2, (vectors, 32))
    got, stats = _run(params, x)
    assert np.array_equal(got, params.compute(x))
    per_vec = (stats["cycles"] - stats["first"]) / (vectors - 1)
    assert per_vec <= 1.10 * params.cycles, (per_vec, params.cycles)


def test_linear_bad_params():
    lin = random_binary_linear(np.random.default_rng(0), k=16, n=8, terms=2, in_bits=1, out="code")
    with pytest.raises(BinbertError, match="pe=3 must be a multiple of the 2 weight terms"):
        LinearUnitParams(lin=lin, pe=3, simd=4)
    with pytest.raises(BinbertError, match="simd=5 does not divide k=16"):
        LinearUnitParams(lin=lin, pe=2, simd=5)
    with pytest.raises(BinbertError, match="out_lanes=3 does not divide n=8"):
        LinearUnitParams(lin=lin, pe=2, simd=4, out_lanes=3)
    with pytest.raises(BinbertError, match="lin must be"):
        LinearUnitParams(lin=None, pe=2, simd=4)
    with pytest.raises(BinbertError, match="params must be LinearUnitParams"):
        LinearUnit(lin)
