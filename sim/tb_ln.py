"""cocotb bench: LayerNorm unit (hw.layernorm) == LayerNorm.compute (§17), token by token, and
its steady-state cycles per token within 1.10x of ``LayerNormUnitParams.cycles_per_token``.

Contract: ``i`` payload = ArrayLayout(signed(in_bits), lanes), n/lanes beats per token, feature
b*lanes + j in lane j of beat b; ``o`` payload = ArrayLayout(signed(out_bits), lanes), same
order. Edge rows first (constant, extremes, outliers), then ``vectors`` seeded random rows at
random scales with random idles and backpressure, then a burst with neither.
"""
from __future__ import annotations

import random

import cocotb
import numpy as np

from sim.layers import ln_inputs
from sim.runner import load_bench
from sim.stream import StreamBench, pack_lanes, unpack_lanes

BURST = 16


def token_beats(p, row) -> list[int]:
    return [pack_lanes(row[b * p.lanes:(b + 1) * p.lanes], p.ln.in_bits) for b in range(p.beats)]


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
        y = p.compute(row[None])[0]
        t = self.tokens
        self.tokens += 1
        return [(pack_lanes(y[b * p.lanes:(b + 1) * p.lanes], p.ln.out_bits), f"token {t} beat {b}")
                for b in range(p.beats)]


@cocotb.test()
async def ln_matches_golden(dut):
    cfg = load_bench()
    p = cfg.params
    rng = random.Random(cfg.seed)
    nrng = np.random.default_rng(cfg.seed)
    bench = StreamBench(dut, model=LNModel(p), rng=rng,
                        out_lanes=lambda w: unpack_lanes(w, p.ln.out_bits, p.lanes),
                        idle_prob=cfg.extra.get("idle_prob", 0.2),
                        ready_prob=cfg.extra.get("ready_prob", 0.75))
    bench.i.expect_width(p.ln.in_bits * p.lanes, f"{p.lanes} lanes of signed({p.ln.in_bits})")
    bench.o.expect_width(p.ln.out_bits * p.lanes, f"{p.lanes} lanes of signed({p.ln.out_bits})")
    await bench.start()
    path = cfg.extra.get("inputs")
    if path:
        with np.load(path) as f:
            rows = f["v"].astype(np.int64)
    else:
        rows = ln_inputs(p.ln, nrng, cfg.vectors)
    beats = [b for row in rows for b in token_beats(p, row)]
    await bench.run(beats, len(beats), max_cycles=6 * len(rows) * p.latency + 1000)

    await bench.set_traffic(idle_prob=0.0, ready_prob=1.0)
    burst = ln_inputs(p.ln, nrng, BURST)[-BURST:]
    first = len(bench.out_monitor.cycles)
    t0 = bench.cycle()
    await bench.run([b for row in burst for b in token_beats(p, row)], BURST * p.beats,
                    max_cycles=2 * BURST * p.latency + 1000)
    out = bench.out_monitor.cycles[first:]
    ends = [out[(t + 1) * p.beats - 1] for t in range(BURST)]
    steady = (ends[-1] - ends[0]) / (BURST - 1)
    latency = ends[0] - t0
    await bench.finish((len(rows) + BURST) * p.beats)
    model = p.cycles_per_token
    cfg.write_stats(vectors=len(rows) + BURST, cycles_per_group=steady, cycles_per_group_model=model,
                    first_token_cycles=latency, latency_model=p.latency,
                    last_cycle=bench.out_monitor.cycles[-1])
    dut._log.info("ln: %d tokens matched; steady state %.2f cycles/token (model %d), first token "
                  "after %d cycles (model %d)", len(rows) + BURST, steady, model, latency, p.latency)
    assert steady <= 1.10 * model, f"throughput: {steady:.2f} cycles/token > 1.10 x model {model}"
