"""The real blocks' RTL == their golden models, on both simulators (sim/tb_*.py benches).

Every run checks the edge cases plus 10,000 seeded random vectors with random input idles and
output backpressure; the MVU bench also holds the steady-state throughput to A*NF*SF cycles.
Shapes are small so the Verilator compiles (the expensive part; one per design, reused across
runs through sim_build/) and the runs fit the CI budget. ``BINBERT_SIM_SEED`` overrides the seed.
"""
from __future__ import annotations

import os

import pytest

from sim import defaults
from sim.runner import SIMULATORS, run_block

SEED = int(os.environ.get("BINBERT_SIM_SEED", "20240611"))
VECTORS = 10_000

# name -> (block, params builder). MVU: SF = NF = 2 (fold sequencing and accumulation across
# folds) with the fewest lanes, since Icarus time grows with the logic evaluated per cycle.
CONFIGS = {
    "pe": ("pe", lambda: defaults.pe_params(simd=32, pipeline=2)),
    "mvu-a1": ("mvu", lambda: defaults.mvu_params(k=16, n=4, pe=2, simd=8, a_bits=1)),
    "mvu-a4": ("mvu", lambda: defaults.mvu_params(k=16, n=4, pe=2, simd=8, a_bits=4)),
    "lsq": ("lsq", lambda: defaults.lsq_params(n=8, lanes=4, terms=2, acc_width=10)),
}


def run(name, sim, vectors=VECTORS, **kw):
    block, build = CONFIGS[name] if name in CONFIGS else name
    r = run_block(build(), block=block, sim=sim, vectors=vectors, seed=SEED, log=print, **kw)
    print(f"{name} on {sim}: build {r.build_s:.1f}s, sim {r.sim_s:.1f}s, stats {r.stats}")
    return r


STATS: dict[tuple[str, str], dict] = {}


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("name", CONFIGS)
def test_block_matches_golden(name, sim):
    r = run(name, sim)
    assert r.tests == 1
    # Same seed, same RTL: the other simulator must have seen every beat in the same cycle
    # (a difference means X-dependent or simulator-dependent RTL).
    STATS[name, sim] = r.stats
    for other in SIMULATORS:
        if other != sim and (name, other) in STATS:
            assert STATS[name, other] == r.stats, f"{name}: {other} and {sim} disagree on timing"
    if name.startswith("mvu"):
        assert r.stats["vectors"] >= VECTORS
        assert r.stats["cycles_per_group"] == r.stats["cycles_per_group_model"]
    elif name == "lsq":
        assert r.stats["vectors"] >= VECTORS
        assert r.stats["codes_seen"] == r.stats["codes_possible"]  # every code, both clamps
        assert r.stats["saturated_low"] > 0 and r.stats["saturated_high"] > 0
    else:
        assert r.stats["beats"] >= VECTORS


# Variants that need no extra Verilator compile: Icarus only, fewer vectors.
VARIANTS = {
    "pe-comb": ("pe", lambda: defaults.pe_params(simd=13, pipeline=0)),
    "pe-deep": ("pe", lambda: defaults.pe_params(simd=64, pipeline=6)),
    "mvu-mmv2": ("mvu", lambda: defaults.mvu_params(k=24, n=6, pe=3, simd=8, a_bits=2, mmv=2)),
    "mvu-a8": ("mvu", lambda: defaults.mvu_params(k=16, n=4, pe=4, simd=16, a_bits=8, pipeline=0)),
    "lsq-sign": ("lsq", lambda: defaults.lsq_params(n=8, lanes=2, terms=1, acc_width=8, out_bits=1)),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_on_icarus(name):
    r = run(VARIANTS[name], "icarus", vectors=1000)
    assert r.tests == 1


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("layer", ["pe", "mvu", "lsq"])
def test_cli_default_configs(layer, sim):
    # What `make sim LAYER=... SIM=...` runs; the small configs above cover the same RTL.
    for label, params in defaults.block_configs(layer):
        r = run_block(params, block=layer, sim=sim, vectors=VECTORS, seed=SEED, log=print)
        print(label, r.build_s, r.sim_s, r.stats)
