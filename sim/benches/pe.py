"""cocotb bench: XNOR-popcount PE (hw.rtl.pe) == PEParams.compute, beat for beat.

Contract: i payload = StructLayout{"x": SIMD bits (LSB), "w": SIMD bits};
o payload = unsigned popcount(XNOR(x, w)) in bitlen(SIMD) bits.
Edge cases first (all +1, all -1, all disagreeing, alternating, one bit differing), then
``vectors`` seeded random beats, with random input idles and output backpressure; then a burst
without either that checks one beat per cycle.
"""
from __future__ import annotations

import random

import cocotb
import numpy as np

from sim.benches.common import beat_burst_span, stream_bench
from sim.runner import load_bench
from sim.stream import PlannedModel, int_to_bits


def split(p, beats: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Input beats -> (x bits, w bits), each (len(beats), simd)."""
    bits = np.stack([int_to_bits(b, 2 * p.simd) for b in beats])
    return bits[:, :p.simd], bits[:, p.simd:]


def pe_model(p) -> PlannedModel:
    """One observed input beat -> one expected output beat, through ``PEParams.compute``."""
    return PlannedModel(1, lambda beats, i: [(int(p.compute(*split(p, beats))[0]), f"input beat {i}")])


def plan(model: PlannedModel, p, beats: list[int], first: int) -> list[int]:
    expected = p.compute(*split(p, beats))  # one vectorised golden call for the whole stimulus
    model.plan([[b] for b in beats], [[(int(e), f"input beat {first + i}")]
                                      for i, e in enumerate(expected)])
    return beats


def edge_beats(simd: int) -> list[int]:
    ones = (1 << simd) - 1
    alt = int("01" * simd, 2) & ones

    def beat(x: int, w: int) -> int:
        return x | (w << simd)

    beats = [beat(ones, ones), beat(0, 0), beat(ones, 0), beat(0, ones), beat(alt, alt),
             beat(alt, ~alt & ones)]
    beats += [beat(ones, ones ^ (1 << j)) for j in (0, simd // 2, simd - 1)]
    return beats


@cocotb.test()
async def pe_matches_golden(dut):
    cfg = load_bench()
    p = cfg.params
    rng = random.Random(cfg.seed)
    model = pe_model(p)
    bench = stream_bench(dut, cfg, model, rng=rng)  # rng then draws the stimulus too
    bench.i.expect_width(2 * p.simd, f"x and w, simd={p.simd}")
    bench.o.expect_width(p.out_width, f"popcount of {p.simd} bits")
    await bench.start()

    edges = edge_beats(p.simd)
    randoms = [rng.getrandbits(2 * p.simd) for _ in range(cfg.vectors)]
    beats = plan(model, p, edges + randoms, 0)
    await bench.run(beats, len(beats), max_cycles=30 * len(beats) + 200)

    # Throughput: no idles, no backpressure -> one beat per cycle after the pipeline fills.
    burst = plan(model, p, [rng.getrandbits(2 * p.simd) for _ in range(200)], len(beats))
    span = await beat_burst_span(bench, burst, max_cycles=len(burst) + 100)
    total = len(beats) + len(burst)
    await bench.finish(total)
    assert model.unplanned == 0, f"{model.unplanned} input beats differed from the driven ones"
    assert span == len(burst), f"burst of {len(burst)} beats took {span} cycles (expected 1 per cycle)"
    cfg.write_stats(beats=total, edge_beats=len(edges), burst_cycles=span,
                    last_cycle=bench.out_monitor.cycles[-1])
    dut._log.info("pe: %d beats matched (%d edge cases), burst %d beats in %d cycles",
                  total, len(edges), len(burst), span)
