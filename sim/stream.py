"""Generic cocotb agents for Amaranth ``lib.stream`` ports, after cocotb's matrix_multiplier
example: a driver, monitors, a backpressure generator and an in-order scoreboard.

A stream port ``i`` of an Amaranth component flattens in Verilog to ``i__payload``,
``i__valid`` and ``i__ready``. A beat transfers at the rising clock edge where valid and ready
are both 1. Timing discipline (identical on Verilator and Icarus):
  * drivers (payload/valid, ready) write right after a rising edge;
  * monitors sample at the falling edge, when every write and every combinational path of the
    cycle has settled, so they see exactly what the next rising edge will transfer.

Data flow of a bench::

    StreamDriver -> DUT.i -> StreamMonitor(i) -> model.feed(beat) -> Scoreboard.expect
                    DUT.o -> StreamMonitor(o) ------------------------> Scoreboard.observe
                    DUT.o.ready <- Backpressure

Payloads are Python ints (bit 0 = LSB of the flattened payload). ``pack_lanes`` /
``unpack_lanes`` convert between lane arrays (signed or unsigned, lane 0 at the LSB, as
Amaranth's ``ArrayLayout`` flattens) and payload ints.
"""
from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, FallingEdge, RisingEdge, Timer, with_timeout
from cocotb.triggers import SimTimeoutError

# --------------------------------------------------------------------------- lane packing


def to_signed(value: int, width: int) -> int:
    """Two's-complement reinterpretation of the low ``width`` bits of ``value``."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def pack_lanes(values: Iterable[int], width: int, *, signed: bool = True) -> int:
    """Lane ``j`` of ``values`` -> bits ``[j*width, (j+1)*width)`` of one int (lane 0 = LSB).

    Raises ValueError when a value does not fit ``width`` bits (signed or unsigned).
    """
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    mask = (1 << width) - 1
    word = 0
    for j, v in enumerate(values):
        v = int(v)
        if not lo <= v <= hi:
            raise ValueError(f"lane {j}: {v} does not fit {'signed' if signed else 'unsigned'} "
                             f"{width} bits")
        word |= (v & mask) << (j * width)
    return word


def unpack_lanes(word: int, width: int, count: int, *, signed: bool = True) -> list[int]:
    """Inverse of :func:`pack_lanes`: ``count`` lanes of ``width`` bits from ``word``."""
    mask = (1 << width) - 1
    lanes = [(word >> (j * width)) & mask for j in range(count)]
    if signed:
        lanes = [to_signed(v, width) for v in lanes]
    return lanes


def int_to_bits(word: int, width: int) -> "np.ndarray":
    """Bits ``0 .. width-1`` of ``word`` as a uint8 array (bit 0 first)."""
    word = int(word) & ((1 << width) - 1)
    raw = np.frombuffer(word.to_bytes(-(-width // 8) or 1, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:width]


def bits_to_int(bits: Iterable[int]) -> int:
    """Inverse of :func:`int_to_bits`: element ``j`` -> bit ``j``."""
    b = np.asarray(list(bits) if not isinstance(bits, np.ndarray) else bits, dtype=np.uint8)
    return int.from_bytes(np.packbits(b, bitorder="little").tobytes(), "little")


# --------------------------------------------------------------------------- ports and agents


class StreamPort:
    """The three Verilog signals of one flattened ``lib.stream`` port (``<name>__payload`` ...)."""

    def __init__(self, dut: Any, name: str):
        self.name = name
        try:
            self.payload = getattr(dut, f"{name}__payload")
            self.valid = getattr(dut, f"{name}__valid")
            self.ready = getattr(dut, f"{name}__ready")
        except AttributeError as exc:
            raise AssertionError(f"DUT has no stream port {name!r} "
                                 f"({name}__payload/__valid/__ready): {exc}") from None
        self.width = len(self.payload)

    def expect_width(self, width: int, what: str) -> None:
        """Fail early, with the contract in the message, when the RTL port has another width."""
        if self.width != width:
            raise AssertionError(f"{self.name}__payload is {self.width} bits, the interface "
                                 f"contract says {width} ({what})")

    def read_payload(self) -> int:
        value = self.payload.value
        try:
            return int(value)
        except ValueError:
            raise AssertionError(f"{self.name}__payload holds X/Z while valid: {value}") from None


def _bit(handle: Any) -> bool:
    # X/Z on a handshake signal is a design bug; make it loud rather than read as 0.
    value = handle.value
    try:
        return bool(int(value))
    except ValueError:
        name = getattr(handle, "_name", "handshake")
        raise AssertionError(f"{name} is {value} (X/Z) after reset") from None


def current_cycle(period_ns: int) -> int:
    """Index of the clock cycle now running (cycle c spans rising edge c .. rising edge c+1)."""
    return int(get_sim_time("ps")) // (period_ns * 1000)


async def until_cycle(clk: Any, cycle: int, period_ns: int) -> None:
    """Return just after rising edge ``cycle`` with two wakeups however far away it is.

    ``ClockCycles`` resumes Python on every edge; a Timer to a quarter period before the
    edge (a time no clock or signal edge uses), then the edge itself, skips the cycles between.
    """
    period_ps = period_ns * 1000
    wait_ps = cycle * period_ps - period_ps // 4 - int(get_sim_time("ps"))
    if wait_ps > 0:
        await Timer(wait_ps, "ps")
    await RisingEdge(clk)


class Agent:
    """A cocotb coroutine (:meth:`_run`) that :meth:`start` launches and :meth:`stop` cancels."""

    _task = None

    def start(self) -> None:
        self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:  # pragma: no cover - every agent defines its own
        raise NotImplementedError


class StreamDriver(Agent):
    """Drives ``payload``/``valid`` of a DUT input stream from a queue of beats.

    With probability ``idle_prob`` the driver inserts 1..``max_idle`` idle cycles (valid low)
    before a beat; ``idle_prob = 0`` gives back-to-back beats. Python runs once per beat and
    when the DUT's ready rises, never per cycle of a stall.
    """

    def __init__(self, port: StreamPort, clk: Any, *, rng: random.Random,
                 idle_prob: float = 0.0, max_idle: int = 3):
        self.port, self.clk, self.rng = port, clk, rng
        self.idle_prob, self.max_idle = idle_prob, max_idle
        self._queue: deque[int] = deque()
        self._wake = Event()
        self._empty = Event()
        self._empty.set()
        self.sent = 0
        port.valid.value = 0

    def send(self, beats: Iterable[int]) -> None:
        self._queue.extend(int(b) for b in beats)
        if self._queue:
            self._empty.clear()
            self._wake.set()

    async def wait_sent(self) -> None:
        """Return when every queued beat has been transferred."""
        await self._empty.wait()

    async def _run(self) -> None:
        port = self.port
        while True:
            if not self._queue:
                port.valid.value = 0
                self._empty.set()
                self._wake.clear()
                await self._wake.wait()
                await RisingEdge(self.clk)
                continue
            if self.idle_prob and self.rng.random() < self.idle_prob:
                port.valid.value = 0
                await ClockCycles(self.clk, self.rng.randint(1, self.max_idle))
            port.payload.value = self._queue[0]
            port.valid.value = 1
            while True:  # hold the beat until the DUT takes it
                await FallingEdge(self.clk)
                if _bit(port.ready):
                    break
                await RisingEdge(port.ready)
            await RisingEdge(self.clk)  # the transfer edge
            self._queue.popleft()
            self.sent += 1


class Backpressure(Agent):
    """Drives ``ready`` of a DUT output stream: runs of 1..``max_run`` cycles, each run ready
    with probability ``ready_prob``. ``ready_prob = 1`` holds ready high (no backpressure).

    The runs are a function of the cycle number alone (drawn lazily, in order), but ``ready`` is
    only driven while the output is valid: ready cannot matter in a cycle whose valid is low
    (a stream's valid never waits for ready), so the agent sleeps until valid rises instead of
    waking Python every cycle of a long compute phase. The transfers are therefore exactly
    those of an agent that toggled ready every cycle, on any simulator.
    """

    def __init__(self, port: StreamPort, clk: Any, *, rng: random.Random,
                 ready_prob: float = 1.0, max_run: int = 4, period_ns: int = 10):
        self.port, self.clk, self.rng = port, clk, rng
        self.max_run, self.period_ns = max_run, period_ns
        self._prob = ready_prob
        self._changed = Event()
        self._run_end = 0      # first cycle after the current run
        self._run_value = 1
        port.ready.value = 1 if ready_prob >= 1 else 0

    @property
    def ready_prob(self) -> float:
        return self._prob

    @ready_prob.setter
    def ready_prob(self, prob: float) -> None:
        self._prob = prob
        self._changed.set()

    def value_at(self, cycle: int) -> int:
        """``ready`` during ``cycle``: draws the runs up to the one covering it (in order)."""
        while cycle >= self._run_end:
            self._run_value = int(self.rng.random() < self._prob)
            self._run_end += self.rng.randint(1, self.max_run)
        return self._run_value

    async def _run(self) -> None:
        port, clk = self.port, self.clk
        self._run_end = current_cycle(self.period_ns)
        while True:
            if self._prob >= 1:
                port.ready.value = 1
                self._changed.clear()
                await self._changed.wait()
                await RisingEdge(clk)
                self._run_end = current_cycle(self.period_ns)  # runs restart here
                continue
            cycle = current_cycle(self.period_ns)   # just after rising edge `cycle`
            port.ready.value = self.value_at(cycle)
            await FallingEdge(clk)                  # settled: can this cycle transfer?
            if not _bit(port.valid):
                await RisingEdge(port.valid)        # after the edge that raised it
                continue
            await until_cycle(clk, self._run_end, self.period_ns)


class StreamMonitor(Agent):
    """Records every beat transferred on a stream port (and its cycle) and calls ``callback``.
    Python wakes once per transfer and on the rising edges of valid/ready, not per idle cycle."""

    def __init__(self, port: StreamPort, clk: Any, *, period_ns: int,
                 callback: Callable[[int], None] | None = None):
        self.port, self.clk, self.period_ns = port, clk, period_ns
        self.callback = callback
        self.beats: list[int] = []
        self.cycles: list[int] = []  # cycle index (sim time / period) of each transfer

    async def _run(self) -> None:
        port = self.port
        while True:
            await FallingEdge(self.clk)
            valid = _bit(port.valid)
            if not valid:
                await RisingEdge(port.valid)  # sleep through idle stretches
                continue
            if not _bit(port.ready):
                await RisingEdge(port.ready)
                continue
            beat = port.read_payload()
            self.beats.append(beat)
            self.cycles.append(current_cycle(self.period_ns))
            if self.callback is not None:
                self.callback(beat)


# --------------------------------------------------------------------------- checking


class Model(Protocol):
    """A golden model seen beat by beat: input beats in, expected output beats out."""

    def feed(self, beat: int) -> Sequence[tuple[int, str]]:
        """Consume one input beat; return the (output beat, description) pairs it completes."""


class PlannedModel:
    """A golden model evaluated in one vectorised batch, still fed by the input monitor.

    Benches know their stimulus up front, so they compute every expected output with one
    ``params.compute`` call (:meth:`plan`). :meth:`feed` groups the *observed* input beats
    (``group`` beats each) and returns the planned outputs only when the observed group equals
    the planned one; otherwise it calls ``evaluate(observed_beats, group_index)`` so the
    expectation always follows what the DUT actually received.
    """

    def __init__(self, group: int, evaluate: Callable[[list[int], int], list[tuple[int, str]]]):
        self.group = group
        self.evaluate = evaluate
        self._plan: deque[tuple[list[int], list[tuple[int, str]]]] = deque()
        self._pending: list[int] = []
        self.groups = 0
        self.unplanned = 0

    def plan(self, inputs: Sequence[Sequence[int]], outputs: Sequence[Sequence[tuple[int, str]]]) -> None:
        for i, o in zip(inputs, outputs, strict=True):
            self._plan.append((list(i), list(o)))

    def feed(self, beat: int) -> Sequence[tuple[int, str]]:
        self._pending.append(beat)
        if len(self._pending) < self.group:
            return []
        observed, self._pending = self._pending, []
        index = self.groups
        self.groups += 1
        if self._plan:
            planned_in, planned_out = self._plan.popleft()
            if planned_in == observed:
                return planned_out
        self.unplanned += 1
        return self.evaluate(observed, index)


class Scoreboard:
    """In-order checker: the n-th observed output beat must equal the n-th expected one.

    ``lanes(beat)`` splits a payload into lane values for the mismatch message (beat index,
    lane, got, expected). Mismatches are collected (up to ``max_errors`` reported in detail)
    and raised by :meth:`check`, so one run shows how widespread a failure is.
    """

    def __init__(self, name: str, *, lanes: Callable[[int], list[int]] | None = None,
                 max_errors: int = 5):
        self.name = name
        self.lanes = lanes
        self.max_errors = max_errors
        self._expected: deque[tuple[int, str]] = deque()
        self._observed: deque[int] = deque()
        self.matched = 0
        self.compared = 0
        self.errors: list[str] = []
        self.mismatches = 0
        self._target: int | None = None
        self._reached = Event()

    def expect(self, beat: int, info: str = "") -> None:
        self._expected.append((int(beat), info))
        self._match()

    def observe(self, beat: int) -> None:
        self._observed.append(int(beat))
        self._match()

    def _match(self) -> None:
        while self._expected and self._observed:
            (want, info), got = self._expected.popleft(), self._observed.popleft()
            index = self.compared
            self.compared += 1
            if got == want:
                self.matched += 1
            else:
                self.mismatches += 1
                if len(self.errors) < self.max_errors:
                    self.errors.append(self._describe(index, info, got, want))
        if self._target is not None and self.compared + len(self._observed) >= self._target:
            self._reached.set()

    def _describe(self, index: int, info: str, got: int, want: int) -> str:
        where = f"{self.name} beat {index}" + (f" ({info})" if info else "")
        if self.lanes is None:
            return f"{where}: got {got:#x} expected {want:#x}"
        g, w = self.lanes(got), self.lanes(want)
        bad = [j for j in range(len(w)) if g[j] != w[j]]
        shown = ", ".join(f"lane {j} got {g[j]} expected {w[j]}" for j in bad[:4])
        more = f" (+{len(bad) - 4} more lanes)" if len(bad) > 4 else ""
        return f"{where}: {shown}{more}"

    async def wait_for(self, count: int, *, timeout_ns: int) -> None:
        """Wait until ``count`` output beats have been observed (or raise on timeout)."""
        self._target = count
        self._reached.clear()
        self._match()
        if self.compared + len(self._observed) >= count:
            return
        try:
            await with_timeout(self._reached.wait(), timeout_ns, "ns")
        except SimTimeoutError:
            raise AssertionError(
                f"{self.name}: timeout after {timeout_ns} ns: {self.compared + len(self._observed)}"
                f" of {count} output beats arrived ({len(self._expected)} expected beats pending)"
            ) from None

    def check(self, total: int | None = None) -> None:
        """Raise AssertionError on any mismatch, missing or unexpected beat."""
        problems = list(self.errors)
        if self.mismatches > len(self.errors):
            problems.append(f"... {self.mismatches} mismatching beats in all")
        if self._observed:
            problems.append(f"{len(self._observed)} unexpected {self.name} beats "
                            f"(first {self._observed[0]:#x})")
        if total is not None and self.compared != total:
            problems.append(f"{self.compared} of {total} {self.name} beats compared")
        if problems:
            raise AssertionError(f"{self.name}: {self.matched} beats matched; " + "; ".join(problems))


# --------------------------------------------------------------------------- harness


class StreamBench:
    """Clock, reset and the four agents around a DUT with one input and one output stream."""

    def __init__(self, dut: Any, *, model: Model, rng: random.Random,
                 out_lanes: Callable[[int], list[int]] | None = None,
                 idle_prob: float = 0.2, ready_prob: float = 0.75, period_ns: int = 10,
                 inp: str = "i", out: str = "o"):
        self.dut, self.model, self.rng, self.period_ns = dut, model, rng, period_ns
        self.clk = dut.clk
        self.i = StreamPort(dut, inp)
        self.o = StreamPort(dut, out)
        self.scoreboard = Scoreboard(out, lanes=out_lanes)
        # One RNG per agent, drawn from the bench's: each agent's choices then do not depend on
        # the order in which the simulator resumes coroutines, so both simulators agree.
        self.driver = StreamDriver(self.i, self.clk, rng=random.Random(rng.getrandbits(64)),
                                   idle_prob=idle_prob)
        self.backpressure = Backpressure(self.o, self.clk, rng=random.Random(rng.getrandbits(64)),
                                         ready_prob=ready_prob, period_ns=period_ns)
        self.in_monitor = StreamMonitor(self.i, self.clk, period_ns=period_ns,
                                        callback=self._on_input)
        self.out_monitor = StreamMonitor(self.o, self.clk, period_ns=period_ns,
                                         callback=self.scoreboard.observe)

    def _on_input(self, beat: int) -> None:
        for expected, info in self.model.feed(beat):
            self.scoreboard.expect(expected, info)

    async def start(self, reset_cycles: int = 4) -> None:
        # The C++ clock (not a Python coroutine toggling it): about half the per-cycle cost.
        Clock(self.clk, self.period_ns, unit="ns", impl="gpi").start()
        self.dut.rst.value = 1
        await ClockCycles(self.clk, reset_cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.clk)
        for agent in (self.driver, self.backpressure, self.in_monitor, self.out_monitor):
            agent.start()

    async def set_traffic(self, *, idle_prob: float, ready_prob: float) -> None:
        """Change the random idles/backpressure and wait until the old setting has run out."""
        self.driver.idle_prob = idle_prob
        self.backpressure.ready_prob = ready_prob
        await self.cycles(max(self.backpressure.max_run, self.driver.max_idle) + 2)

    def cycle(self) -> int:
        return current_cycle(self.period_ns)

    async def cycles(self, count: int) -> None:
        """Wait ``count`` clock cycles (call right after a rising edge), without per-cycle wakeups."""
        await until_cycle(self.clk, self.cycle() + count, self.period_ns)

    async def run(self, beats: Sequence[int], out_beats: int, *, max_cycles: int) -> None:
        """Send ``beats``, wait for ``out_beats`` more output beats (at most ``max_cycles``).

        Long runs log ``progress:`` lines every tenth (sim.runner forwards them to the console).
        """
        start = self.scoreboard.compared + len(self.scoreboard._observed)
        self.driver.send(beats)
        steps = 10 if out_beats >= 2000 else 1
        for step in range(1, steps + 1):
            await self.scoreboard.wait_for(start + out_beats * step // steps,
                                           timeout_ns=max_cycles * self.period_ns)
            if steps > 1:
                self.dut._log.info("progress: %d/%d %s beats checked, %d mismatching",
                                   out_beats * step // steps, out_beats, self.o.name,
                                   self.scoreboard.mismatches)
        await self.driver.wait_sent()

    async def finish(self, total: int, drain_cycles: int = 20) -> None:
        """Let stray beats surface, stop the agents and check the scoreboard."""
        await self.cycles(drain_cycles)
        for agent in (self.driver, self.backpressure, self.in_monitor, self.out_monitor):
            agent.stop()
        self.scoreboard.check(total)
