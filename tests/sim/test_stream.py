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
