"""cocotb bench: requantizer / LSQ activation unit (hw.rtl.requant.RequantUnit) ==
RequantUnitParams.compute (the golden hw.golden.requant.Requant).

Interface contract:
  * i payload: ``lanes`` x ``terms`` signed(acc_bits) accumulators, term t of lane l at index
    l*terms + t (ArrayLayout(signed(acc_bits), lanes*terms));
  * o payload: ``lanes`` codes, signed(out_bits) (out_bits = 1: one unsigned bit each);
  * beat j of the stream carries rows (j mod NF)*lanes + l, NF = n / lanes (``beats``).
Edge vectors first (extreme accumulators of every term, which saturate; rows solved for exact
round-half-up ties and for z == 0, the threshold of out_bits = 1), then ``vectors`` seeded random
n-row vectors with log-uniform magnitudes (so every output code and both clamps occur), with
random input idles and output backpressure.
"""
from __future__ import annotations

import cocotb
import numpy as np

from sim.benches.common import beat_burst_span, stream_bench
from sim.runner import load_bench
from sim.stream import PlannedModel, pack_lanes, unpack_lanes


def acc_limits(p) -> tuple[int, int]:
    return -(1 << (p.acc_bits - 1)), (1 << (p.acc_bits - 1)) - 1


def out_width(p) -> int:
    return p.out_bits if p.out_bits >= 2 else 1


def unpack_vector(p, beats: list[int]) -> np.ndarray:
    """NF input beats -> (terms, n) accumulators."""
    accs = np.empty((p.terms, p.n), dtype=np.int64)
    for nf, beat in enumerate(beats):
        flat = unpack_lanes(beat, p.acc_bits, p.terms * p.lanes)
        accs[:, nf * p.lanes:(nf + 1) * p.lanes] = np.asarray(flat).reshape(p.lanes, p.terms).T
    return accs


def expected_beats(p, codes: np.ndarray, v: int) -> list[tuple[int, str]]:
    """(n,) codes of vector ``v`` -> its NF expected output beats."""
    return [(pack_lanes(codes[nf * p.lanes:(nf + 1) * p.lanes], out_width(p),
                        signed=p.out_bits >= 2),
             f"vector {v}, rows {nf * p.lanes}..{(nf + 1) * p.lanes - 1}") for nf in range(p.beats)]


def lsq_model(p) -> PlannedModel:
    """NF observed input beats (one n-row vector) -> NF expected beats, via ``compute``."""
    return PlannedModel(p.beats, lambda beats, v: expected_beats(p, p.compute(unpack_vector(p, beats)), v))


def plan(model: PlannedModel, p, accs: np.ndarray, first: int) -> list[int]:
    """(V, terms, n) accumulators: golden codes in one call; returns the input beats."""
    codes = p.compute(np.moveaxis(accs, 1, 0))  # (V, n)
    inputs = [beats_of(p, accs[v:v + 1]) for v in range(len(accs))]
    model.plan(inputs, [expected_beats(p, codes[v], first + v) for v in range(len(accs))])
    return [b for beats in inputs for b in beats]


def beats_of(p, accs: np.ndarray) -> list[int]:
    """(V, terms, n) accumulators -> V*NF input beats."""
    beats = []
    for v in range(accs.shape[0]):
        for nf in range(p.beats):
            block = accs[v, :, nf * p.lanes:(nf + 1) * p.lanes]  # (terms, lanes)
            beats.append(pack_lanes(block.T.reshape(-1), p.acc_bits))  # lane-major
    return beats


def solve_rows(p, target) -> np.ndarray:
    """Per row, a term-0 accumulator (other terms 0) whose z hits ``target(z)``; 0 if none.

    Exhaustive over the accumulator range when it is small, else over a random sample.
    """
    lo, hi = acc_limits(p)
    cand = np.arange(lo, hi + 1, dtype=np.int64) if p.acc_bits <= 20 else \
        np.random.default_rng(0).integers(lo, hi + 1, size=1 << 20)
    rq = p.requant
    mult = np.broadcast_to(rq.mult, (rq.terms, p.n))
    bias = np.broadcast_to(rq.bias, (p.n,))
    out = np.zeros(p.n, dtype=np.int64)
    for r in range(p.n):
        z = cand * int(mult[0, r]) + int(bias[r])
        hit = np.flatnonzero(target(z))
        if hit.size:
            out[r] = cand[hit[len(hit) // 2]]
    return out


def edge_accs(p) -> np.ndarray:
    lo, hi = acc_limits(p)
    vecs = []
    for value in (hi, lo, 0, 1, -1):
        vecs.append(np.full((p.terms, p.n), value, dtype=np.int64))
    if p.terms > 1:  # terms pulling in opposite directions
        mixed = np.zeros((p.terms, p.n), dtype=np.int64)
        mixed[0], mixed[1:] = hi, lo
        vecs += [mixed, -mixed - 1]
    shift = p.requant.shift
    half = 1 << (shift - 1)
    for target in (lambda z: (z + half) % (1 << shift) == 0,  # exact ties: round half up
                   lambda z: z == 0,                            # the out_bits = 1 threshold
                   lambda z: z == -1):
        v = np.zeros((p.terms, p.n), dtype=np.int64)
        v[0] = solve_rows(p, target)
        vecs.append(v)
    return np.stack(vecs)


def random_accs(p, rng: np.random.Generator, count: int) -> np.ndarray:
    lo, hi = acc_limits(p)
    mag = np.left_shift(1, rng.integers(0, p.acc_bits, size=(count, p.terms, p.n)), dtype=np.int64)
    return np.clip(rng.integers(-mag, mag, dtype=np.int64), lo, hi)


@cocotb.test()
async def lsq_matches_golden(dut):
    cfg = load_bench()
    p = cfg.params
    nrng = np.random.default_rng(cfg.seed)
    ow = out_width(p)
    model = lsq_model(p)
    bench = stream_bench(dut, cfg, model,
                         out_lanes=lambda w: unpack_lanes(w, ow, p.lanes, signed=p.out_bits >= 2))
    bench.i.expect_width(p.acc_bits * p.lanes * p.terms,
                         f"terms*lanes = {p.terms}*{p.lanes} signed({p.acc_bits}) accumulators")
    bench.o.expect_width(ow * p.lanes, f"{p.lanes} codes of {ow} bits")
    await bench.start()

    edges = edge_accs(p)
    accs = np.concatenate([edges, random_accs(p, nrng, cfg.vectors)])
    beats = plan(model, p, accs, 0)
    await bench.run(beats, len(beats), max_cycles=30 * len(beats) + 200)

    # Full rate: one beat per cycle without idles or backpressure.
    burst = plan(model, p, random_accs(p, nrng, max(1, 200 // p.beats)), len(accs))
    span = await beat_burst_span(bench, burst, max_cycles=len(burst) + 100)
    await bench.finish(len(beats) + len(burst))

    expected = p.compute(np.moveaxis(accs, 1, 0))  # (V, n) codes: what the bench covered
    lo_code, hi_code = p.op.lo, p.op.hi  # the clamps (0, 1 for the sign bit)
    cfg.write_stats(vectors=len(accs), edge_vectors=len(edges), beats=len(beats) + len(burst),
                    burst_cycles=span, burst_beats=len(burst),
                    codes_seen=int(np.unique(expected).size), codes_possible=hi_code - lo_code + 1,
                    saturated_low=int((expected == lo_code).sum()),
                    saturated_high=int((expected == hi_code).sum()))
    dut._log.info("lsq: %d vectors (%d edge) = %d beats matched; %d of %d codes covered; "
                  "burst %d beats in %d cycles", len(accs), len(edges), len(beats),
                  np.unique(expected).size, hi_code - lo_code + 1, len(burst), span)
    assert model.unplanned == 0, f"{model.unplanned} input vectors differed from the driven ones"
    assert span == len(burst), f"burst of {len(burst)} beats took {span} cycles (expected 1 per cycle)"
