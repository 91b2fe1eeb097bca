"""cocotb bench: LayerNorm unit (hw.rtl.layernorm) == LayerNorm.compute (§17), token by token, and
its steady-state cycles per token within 1.10x of ``LayerNormUnitParams.cycles_per_token``.

Contract: ``i`` payload = ArrayLayout(signed(in_bits), lanes), n/lanes beats per token, feature
b*lanes + j in lane j of beat b; ``o`` payload = ArrayLayout(signed(out_bits), lanes), same
order. Edge rows first (constant, extremes, outliers), then ``vectors`` seeded random rows at
random scales with random idles and backpressure, then a burst with neither.
"""
from __future__ import annotations

import cocotb
import numpy as np

from hw.golden.random import ln_inputs
from sim.runner import load_bench
from sim.stream import unpack_lanes
from sim.benches.common import burst, check_throughput, expected_beats, lane_beats, lane_bench

BURST = 16


class LNModel:
    """Collects one token's beats, then asks the golden LayerNorm for its output beats."""

    def __init__(self, p):
        self.p = p
        self.pending: list[int] = []
        self.tokens = 0

    def feed(self, beat: int):
        p = self.p
        self.pending.append(beat)
        if len(self.pending) < p.beats:
            return []
        row = np.array([v for b in self.pending for v in unpack_lanes(b, p.ln.in_bits, p.lanes)])
        self.pending = []
        t = self.tokens
        self.tokens += 1
        return expected_beats(p.compute(row[None])[0], p.ln.out_bits, p.lanes, f"token {t}")


@cocotb.test()
async def ln_matches_golden(dut):
    cfg = load_bench()
    p = cfg.params
    nrng = np.random.default_rng(cfg.seed)
    ib = p.ln.in_bits
    bench = lane_bench(dut, cfg, LNModel(p), in_bits=ib, out_bits=p.ln.out_bits)
    await bench.start()
    path = cfg.extra.get("inputs")
    if path:
        with np.load(path) as f:
            rows = f["v"].astype(np.int64)
    else:
        rows = ln_inputs(p.ln, nrng, cfg.vectors)
    beats = [b for row in rows for b in lane_beats(row, ib, p.lanes)]
    await bench.run(beats, len(beats), max_cycles=6 * len(rows) * p.latency + 1000)

    rows_b = ln_inputs(p.ln, nrng, BURST)[-BURST:]
    ends, t0 = await burst(bench, [lane_beats(row, ib, p.lanes) for row in rows_b],
                           max_cycles=2 * BURST * p.latency + 1000)
    steady = (ends[-1] - ends[0]) / (BURST - 1)
    latency = ends[0] - t0
    await bench.finish((len(rows) + BURST) * p.beats)
    model = p.cycles_per_token
    cfg.write_stats(vectors=len(rows) + BURST, cycles_per_group=steady, cycles_per_group_model=model,
                    first_token_cycles=latency, latency_model=p.latency,
                    last_cycle=bench.out_monitor.cycles[-1])
    dut._log.info("ln: %d tokens matched; steady state %.2f cycles/token (model %d), first token "
                  "after %d cycles (model %d)", len(rows) + BURST, steady, model, latency, p.latency)
    check_throughput(steady, model, "token")
