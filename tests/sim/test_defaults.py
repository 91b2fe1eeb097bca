"""sim/defaults.py: the benches' default configurations and seeds, in one place."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from hw.errors import BinbertError
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


def test_ckpt_weights_are_signs(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    q = torch.randn(40, 130)
    q[0, 0] = 0.0  # sign(0) = +1
    save_file({"bert.encoder.layer.0.attention.self.query.weight": q,
               "bert.embeddings.word_embeddings.weight": torch.randn(10, 130)},
              str(tmp_path / "model.safetensors"))
    bits, note = defaults.ckpt_weights(tmp_path, k=128, n=32)
    assert bits.shape == (32, 128) and bits[0, 0] == 1
    assert np.array_equal(bits, (q[:32, :128].numpy() >= 0).astype(np.uint8))
    assert "query.weight" in note
    with pytest.raises(BinbertError, match="smaller than the MVU's n x k = 64x128"):
        defaults.ckpt_weights(tmp_path, k=128, n=64)


def test_ckpt_not_safetensors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BinbertError, match="cannot read safetensors"):
        defaults.ckpt_weights(tmp_path, k=8, n=8)


def test_default_configs():
    mvu = defaults.block_configs("mvu")
    assert [p.a_bits for _, p in mvu] == [1, 4]
    assert all((p.k, p.n, p.pe, p.simd) == (128, 32, 8, 32) for _, p in mvu)
    w = mvu[0][1].weights
    assert w[0].all() and not w[1].any()  # the extreme rows the edge vectors rely on
    assert len(defaults.block_configs("lsq")) == 2
