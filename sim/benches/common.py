"""Set-up shared by the token benches (sim/benches/ffn.py, sim/benches/ln.py): a StreamBench on lanes of
signed codes with the run's traffic settings, tokens as beats, and the burst that measures the
steady-state throughput against a block's cycle model."""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from sim.runner import BenchConfig
from sim.stream import Model, StreamBench, pack_lanes, unpack_lanes

# throughput check of every encoder-level bench: measured steady state <= 1.10 x the cycle model
SLACK = 1.10


def lane_bench(dut: Any, cfg: BenchConfig, model: Model, *, in_bits: int, out_bits: int) -> StreamBench:
    """A StreamBench on ``cfg.params.lanes`` lanes of signed(in_bits) in and signed(out_bits)
    out, seeded by ``cfg.seed``, with ``cfg.extra``'s idle_prob/ready_prob (0.2/0.75 when
    absent); both port widths are checked against the DUT's."""
    lanes = cfg.params.lanes
    bench = StreamBench(dut, model=model, rng=random.Random(cfg.seed),
                        out_lanes=lambda w: unpack_lanes(w, out_bits, lanes),
                        idle_prob=cfg.extra.get("idle_prob", 0.2), ready_prob=cfg.extra.get("ready_prob", 0.75))
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


async def burst(bench: StreamBench, groups: Sequence[Sequence[int]], *, max_cycles: int) -> tuple[list[int], int]:
    """Send ``groups`` (each one token's input beats; as many output beats come back) with
    neither idles nor backpressure: (the cycle each group's last output beat left, the cycle
    the burst started)."""
    await bench.set_traffic(idle_prob=0.0, ready_prob=1.0)
    first, t0 = len(bench.out_monitor.cycles), bench.cycle()
    per = len(groups[0])
    await bench.run([b for g in groups for b in g], per * len(groups), max_cycles=max_cycles)
    out = bench.out_monitor.cycles[first:]
    return [out[(g + 1) * per - 1] for g in range(len(groups))], t0


def check_throughput(steady: float, model: int, unit: str) -> None:
    assert steady <= SLACK * model, f"throughput: {steady:.2f} cycles/{unit} > {SLACK:.2f} x model {model}"
