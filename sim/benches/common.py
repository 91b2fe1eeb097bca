"""Set-up shared by the benches: a StreamBench with the run's traffic settings (on lanes of signed
codes for the token benches, sim/benches/ffn.py and ln.py), tokens as beats, and the burst that
measures the steady-state throughput against a block's cycle model."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from sim.runner import BenchConfig
from sim.stream import Model, StreamBench, pack_lanes, unpack_lanes

# throughput check of every encoder-level bench: measured steady state <= 1.10 x the cycle model
SLACK = 1.10


def stream_bench(dut: Any, cfg: BenchConfig, model: Model, *,
                 out_lanes: Callable[[int], list[int]] | None = None,
                 rng: random.Random | None = None) -> StreamBench:
    """A StreamBench seeded by ``cfg.seed`` (or on ``rng``, a bench's own stream seeded so),
    with ``cfg.extra``'s idle_prob/ready_prob (0.2/0.75 when absent)."""
    return StreamBench(dut, model=model, rng=random.Random(cfg.seed) if rng is None else rng,
                       out_lanes=out_lanes, idle_prob=cfg.extra.get("idle_prob", 0.2),
                       ready_prob=cfg.extra.get("ready_prob", 0.75))


def lane_bench(dut: Any, cfg: BenchConfig, model: Model, *, in_bits: int, out_bits: int) -> StreamBench:
    """A :func:`stream_bench` on ``cfg.params.lanes`` lanes of signed(in_bits) in and
    signed(out_bits) out; both port widths are checked against the DUT's."""
    lanes = cfg.params.lanes
    bench = stream_bench(dut, cfg, model, out_lanes=lambda w: unpack_lanes(w, out_bits, lanes))
    bench.i.expect_width(in_bits * lanes, f"{lanes} lanes of signed({in_bits})")
    bench.o.expect_width(out_bits * lanes, f"{lanes} lanes of signed({out_bits})")
    return bench


def lane_beats(row: Sequence[int], bits: int, lanes: int) -> list[int]:
    """One token's features as beats of ``lanes`` signed(bits) lanes (feature b·lanes + j in
    lane j of beat b)."""
    return [pack_lanes(row[b:b + lanes], bits) for b in range(0, len(row), lanes)]


def expected_beats(row: Sequence[int], bits: int, lanes: int, what: str) -> list[tuple[int, str]]:
    """The scoreboard's (beat, description) pairs of one expected output token."""
    return [(beat, f"{what} beat {b}") for b, beat in enumerate(lane_beats(row, bits, lanes))]


async def burst(bench: StreamBench, groups: Sequence[Sequence[int]], *, max_cycles: int,
                outs: int | None = None) -> tuple[list[int], int]:
    """Send ``groups`` (each one token's or vector's input beats; ``outs`` output beats come
    back for each, default as many as it sends) with neither idles nor backpressure: (the cycle
    each group's last output beat left, the cycle the burst started)."""
    await bench.set_traffic(idle_prob=0.0, ready_prob=1.0)
    first, t0 = len(bench.out_monitor.cycles), bench.cycle()
    per = len(groups[0]) if outs is None else outs
    await bench.run([b for g in groups for b in g], per * len(groups), max_cycles=max_cycles)
    out = bench.out_monitor.cycles[first:]
    return [out[(g + 1) * per - 1] for g in range(len(groups))], t0


async def beat_burst_span(bench: StreamBench, beats: Sequence[int], *, max_cycles: int) -> int:
    """:func:`burst` of single beats (one output beat per input beat): the cycles from the first
    output beat to the last, ``len(beats)`` at full rate."""
    ends, _ = await burst(bench, [[b] for b in beats], max_cycles=max_cycles)
    return ends[-1] - ends[0] + 1


def check_throughput(steady: float, model: int, unit: str) -> None:
    assert steady <= SLACK * model, f"throughput: {steady:.2f} cycles/{unit} > {SLACK:.2f} x model {model}"
