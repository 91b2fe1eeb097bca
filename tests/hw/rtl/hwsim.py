"""Stream drivers for Amaranth-simulator tests of hw/ blocks (shared by tests/hw/test_*.py)."""
from __future__ import annotations

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator


async def send(ctx, port, payloads, rng: np.random.Generator, idle: float = 0.0):
    """Drive ``payloads`` into a stream, idling (valid low) with probability ``idle`` per beat.
    Holds the payload stable while valid and not ready (the stream rule)."""
    for p in payloads:
        while idle and rng.random() < idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload, p)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def recv(ctx, port, count: int, rng: np.random.Generator, stall: float = 0.0,
               convert=lambda v: v, stats: dict | None = None):
    """Collect ``count`` beats; ready is low with probability ``stall`` per cycle.
    ``stats['cycles']`` gets the cycle of the last transfer (from the start of recv), ``'first'``
    the first's and ``'each'`` every transfer's."""
    out = []
    cycle = 0
    while len(out) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        cycle += 1
        if ready and valid:
            out.append(convert(payload))
            if stats is not None:
                stats.setdefault("each", []).append(cycle)
    ctx.set(port.ready, 0)
    if stats is not None:
        stats["cycles"] = cycle
        if stats.get("each"):
            stats["first"] = stats["each"][0]
    return out


def run(dut, *testbenches, deadline_cycles: int = 100_000):
    """Run testbenches (async functions of ctx) to completion on a 1 MHz sync clock; a
    background watchdog fails the test if they have not finished after ``deadline_cycles``."""
    top = Module()  # owns the sync domain, so purely combinational blocks simulate too
    top.domains.sync = ClockDomain()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)

    async def watchdog(ctx):
        for _ in range(deadline_cycles):
            await ctx.tick()
        raise AssertionError(f"simulation still running after {deadline_cycles} cycles (hang?)")

    sim.add_testbench(watchdog, background=True)
    sim.run()
