"""sim.stream lane packing agrees with how Amaranth flattens ArrayLayout payloads."""
from __future__ import annotations

import random

import pytest
from amaranth.lib import data

from sim.stream import pack_lanes, to_signed, unpack_lanes


@pytest.mark.parametrize("width,count,signed", [(1, 7, False), (5, 4, True), (13, 3, True), (8, 16, False)])
def test_pack_matches_amaranth_array_layout(width, count, signed):
    rng = random.Random(width * 100 + count)
    shape = data.signed(width) if signed else data.unsigned(width)
    layout = data.ArrayLayout(shape, count)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    for _ in range(50):
        lanes = [rng.randint(lo, hi) for _ in range(count)]
        word = pack_lanes(lanes, width, signed=signed)
        assert word == layout.const(lanes).as_value().value & ((1 << layout.size) - 1)
        assert unpack_lanes(word, width, count, signed=signed) == lanes
        assert list(layout.from_bits(word)) == lanes


def test_pack_rejects_overflow():
    with pytest.raises(ValueError, match="lane 1: 8 does not fit signed 4 bits"):
        pack_lanes([0, 8], 4)
    with pytest.raises(ValueError, match="lane 0: -1 does not fit unsigned 4 bits"):
        pack_lanes([-1], 4, signed=False)


def test_to_signed():
    assert [to_signed(v, 3) for v in range(8)] == [0, 1, 2, 3, -4, -3, -2, -1]


class _Sig:
    value = 0


class _Port:
    def __init__(self):
        self.ready, self.valid = _Sig(), _Sig()


@pytest.mark.parametrize("prob", [0.0, 0.5, 0.75])
def test_backpressure_runs_depend_on_the_cycle_only(prob):
    """The agent draws its ready runs lazily (it sleeps while the output is not valid); the
    ready value of a cycle must not depend on which cycles were asked about before it."""
    from sim.stream import Backpressure

    def agent():
        return Backpressure(_Port(), clk=None, rng=random.Random(7), ready_prob=prob, max_run=4)

    every = agent()
    dense = [every.value_at(c) for c in range(2000)]
    sparse = agent()
    probe = sorted(random.Random(1).sample(range(2000), 150))
    assert [sparse.value_at(c) for c in probe] == [dense[c] for c in probe]
    if prob == 0.0:
        assert not any(dense)
    else:
        ones = sum(dense) / len(dense)
        assert abs(ones - prob) < 0.1
        runs = "".join(map(str, dense)).replace("01", "0 1").replace("10", "1 0").split()
        assert max(map(len, runs)) >= 4  # runs, not independent cycles
