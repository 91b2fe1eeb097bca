"""Bit-serial divider and square root (hw/seqarith.py) against Python's // and math.isqrt."""
import math

import numpy as np
import pytest

from hw.errors import BinbertError
from hw.seqarith import SeqDivider, SeqSqrt, quotient_bits
from tests.hw.hwsim import recv, run, send


def test_seq_units_exhaustive_small():
    """Every small operand pair, with idles and backpressure."""
    div = SeqDivider(dividend_bits=7, divisor_bits=4, q_bits=7)
    sq = SeqSqrt(x_bits=9)
    pairs = [(a, d) for d in range(1, 16) for a in range(0, 128, 3)]
    xs = list(range(0, 512, 5)) + [511]
    got_q, got_s = [], []

    async def feed_div(ctx):
        await send(ctx, div.i, [{"n": a, "d": d, "tag": 0} for a, d in pairs], np.random.default_rng(0), 0.2)

    async def read_div(ctx):
        got_q.extend(await recv(ctx, div.o, len(pairs), np.random.default_rng(1), 0.3,
                                convert=lambda v: int(v.q)))

    run(div, feed_div, read_div, deadline_cycles=40 * len(pairs))
    assert got_q == [a // d for a, d in pairs]

    async def feed_sq(ctx):
        await send(ctx, sq.i, [{"x": x, "tag": 0} for x in xs], np.random.default_rng(2), 0.2)

    async def read_sq(ctx):
        got_s.extend(await recv(ctx, sq.o, len(xs), np.random.default_rng(3), 0.3,
                                convert=lambda v: int(v.s)))

    run(sq, feed_sq, read_sq, deadline_cycles=40 * len(xs))
    assert got_s == [math.isqrt(x) for x in xs]


def test_divider_constant_and_tag():
    div = SeqDivider(dividend_bits=10, divisor_bits=3, q_bits=quotient_bits(1023, 6), divisor=6, tag=5)
    vals = list(range(0, 1024, 7))
    got = []

    async def feed(ctx):
        await send(ctx, div.i, [{"n": a, "tag": a % 32} for a in vals], np.random.default_rng(0))

    async def read(ctx):
        got.extend(await recv(ctx, div.o, len(vals), np.random.default_rng(1),
                              convert=lambda v: (int(v.q), int(v.tag))))

    run(div, feed, read, deadline_cycles=20 * len(vals))
    assert got == [(a // 6, a % 32) for a in vals]


def test_seq_bad_params():
    with pytest.raises(BinbertError, match="q_bits=0"):
        SeqDivider(dividend_bits=4, divisor_bits=2, q_bits=0)
    with pytest.raises(BinbertError, match="divisor=9 does not fit 3 bits"):
        SeqDivider(dividend_bits=4, divisor_bits=3, q_bits=4, divisor=9)
    with pytest.raises(BinbertError, match="x_bits=0"):
        SeqSqrt(x_bits=0)
    with pytest.raises(BinbertError, match="invalid"):
        quotient_bits(10, 0)


@pytest.mark.parametrize("steps", [2, 3, 7])
def test_divider_several_bits_per_cycle(steps):
    div = SeqDivider(dividend_bits=9, divisor_bits=5, q_bits=9, steps=steps)
    rng = np.random.default_rng(steps)
    pairs = [(int(a), int(d)) for a, d in zip(rng.integers(0, 512, 150), rng.integers(1, 32, 150))]
    pairs += [(511, 1), (0, 31), (511, 31)]
    got, stats = [], {}

    async def feed(ctx):
        await send(ctx, div.i, [{"n": a, "d": d, "tag": 0} for a, d in pairs], np.random.default_rng(0))

    async def read(ctx):
        got.extend(await recv(ctx, div.o, len(pairs), np.random.default_rng(1),
                              convert=lambda v: int(v.q), stats=stats))

    run(div, feed, read, deadline_cycles=20 * len(pairs))
    assert got == [a // d for a, d in pairs]
    assert div.cycles == -(-9 // steps) + 1
    assert stats["cycles"] == len(pairs) * div.cycles + 1  # back to back: one op per `cycles`
