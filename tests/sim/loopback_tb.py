"""A tiny stream design + cocotb bench that proves sim.runner / sim.stream without any binbert block.

``AddParams(width, lanes, bug)``: i payload = ``lanes`` pairs of unsigned ``width``-bit
operands (a lanes at the LSBs, then b lanes), o payload = ``lanes`` signed sums a-b in
``width+1`` bits; one register stage with a skid-free ready (ready = o.ready | ~o.valid).
``bug`` plants a fault so the tests can prove that a wrong design fails:
``"lane"`` corrupts lane 1 when its a == 3, ``"drop"`` loses every 100th beat,
``"hang"`` never raises o.valid. ``fsm=True`` builds the same function as a one-entry buffer
whose o.valid is decoded combinationally from an FSM state (an ``always @*`` block in Verilog).
"""
from __future__ import annotations

import dataclasses
import random

import cocotb
import numpy as np
from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sim.runner import load_bench
from sim.stream import StreamBench, pack_lanes, unpack_lanes


@dataclasses.dataclass(frozen=True)
class AddParams:
    width: int = 8
    lanes: int = 2
    bug: str = ""
    fsm: bool = False

    def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)

    def create(self) -> "SubLanes":
        return SubLanes(self)


class SubLanes(wiring.Component):
    def __init__(self, params: AddParams):
        self.params = params
        w, n = params.width, params.lanes
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(w, n), "b": data.ArrayLayout(w, n)}))),
            "o": Out(stream.Signature(data.ArrayLayout(data.signed(w + 1), n))),
        })

    def elaborate(self, platform):
        if self.params.fsm:
            return self._elaborate_fsm()
        m = Module()
        p = self.params
        take = Signal()
        count = Signal(range(100))
        m.d.comb += [self.i.ready.eq(self.o.ready | ~self.o.valid), take.eq(self.i.valid & self.i.ready)]
        with m.If(self.o.ready | ~self.o.valid):
            m.d.sync += self.o.valid.eq(self.i.valid & (p.bug != "hang"))
        with m.If(take):
            m.d.sync += count.eq(count + 1)
            with m.If(count == 99):
                m.d.sync += count.eq(0)
                if p.bug == "drop":
                    m.d.sync += self.o.valid.eq(0)
            for j in range(p.lanes):
                diff = self.i.payload.a[j] - self.i.payload.b[j]
                if p.bug == "lane" and j == 1:
                    diff = diff + (self.i.payload.a[j] == 3)
                m.d.sync += self.o.payload[j].eq(diff)
        return m


    def _elaborate_fsm(self):
        m = Module()
        p = self.params
        held = Signal.like(self.o.payload)
        m.d.comb += self.o.payload.eq(held)
        with m.FSM():
            with m.State("EMPTY"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    for j in range(p.lanes):
                        m.d.sync += held[j].eq(self.i.payload.a[j] - self.i.payload.b[j])
                    m.next = "FULL"
            with m.State("FULL"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "EMPTY"
        return m


class AddModel:
    def __init__(self, params: AddParams):
        self.p = params

    def feed(self, beat: int):
        p = self.p
        a = unpack_lanes(beat, p.width, p.lanes, signed=False)
        b = unpack_lanes(beat >> (p.width * p.lanes), p.width, p.lanes, signed=False)
        return [(pack_lanes(p.compute(a, b), p.width + 1), "")]


@cocotb.test()
async def loopback(dut):
    cfg = load_bench()
    p: AddParams = cfg.params
    rng = random.Random(cfg.seed)
    bench = StreamBench(dut, model=AddModel(p), rng=rng,
                        out_lanes=lambda w: unpack_lanes(w, p.width + 1, p.lanes))
    await bench.start()
    top = (1 << p.width) - 1
    edges = [(0, 0), (top, 0), (0, top), (top, top)]
    beats = [pack_lanes([a] * p.lanes, p.width, signed=False)
             | (pack_lanes([b] * p.lanes, p.width, signed=False) << (p.width * p.lanes))
             for a, b in edges]
    beats += [rng.getrandbits(2 * p.width * p.lanes) for _ in range(cfg.vectors)]
    await bench.run(beats, len(beats), max_cycles=20 * len(beats) + 100)
    await bench.finish(len(beats))
    cfg.write_stats(beats=len(beats), first_cycle=bench.out_monitor.cycles[0],
                    last_cycle=bench.out_monitor.cycles[-1])
