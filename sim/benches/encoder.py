"""cocotb bench: encoder layer (hw.rtl.encoder_layer) == EncoderLayer.compute, sequence by sequence, and
its steady-state cycles per sequence within 1.10x of ``EncoderLayerParams.cycles_per_sequence``.

Also the bench of the attention block (sim/benches/attn.py reuses :func:`sequence_bench`): any params
object with ``compute(r, valid)``, ``lanes``, ``beats``, ``seq_len``, ``res_bits`` and
``cycles_per_sequence``.

Contract: ``i`` payload = {r: ArrayLayout(signed(res_bits), lanes), valid: 1 bit} (r in bits
[0, res_bits·lanes), the token's mask bit above it, the same on each of the token's beats);
hidden/lanes beats per token, feature b·lanes + j in lane j of beat b, seq_len tokens per
sequence; ``o`` payload = ArrayLayout(signed(out_bits), lanes), same order. Stimulus: the
sequences of ``extra["inputs"]`` (an .npz with ``r`` (S, L, H) and ``valid`` (S, L), e.g. real
SST-2 sentences through the exported embedding) when given, else seeded random residuals with
padded tails; random idles and backpressure; then a burst with neither for the throughput.

``extra`` knobs (set by sim.layers / sim.e2e): ``idle_prob``, ``ready_prob`` (the stimulus
traffic), ``burst`` (random sequences for the throughput; 0 measures it on the stimulus itself,
which then must run without idles or backpressure), ``outputs`` (an .npz path: the observed
output of the stimulus sequences, (S, L, H) as ``y``, for chaining layers).
"""
from __future__ import annotations

import cocotb
import numpy as np

from sim.benches.common import stream_bench
from sim.runner import load_bench
from sim.stream import PlannedModel, pack_lanes, unpack_lanes

BURST_DEFAULT = 4


def seq_beats(p, r: np.ndarray, valid: np.ndarray) -> list[int]:
    """One sequence (L, H) + (L,) -> input beats."""
    rb, lanes = p.res_bits, p.lanes
    out = []
    for t in range(p.seq_len):
        for b in range(p.beats):
            out.append(pack_lanes(r[t, b * lanes:(b + 1) * lanes], rb) | (int(valid[t]) << (rb * lanes)))
    return out


def decode_seq(p, beats: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rb, lanes = p.res_bits, p.lanes
    vals = np.array([unpack_lanes(b, rb, lanes) for b in beats]).reshape(p.seq_len, -1)
    valid = np.array([(beats[t * p.beats] >> (rb * lanes)) & 1 for t in range(p.seq_len)], dtype=bool)
    return vals, valid


def out_bits(p) -> int:
    return p.ln.out_bits if hasattr(p, "ln") else p.layer.ln2.out_bits


def expected(p, y: np.ndarray, s: int) -> list[tuple[int, str]]:
    ob, lanes = out_bits(p), p.lanes
    return [(pack_lanes(y[t, b * lanes:(b + 1) * lanes], ob), f"sequence {s} token {t} beat {b}")
            for t in range(p.seq_len) for b in range(p.beats)]


def random_sequences(p, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    from hw.golden.random import res_inputs

    r = res_inputs(rng, count * p.seq_len, p.hidden).reshape(count, p.seq_len, p.hidden)
    lengths = rng.integers(1, p.seq_len + 1, count)
    lengths[: min(count, 2)] = [p.seq_len, 1][: min(count, 2)]   # a full one, a lone [CLS]
    valid = np.arange(p.seq_len)[None, :] < lengths[:, None]
    return r, valid


def stimulus(cfg, p, rng: np.random.Generator):
    path = cfg.extra.get("inputs")
    if path:
        with np.load(path) as f:
            return f["r"].astype(np.int64), f["valid"].astype(bool), f"{path}"
    r, v = random_sequences(p, rng, max(cfg.vectors, 1))
    return r, v, "random residuals"


async def sequence_bench(dut, name: str):
    cfg = load_bench()
    p = cfg.params
    nrng = np.random.default_rng(cfg.seed)
    group = p.seq_len * p.beats
    model = PlannedModel(group, lambda beats, s: expected(p, p.compute(*[a[None] for a in decode_seq(p, beats)])[0], s))
    ob = out_bits(p)
    bench = stream_bench(dut, cfg, model, out_lanes=lambda w: unpack_lanes(w, ob, p.lanes))
    bench.i.expect_width(p.res_bits * p.lanes + 1, f"{p.lanes} lanes of signed({p.res_bits}) + mask bit")
    bench.o.expect_width(ob * p.lanes, f"{p.lanes} lanes of signed({ob})")
    r, valid, source = stimulus(cfg, p, nrng)
    y = p.compute(r, valid)
    beats = [seq_beats(p, r[s], valid[s]) for s in range(len(r))]
    model.plan(beats, [expected(p, y[s], s) for s in range(len(r))])
    await bench.start()
    per_seq_bound = 4 * p.latency + 4 * group + 1000
    burst = int(cfg.extra.get("burst", BURST_DEFAULT))
    t0 = bench.cycle()
    await bench.run([b for seq in beats for b in seq], len(r) * group, max_cycles=len(r) * per_seq_bound)
    if cfg.extra.get("outputs"):
        ys = np.array([unpack_lanes(w, ob, p.lanes) for w in bench.out_monitor.beats[:len(r) * group]])
        np.savez(cfg.extra["outputs"], y=ys.reshape(len(r), p.seq_len, -1))

    if burst == 0:
        # the stimulus itself ran back to back: its output ends give the throughput
        assert bench.driver.idle_prob == 0 and bench.backpressure.ready_prob >= 1 and len(r) >= 3, \
            "burst 0 needs idle_prob 0, ready_prob 1 and at least 3 sequences"
        measured, first, total = len(r), 0, len(r)
    else:
        await bench.set_traffic(idle_prob=0.0, ready_prob=1.0)
        burst = max(3, burst)
        br, bv = random_sequences(p, nrng, burst)
        by = p.compute(br, bv)
        bbeats = [seq_beats(p, br[s], bv[s]) for s in range(burst)]
        model.plan(bbeats, [expected(p, by[s], len(r) + s) for s in range(burst)])
        first = len(bench.out_monitor.cycles)
        t0 = bench.cycle()
        await bench.run([b for seq in bbeats for b in seq], burst * group, max_cycles=burst * per_seq_bound)
        measured, total = burst, len(r) + burst
    out = bench.out_monitor.cycles[first:]
    ends = [out[(s + 1) * group - 1] for s in range(measured)]
    steady = (ends[-1] - ends[1]) / (measured - 2)
    await bench.finish(total * group)
    model_cycles = p.cycles
    cfg.write_stats(vectors=total, sequences=total, source=source,
                    valid_tokens=int(valid.sum()), cycles_per_group=steady,
                    cycles_per_group_model=model_cycles, first_sequence_cycles=ends[0] - t0,
                    stage_cycles=p.stage_cycles, last_cycle=bench.out_monitor.cycles[-1],
                    unplanned=model.unplanned)
    dut._log.info("%s: %d sequences (%s) matched; steady state %.1f cycles/sequence (model %d); "
                  "stages %s", name, total, source, steady, model_cycles, p.stage_cycles)
    assert steady <= 1.10 * model_cycles, \
        f"throughput: {steady:.1f} cycles/sequence > 1.10 x model {model_cycles}"


@cocotb.test()
async def encoder_matches_golden(dut):
    await sequence_bench(dut, "encoder")
