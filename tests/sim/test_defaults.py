"""sim/defaults.py: the benches' default configurations and seeds, in one place."""
from __future__ import annotations

import importlib.util

import numpy as np

from sim import defaults


def test_every_layer_has_its_bench_and_vector_count():
    assert set(defaults.LAYER_VECTORS) == set(defaults.LAYERS)
    for module in defaults.LAYERS.values():
        assert importlib.util.find_spec(module) is not None


def test_the_design_seed_is_the_random_ops_and_the_presets_seed():
    from hw.fpga.presets import EncoderPreset
    from hw.golden import random

    assert defaults.CONFIG_SEED == random.CONFIG_SEED == EncoderPreset.__dataclass_fields__["seed"].default


def test_block_builders_use_the_seeded_weights():
    w = defaults.mvu_weights(16, 4)
    assert w[0].all() and not w[1].any()
    assert np.array_equal(w, defaults.mvu_weights(16, 4, seed=defaults.WEIGHT_SEED))
    p = defaults.mvu_params(**defaults.MVU_SHAPE)
    assert (p.k, p.n, p.pe, p.simd) == tuple(defaults.MVU_SHAPE[k] for k in ("k", "n", "pe", "simd"))
    assert defaults.pe_params().simd == 32


def test_checkpoint_runs_fit_their_defaults():
    assert defaults.CKPT_SENTENCES_BY_SIM["verilator"] == defaults.CKPT_SENTENCES
    assert defaults.SIZES["default"]["seq_len"] == defaults.SEQ_LEN <= defaults.CKPT_SEQ_LEN
