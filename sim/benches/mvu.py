"""cocotb bench: matrix-vector unit (hw.rtl.mvu) == MVUParams.compute, beat for beat, and its
steady-state throughput == the A*NF*SF cycles-per-vector model.

Interface contract (packed here independently of the RTL's own helpers, then cross-checked
against ``MVUParams.pack_input``/``unpack_output``):
  * i payload: SIMD*A*MMV bits; SF = k/SIMD beats per group of MMV vectors; beat sf holds element
    sf*SIMD+s of vector v at bits [(v*SIMD+s)*A, +A) (A = 1: bit 1 <-> +1; A >= 2: two's
    complement codes);
  * o payload: ArrayLayout(signed(acc_width), PE*MMV); NF = n/PE beats per group; lane v*PE+p of
    beat nf is row nf*PE+p of vector v.
Edge vectors first (all +1 / all -1 for A = 1; all max, all min, zero, -1, alternating max/min
codes for A >= 2), then ``vectors`` seeded random vectors with random input idles and output
backpressure, then a burst with neither whose steady-state cycles per group are measured.
"""
from __future__ import annotations

import cocotb
import numpy as np

from sim.benches.common import burst, stream_bench
from sim.runner import load_bench
from sim.stream import PlannedModel, bits_to_int, int_to_bits, pack_lanes, unpack_lanes

BURST_GROUPS = 24


def code_range(a_bits: int) -> tuple[int, int]:
    return (0, 1) if a_bits == 1 else (-(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1)


def pack_group(p, x: np.ndarray) -> list[int]:
    """(MMV, k) codes -> SF input beats, per the contract above."""
    a = p.a_bits
    u = np.asarray(x, dtype=np.int64) & ((1 << a) - 1)
    beats = []
    for sf in range(p.sf):
        chunk = u[:, sf * p.simd:(sf + 1) * p.simd]  # (MMV, SIMD), element (v, s)
        bits = (chunk[..., None] >> np.arange(a)) & 1  # (MMV, SIMD, A): bit (v*SIMD+s)*A + b
        beats.append(bits_to_int(bits.reshape(-1)))
    return beats


def unpack_group(p, beats: list[int]) -> np.ndarray:
    """Inverse of :func:`pack_group`: SF beats -> (MMV, k) codes (bits for A = 1)."""
    a = p.a_bits
    x = np.empty((p.mmv, p.k), dtype=np.int64)
    weights = np.array([1 << b for b in range(a)], dtype=np.int64)
    if a >= 2:
        weights[-1] = -weights[-1]
    for sf, beat in enumerate(beats):
        bits = int_to_bits(beat, p.in_width).reshape(p.mmv, p.simd, a).astype(np.int64)
        x[:, sf * p.simd:(sf + 1) * p.simd] = bits[..., 0] if a == 1 else bits @ weights
    return x


def output_beats(p, y: np.ndarray) -> list[int]:
    """(MMV, n) dot products -> NF output beats, lane v*PE+p = row nf*PE+p of vector v."""
    return [pack_lanes(y[:, nf * p.pe:(nf + 1) * p.pe].reshape(-1), p.acc_width)
            for nf in range(p.nf)]


def expected_beats(p, y: np.ndarray, g: int) -> list[tuple[int, str]]:
    """Group ``g``'s NF expected output beats, each with where it sits for mismatch messages."""
    return [(b, f"group {g} (vectors {g * p.mmv}..{(g + 1) * p.mmv - 1}), "
                f"rows {nf * p.pe}..{(nf + 1) * p.pe - 1}")
            for nf, b in enumerate(output_beats(p, y))]


def mvu_model(p) -> PlannedModel:
    """SF observed input beats -> NF expected output beats, through ``MVUParams.compute``."""
    return PlannedModel(p.sf, lambda beats, g: expected_beats(p, p.compute(unpack_group(p, beats)), g))


def plan(model: PlannedModel, p, x: np.ndarray, first_group: int) -> list[int]:
    """Golden outputs of all of ``x`` in one compute call; returns the input beats to drive."""
    y = p.compute(x)
    groups = len(x) // p.mmv
    inputs = [pack_group(p, x[g * p.mmv:(g + 1) * p.mmv]) for g in range(groups)]
    model.plan(inputs, [expected_beats(p, y[g * p.mmv:(g + 1) * p.mmv], first_group + g)
                        for g in range(groups)])
    return [b for beats in inputs for b in beats]


def edge_vectors(p) -> np.ndarray:
    lo, hi = code_range(p.a_bits)
    alt = np.where(np.arange(p.k) % 2 == 0, hi, lo)
    rows = [np.full(p.k, hi), np.full(p.k, lo), alt, alt[::-1].copy()]
    if p.a_bits >= 2:
        rows += [np.zeros(p.k, dtype=np.int64), np.full(p.k, -1)]
    x = np.stack(rows).astype(np.int64)
    pad = (-len(x)) % p.mmv  # whole groups only
    return np.concatenate([x, x[:pad]]) if pad else x


def random_vectors(p, rng: np.random.Generator, count: int) -> np.ndarray:
    lo, hi = code_range(p.a_bits)
    count += (-count) % p.mmv
    return rng.integers(lo, hi + 1, size=(count, p.k), dtype=np.int64)


def check_helpers(p, x: np.ndarray) -> None:
    """The RTL's own packing helpers must agree with the contract packing of this bench."""
    mine = [b for g in range(len(x) // p.mmv) for b in pack_group(p, x[g * p.mmv:(g + 1) * p.mmv])]
    if hasattr(p, "pack_input"):
        theirs = [int(b) for b in p.pack_input(x)]
        assert theirs == mine, ("MVUParams.pack_input disagrees with the interface contract: "
                                f"first beats {theirs[:2]} vs {mine[:2]}")
    if hasattr(p, "unpack_output"):
        y = p.compute(x)
        beats = [unpack_lanes(b, p.acc_width, p.pe * p.mmv)
                 for g in range(len(x) // p.mmv)
                 for b in output_beats(p, y[g * p.mmv:(g + 1) * p.mmv])]
        assert np.array_equal(p.unpack_output(beats), y), \
            "MVUParams.unpack_output disagrees with the interface contract"


@cocotb.test()
async def mvu_matches_golden(dut):
    cfg = load_bench()
    p = cfg.params
    nrng = np.random.default_rng(cfg.seed)
    lanes = p.pe * p.mmv
    model = mvu_model(p)
    bench = stream_bench(dut, cfg, model, out_lanes=lambda w: unpack_lanes(w, p.acc_width, lanes))
    bench.i.expect_width(p.simd * p.a_bits * p.mmv, f"SIMD*A*MMV = {p.simd}*{p.a_bits}*{p.mmv}")
    bench.o.expect_width(p.acc_width * lanes, f"PE*MMV = {lanes} lanes of signed({p.acc_width})")
    edges = edge_vectors(p)
    check_helpers(p, edges)
    await bench.start()

    x = np.concatenate([edges, random_vectors(p, nrng, cfg.vectors)])
    groups = len(x) // p.mmv
    beats = plan(model, p, x, 0)
    await bench.run(beats, groups * p.nf,
                    max_cycles=8 * groups * p.cycles_per_vector + 50 * len(beats) + 1000)
    dut._log.info("mvu: %d vectors (%d edge) matched, %d cycles", len(x), len(edges), bench.cycle())

    # Throughput: back-to-back input, no backpressure; steady state = spacing of the last
    # output beat of consecutive groups, measured after the first quarter of the burst.
    xb = random_vectors(p, nrng, BURST_GROUPS * p.mmv)
    bb = plan(model, p, xb, groups)
    ends, t0 = await burst(bench, [bb[g * p.sf:(g + 1) * p.sf] for g in range(BURST_GROUPS)], outs=p.nf,
                           max_cycles=4 * BURST_GROUPS * p.cycles_per_vector + 1000)
    g0 = BURST_GROUPS // 4
    steady = (ends[-1] - ends[g0]) / (BURST_GROUPS - 1 - g0)
    latency = ends[0] - t0
    total_groups = groups + BURST_GROUPS
    await bench.finish(total_groups * p.nf)
    cpv = p.cycles_per_vector
    assert model.unplanned == 0, f"{model.unplanned} input groups differed from the driven ones"
    cfg.write_stats(vectors=len(x) + len(xb), edge_vectors=len(edges),
                    cycles_per_group=steady, cycles_per_group_model=cpv,
                    first_group_cycles=latency, last_cycle=bench.out_monitor.cycles[-1])
    dut._log.info("mvu: steady state %.2f cycles per group of %d vector(s) (model A*NF*SF = %d), "
                  "first group after %d cycles", steady, p.mmv, cpv, latency)
    assert steady <= 1.10 * cpv, \
        f"throughput: {steady:.2f} cycles per group > 1.10 x model {cpv} (A*NF*SF)"
    # MVUParams documents A*NF*SF as the steady-state count, so hold the RTL to it exactly.
    assert steady == cpv, f"throughput: {steady:.2f} cycles per group, model promises {cpv}"
