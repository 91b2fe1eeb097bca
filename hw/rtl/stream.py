"""Small stream plumbing for the encoder blocks: lane regrouping, fan-out, FIFOs.

All full-throughput (one beat per cycle where the lane counts allow it) and stall-safe:
a payload is held stable while valid and not ready (the ``lib.stream`` rule).
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.validate import positive_int, silence

__all__ = ["Regroup", "Fork", "StreamFifo", "lanes_layout"]


def lanes_layout(shape, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(shape, lanes)


class Regroup(wiring.Component):
    """Elements in order, ``in_lanes`` per input beat -> ``out_lanes`` per output beat.

    Lane ``j`` of a beat is element ``b·lanes + j``. When one lane count divides the other the
    converter gathers (or splits) at one beat per cycle on its busier side; otherwise it gathers
    to ``lcm(in, out)`` lanes and splits from there. A vector of ``n`` elements (n a multiple of
    both lane counts) needs no extra bookkeeping: beats never straddle vectors.
    """

    def __init__(self, shape, in_lanes: int, out_lanes: int):
        silence(self)
        positive_int("Regroup", "in_lanes", in_lanes)
        positive_int("Regroup", "out_lanes", out_lanes)
        silence(self, False)
        self.shape, self.in_lanes, self.out_lanes = shape, in_lanes, out_lanes
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(shape, in_lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(shape, out_lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        a, b = self.in_lanes, self.out_lanes
        if a == b:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        if b % a == 0:
            self._gather(m, self.i, self.o, b // a)
            return m
        if a % b == 0:
            self._split(m, self.i, self.o, a // b)
            return m
        mid = math.lcm(a, b)
        m.submodules.gather = g = Regroup(self.shape, a, mid)
        m.submodules.split = s = Regroup(self.shape, mid, b)
        wiring.connect(m, wiring.flipped(self.i), g.i)
        wiring.connect(m, g.o, s.i)
        wiring.connect(m, s.o, wiring.flipped(self.o))
        return m

    def _gather(self, m, i, o, k):
        a = self.in_lanes
        # payload registers: no reset (o_valid says when ``out`` holds a beat)
        parts = Signal(data.ArrayLayout(self.shape, a * (k - 1)), reset_less=True)
        count = Signal(range(k))
        out = Signal(data.ArrayLayout(self.shape, a * k), reset_less=True)
        o_valid = Signal()
        last = count == k - 1
        m.d.comb += [i.ready.eq(~last | ~o_valid | o.ready), o.valid.eq(o_valid), o.payload.eq(out)]
        with m.If(o.valid & o.ready):
            m.d.sync += o_valid.eq(0)
        beat_bits = data.ArrayLayout(self.shape, a).size
        with m.If(i.valid & i.ready):
            with m.If(last):
                m.d.sync += [count.eq(0), o_valid.eq(1),
                             out.eq(Cat(parts.as_value(), i.payload.as_value()))]
            with m.Else():
                # beats enter at the top and shift down: after k-1 beats beat c sits at lanes
                # [c·a, (c+1)·a), and the whole register shares one enable (one iCE40 control
                # set) instead of one per beat
                m.d.sync += [count.eq(count + 1),
                             parts.eq(Cat(parts.as_value()[beat_bits:], i.payload.as_value()))]

    def _split(self, m, i, o, k):
        b = self.out_lanes
        held = Signal(data.ArrayLayout(self.shape, b * k), reset_less=True)  # read under ``full``
        full = Signal()
        count = Signal(range(k))
        last = count == k - 1
        m.d.comb += [i.ready.eq(~full | (last & o.ready)), o.valid.eq(full)]
        for c in range(k):
            with m.If(count == c):
                for j in range(b):
                    m.d.comb += o.payload[j].eq(held[c * b + j])
        with m.If(o.valid & o.ready):
            m.d.sync += count.eq(Mux(last, 0, count + 1))
            with m.If(last):
                m.d.sync += full.eq(0)
        with m.If(i.valid & i.ready):
            m.d.sync += [held.eq(i.payload), full.eq(1)]


class Fork(wiring.Component):
    """One input stream to ``count`` outputs; a beat leaves when every output has taken it
    (each output may take it in a different cycle)."""

    def __init__(self, shape, count: int):
        silence(self)
        positive_int("Fork", "count", count)
        silence(self, False)
        self.count = count
        members = {"i": In(stream.Signature(shape))}
        for k in range(count):
            members[f"o{k}"] = Out(stream.Signature(shape))
        super().__init__(members)

    def outs(self):
        return [getattr(self, f"o{k}") for k in range(self.count)]

    def elaborate(self, platform):
        m = Module()
        outs = self.outs()
        done = Signal(self.count)  # outputs that already took the current beat
        took = [o.valid & o.ready for o in outs]
        all_done = Signal()
        m.d.comb += all_done.eq(sum((done[k] | took[k]) for k in range(self.count)) == self.count)
        for k, o in enumerate(outs):
            m.d.comb += [o.payload.eq(self.i.payload), o.valid.eq(self.i.valid & ~done[k])]
        m.d.comb += self.i.ready.eq(all_done)
        with m.If(self.i.valid):
            with m.If(all_done):
                m.d.sync += done.eq(0)
            with m.Else():
                for k in range(self.count):
                    with m.If(took[k]):
                        m.d.sync += done[k].eq(1)
        return m


class StreamFifo(wiring.Component):
    """A ``depth``-entry FIFO (amaranth.lib.fifo.SyncFIFOBuffered) with stream ports and any
    payload shape."""

    def __init__(self, shape, depth: int):
        silence(self)
        positive_int("StreamFifo", "depth", depth)
        silence(self, False)
        self.shape, self.depth = shape, depth
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self.shape).width if not isinstance(self.shape, data.Layout) else self.shape.size
        m.submodules.fifo = f = fifo.SyncFIFOBuffered(width=width, depth=self.depth)
        m.d.comb += [
            f.w_data.eq(self.i.payload if not hasattr(self.i.payload, "as_value") else self.i.payload.as_value()),
            f.w_en.eq(self.i.valid), self.i.ready.eq(f.w_rdy),
            self.o.valid.eq(f.r_rdy), f.r_en.eq(self.o.ready),
        ]
        if hasattr(self.o.payload, "as_value"):
            m.d.comb += self.o.payload.as_value().eq(f.r_data)
        else:
            m.d.comb += self.o.payload.eq(f.r_data)
        return m
