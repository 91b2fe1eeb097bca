"""Bit-serial divider and square root (hw/rtl/seqarith.py) against Python's // and math.isqrt."""
import math

import numpy as np
import pytest

from hw.errors import BinbertError
from hw.rtl.seqarith import SeqDivider, SeqMultiplier, SeqSqrt, quotient_bits
from tests.hw.rtl.hwsim import recv, run, send


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


@pytest.mark.parametrize("a_bits,b_bits,steps", [(4, 3, 1), (5, 4, 2), (3, 5, 3)])
def test_multiplier_exhaustive_small(a_bits, b_bits, steps):
    """Every signed operand pair (extremes included), with idles and backpressure, tag carried."""
    mul = SeqMultiplier(a_bits=a_bits, b_bits=b_bits, steps=steps, tag=4)
    pairs = [(a, b) for a in range(-(1 << a_bits - 1), 1 << a_bits - 1)
             for b in range(-(1 << b_bits - 1), 1 << b_bits - 1)]
    got = []

    async def feed(ctx):
        await send(ctx, mul.i, [{"a": a, "b": b, "tag": k % 16} for k, (a, b) in enumerate(pairs)],
                   np.random.default_rng(0), 0.2)

    async def read(ctx):
        got.extend(await recv(ctx, mul.o, len(pairs), np.random.default_rng(1), 0.3,
                              convert=lambda v: (int(v.p), int(v.tag))))

    run(mul, feed, read, deadline_cycles=20 * len(pairs))
    assert got == [(a * b, k % 16) for k, (a, b) in enumerate(pairs)]
    assert mul.cycles == -(-b_bits // steps) + 1


def test_multiplier_back_to_back_cycles():
    """Without idles or backpressure an operation costs exactly ``cycles``."""
    mul = SeqMultiplier(a_bits=12, b_bits=9, steps=2)
    rng = np.random.default_rng(7)
    pairs = [(int(rng.integers(-2048, 2048)), int(rng.integers(-256, 256))) for _ in range(40)]
    stats, got = {}, []

    async def feed(ctx):
        await send(ctx, mul.i, [{"a": a, "b": b, "tag": 0} for a, b in pairs], rng)

    async def read(ctx):
        got.extend(await recv(ctx, mul.o, len(pairs), rng, convert=lambda v: int(v.p), stats=stats))

    run(mul, feed, read)
    assert got == [a * b for a, b in pairs]
    assert stats["cycles"] - stats["first"] == (len(pairs) - 1) * mul.cycles


def test_multiplier_bad_params():
    with pytest.raises(BinbertError, match="b_bits=1"):
        SeqMultiplier(a_bits=4, b_bits=1)
    with pytest.raises(BinbertError, match="steps=0"):
        SeqMultiplier(a_bits=4, b_bits=4, steps=0)


def test_only_control_registers_reset():
    """Operands and results carry no reset (busy / o_valid guard them; on an iCE40 a reset per
    data flip-flop costs placement freedom); the handshake state does."""
    from amaranth.hdl import Fragment

    for unit in (SeqDivider(dividend_bits=8, divisor_bits=4, q_bits=8, tag=3),
                 SeqSqrt(x_bits=8, tag=2), SeqMultiplier(a_bits=4, b_bits=4, tag=1)):
        regs = {}
        for st in Fragment.get(unit, None).statements["sync"]:
            regs.update({s.name: s.reset_less for s in st._lhs_signals()})
        assert {n for n, less in regs.items() if not less} == {"busy", "count", "o_valid"}, unit
