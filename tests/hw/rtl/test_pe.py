"""XnorPopcountPE == PEParams.compute under random idles and backpressure; tree structure;
PEParams validation (one test per bad parameter) and its golden popcount."""
import numpy as np
import pytest
from amaranth.back import verilog

from hw.errors import BinbertError
from hw.rtl.pe import PEParams, XnorPopcountPE, stage_levels, tree_levels
from tests.hw.rtl.hwsim import recv, run, send


def _bits_to_int(bits):
    return int(sum(int(b) << i for i, b in enumerate(bits)))


@pytest.mark.parametrize("simd", [1, 2, 3, 8, 13, 64])
@pytest.mark.parametrize("pipe", ["zero", "one", "max"])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_pe_matches_golden(simd, pipe, idle, stall):
    params = PEParams(simd=simd, pipeline={"zero": 0, "one": 1, "max": tree_levels(simd)}[pipe])
    rng = np.random.default_rng(simd * 7 + params.pipeline)
    count = 60
    x = rng.integers(0, 2, (count, simd), dtype=np.uint8)
    w = rng.integers(0, 2, (count, simd), dtype=np.uint8)
    # include the extremes: all equal (popcount simd) and all different (0)
    w[0] = x[0]
    w[1] = 1 - x[1]
    expect = params.compute(x, w)
    dut = params.create()
    got = []
    payloads = [{"x": _bits_to_int(a), "w": _bits_to_int(b)} for a, b in zip(x, w)]

    async def producer(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(1), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, count, np.random.default_rng(2), stall))

    run(dut, producer, consumer, deadline_cycles=20 * count + 100)
    assert np.array_equal(np.array(got), expect)


@pytest.mark.parametrize("pipeline", [0, 2])
def test_pe_latency_and_throughput(pipeline):
    """One beat per cycle when never stalled; first output after params.latency cycles."""
    params = PEParams(simd=16, pipeline=pipeline)
    dut = params.create()
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (20, 16), dtype=np.uint8)
    w = rng.integers(0, 2, (20, 16), dtype=np.uint8)
    stats = {}
    got = []

    async def producer(ctx):
        await send(ctx, dut.i, [{"x": _bits_to_int(a), "w": _bits_to_int(b)} for a, b in zip(x, w)], rng)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, 20, rng, stats=stats))

    run(dut, producer, consumer)
    assert np.array_equal(np.array(got), params.compute(x, w))
    assert stats["first"] == params.latency + 1
    assert stats["cycles"] == params.latency + 20


def test_stage_levels_spread():
    assert stage_levels(7, 0) == set()
    assert stage_levels(7, 1) == {6}
    assert stage_levels(7, 7) == set(range(7))
    for lv in range(1, 9):
        for p in range(lv + 1):
            s = stage_levels(lv, p)
            assert len(s) == p and all(0 <= v < lv for v in s)


def test_pe_create_wrong_params():
    with pytest.raises(BinbertError, match="PEParams"):
        XnorPopcountPE(object())


@pytest.mark.parametrize("pipeline", [0, 2])
def test_pe_verilog(pipeline):
    dut = PEParams(simd=32, pipeline=pipeline).create()
    text = verilog.convert(dut, name="xnor_popcount_pe")
    assert "module xnor_popcount_pe" in text
    for port in ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready"):
        assert port in text


def test_pe_params_compute_rows():
    p = PEParams(simd=5)
    x = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    w = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    # computed independently of hw.golden.arith: count equal positions
    assert p.compute(x, w).tolist() == (x == w).sum(1).tolist()


@pytest.mark.parametrize("kwargs,match", [
    ({"simd": 0}, "simd=0"),
    ({"simd": 2.5}, "simd=2.5"),
    ({"simd": 8, "pipeline": -1}, "pipeline=-1"),
    ({"simd": 8, "pipeline": 9}, "pipeline=9"),
    ({"simd": True}, "simd=True"),
])
def test_pe_params_errors(kwargs, match):
    with pytest.raises(BinbertError, match=match):
        PEParams(**kwargs)


def test_pe_params_compute_shape_error():
    with pytest.raises(BinbertError, match="x_bits"):
        PEParams(simd=4).compute(np.zeros((2, 3)), np.zeros((2, 4)))


def test_tree_levels():
    # level 0 is the XNORs; then ceil(log2(simd)) adder levels
    assert [tree_levels(s) for s in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 3, 3, 4, 7, 8]
    assert PEParams(simd=64).max_pipeline == 7 and PEParams(simd=64, pipeline=3).latency == 3
