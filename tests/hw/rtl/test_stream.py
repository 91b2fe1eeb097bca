"""Regroup, Fork and StreamFifo: element order preserved under idles and backpressure, and
one beat per cycle where the lane counts allow it."""
import numpy as np
import pytest
from amaranth.hdl import signed

from hw.errors import BinbertError
from hw.rtl.stream import Fork, Regroup, StreamFifo
from tests.hw.rtl.hwsim import recv, run, send


@pytest.mark.parametrize("a,b", [(1, 4), (4, 1), (2, 3), (3, 2), (4, 4), (2, 8)])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_regroup_order(a, b, idle, stall):
    n = 2 * a * b * 3
    rng = np.random.default_rng(a * 10 + b)
    elems = rng.integers(-8, 8, n)
    dut = Regroup(signed(4), a, b)
    got, stats = [], {}

    async def prod(ctx):
        await send(ctx, dut.i, [[int(x) for x in elems[j:j + a]] for j in range(0, n, a)],
                   np.random.default_rng(1), idle)

    async def cons(ctx):
        got.extend(await recv(ctx, dut.o, n // b, np.random.default_rng(2), stall,
                              convert=lambda v: [int(x) for x in v], stats=stats))

    run(dut, prod, cons)
    assert np.array_equal(np.concatenate(got), elems)
    if not idle and (a % b == 0 or b % a == 0):
        assert stats["cycles"] <= max(n // a, n // b) + 2


def test_fork_and_fifo():
    vals = list(range(50))
    fork = Fork(8, 2)
    outs = [[], []]

    async def prod(ctx):
        await send(ctx, fork.i, vals, np.random.default_rng(0), 0.2)

    def reader(k, stall):
        async def tb(ctx):
            outs[k].extend(await recv(ctx, fork.outs()[k], len(vals), np.random.default_rng(k + 5), stall))
        return tb

    run(fork, prod, reader(0, 0.5), reader(1, 0.1))
    assert outs[0] == vals and outs[1] == vals

    f = StreamFifo(8, 4)
    got = []

    async def prod2(ctx):
        await send(ctx, f.i, vals, np.random.default_rng(0), 0.1)

    async def cons2(ctx):
        got.extend(await recv(ctx, f.o, len(vals), np.random.default_rng(1), 0.5))

    run(f, prod2, cons2)
    assert got == vals


def test_streamutil_bad_params():
    with pytest.raises(BinbertError, match="in_lanes=0"):
        Regroup(signed(4), 0, 2)
    with pytest.raises(BinbertError, match="count=0"):
        Fork(4, 0)
    with pytest.raises(BinbertError, match="depth=0"):
        StreamFifo(4, 0)
