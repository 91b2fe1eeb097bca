"""cocotb bench: FFN block (hw.rtl.ffn) == ln2(ffn_out(ffn_in(ffn_in_q(h))) + h), token by token,
and its steady-state cycles per token within 1.10x of ``FfnParams.cycles_per_token``.

Contract: ``i`` payload = ArrayLayout(signed(res_bits), lanes), hidden/lanes beats per token;
``o`` payload = ArrayLayout(signed(out_bits), lanes), same order. Stimulus: ``extra["inputs"]``
(an .npz with ``h`` (T, H), e.g. ln1 outputs of real sentences) or seeded random residuals.
"""
from __future__ import annotations

import cocotb
import numpy as np

from sim.runner import load_bench
from sim.stream import PlannedModel, unpack_lanes
from sim.benches.common import burst, check_throughput, expected_beats, lane_beats, lane_bench

BURST = 12


@cocotb.test()
async def ffn_matches_golden(dut):
    from hw.golden.random import res_inputs

    cfg = load_bench()
    p = cfg.params
    nrng = np.random.default_rng(cfg.seed)
    rb, ob, lanes = p.res_bits, p.ln.out_bits, p.lanes

    def expected(y, t):
        return expected_beats(y, ob, lanes, f"token {t}")

    def evaluate(beats, t):
        h = np.array([v for b in beats for v in unpack_lanes(b, rb, lanes)])
        return expected(p.compute(h[None])[0], t)

    model = PlannedModel(p.beats, evaluate)
    bench = lane_bench(dut, cfg, model, in_bits=rb, out_bits=ob)
    path = cfg.extra.get("inputs")
    if path:
        with np.load(path) as f:
            h, source = f["h"].astype(np.int64), path
    else:
        h = res_inputs(nrng, max(cfg.vectors, 1), p.hidden)
        h[0] = (1 << (rb - 1)) - 1   # saturated residuals
        h[1 % len(h)] = -(1 << (rb - 1))
        source = "random residuals"
    y = p.compute(h)
    beats = [lane_beats(row, rb, lanes) for row in h]
    model.plan(beats, [expected(y[t], t) for t in range(len(h))])
    await bench.start()
    await bench.run([b for tok in beats for b in tok], len(h) * p.beats,
                    max_cycles=len(h) * (4 * p.latency + 100) + 1000)

    bh = res_inputs(nrng, BURST, p.hidden)
    by = p.compute(bh)
    bb = [lane_beats(row, rb, lanes) for row in bh]
    model.plan(bb, [expected(by[t], len(h) + t) for t in range(BURST)])
    ends, _ = await burst(bench, bb, max_cycles=BURST * (4 * p.latency + 100))
    steady = (ends[-1] - ends[2]) / (BURST - 3)
    await bench.finish((len(h) + BURST) * p.beats)
    cfg.write_stats(vectors=len(h) + BURST, source=source, cycles_per_group=steady,
                    cycles_per_group_model=p.cycles_per_token, stage_cycles=p.stage_cycles,
                    last_cycle=bench.out_monitor.cycles[-1], unplanned=model.unplanned)
    dut._log.info("ffn: %d tokens (%s) matched; steady state %.2f cycles/token (model %d), stages %s",
                  len(h) + BURST, source, steady, p.cycles_per_token, p.stage_cycles)
    check_throughput(steady, p.cycles_per_token, "token")
