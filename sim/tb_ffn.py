"""cocotb bench: FFN block (hw.ffn) == ln2(ffn_out(ffn_in(ffn_in_q(h))) + h), token by token,
and its steady-state cycles per token within 1.10x of ``FfnParams.cycles_per_token``.

Contract: ``i`` payload = ArrayLayout(signed(res_bits), lanes), hidden/lanes beats per token;
``o`` payload = ArrayLayout(signed(out_bits), lanes), same order. Stimulus: ``extra["inputs"]``
(an .npz with ``h`` (T, H), e.g. ln1 outputs of real sentences) or seeded random residuals.
"""
from __future__ import annotations

import random

import cocotb
import numpy as np

from sim.runner import load_bench
from sim.stream import PlannedModel, StreamBench, pack_lanes, unpack_lanes

BURST = 12


def token_beats(p, h) -> list[int]:
    return [pack_lanes(h[b * p.lanes:(b + 1) * p.lanes], p.res_bits) for b in range(p.beats)]


def expected(p, y, t) -> list[tuple[int, str]]:
    return [(pack_lanes(y[b * p.lanes:(b + 1) * p.lanes], p.ln.out_bits), f"token {t} beat {b}")
            for b in range(p.beats)]


@cocotb.test()
async def ffn_matches_golden(dut):
    from sim.layers import res_inputs

    cfg = load_bench()
    p = cfg.params
    rng = random.Random(cfg.seed)
    nrng = np.random.default_rng(cfg.seed)

    def evaluate(beats, t):
        h = np.array([v for b in beats for v in unpack_lanes(b, p.res_bits, p.lanes)])
        return expected(p, p.compute(h[None])[0], t)

    model = PlannedModel(p.beats, evaluate)
    bench = StreamBench(dut, model=model, rng=rng, out_lanes=lambda w: unpack_lanes(w, p.ln.out_bits, p.lanes),
                        idle_prob=cfg.extra.get("idle_prob", 0.2), ready_prob=cfg.extra.get("ready_prob", 0.75))
    bench.i.expect_width(p.res_bits * p.lanes, f"{p.lanes} lanes of signed({p.res_bits})")
    bench.o.expect_width(p.ln.out_bits * p.lanes, f"{p.lanes} lanes of signed({p.ln.out_bits})")
    path = cfg.extra.get("inputs")
    if path:
        with np.load(path) as f:
            h, source = f["h"].astype(np.int64), path
    else:
        h = res_inputs(nrng, max(cfg.vectors, 1), p.hidden)
        h[0] = (1 << (p.res_bits - 1)) - 1   # saturated residuals
        h[1 % len(h)] = -(1 << (p.res_bits - 1))
        source = "random residuals"
    y = p.compute(h)
    beats = [token_beats(p, row) for row in h]
    model.plan(beats, [expected(p, y[t], t) for t in range(len(h))])
    await bench.start()
    await bench.run([b for tok in beats for b in tok], len(h) * p.beats,
                    max_cycles=len(h) * (4 * p.latency + 100) + 1000)

    await bench.set_traffic(idle_prob=0.0, ready_prob=1.0)
    burst = res_inputs(nrng, BURST, p.hidden)
    by = p.compute(burst)
    bb = [token_beats(p, row) for row in burst]
    model.plan(bb, [expected(p, by[t], len(h) + t) for t in range(BURST)])
    first = len(bench.out_monitor.cycles)
    await bench.run([b for tok in bb for b in tok], BURST * p.beats, max_cycles=BURST * (4 * p.latency + 100))
    out = bench.out_monitor.cycles[first:]
    ends = [out[(t + 1) * p.beats - 1] for t in range(BURST)]
    steady = (ends[-1] - ends[2]) / (BURST - 3)
    await bench.finish((len(h) + BURST) * p.beats)
    cfg.write_stats(vectors=len(h) + BURST, source=source, cycles_per_group=steady,
                    cycles_per_group_model=p.cycles_per_token, stage_cycles=p.stage_cycles,
                    last_cycle=bench.out_monitor.cycles[-1], unplanned=model.unplanned)
    dut._log.info("ffn: %d tokens (%s) matched; steady state %.2f cycles/token (model %d), stages %s",
                  len(h) + BURST, source, steady, p.cycles_per_token, p.stage_cycles)
    assert steady <= 1.10 * p.cycles_per_token, \
        f"throughput: {steady:.2f} cycles/token > 1.10 x model {p.cycles_per_token}"
