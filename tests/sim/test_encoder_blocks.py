"""Encoder-level blocks (hw/layernorm, ffn, attention, encoder) == their golden ops in cocotb
(sim/tb_ln, tb_ffn, tb_attn, tb_encoder), with the measured steady-state cycles within 1.10x of
each block's cycle model; the exported layer of a (tiny, untrained) quantized model on real
SST-2 dev sentences. Icarus compiles these designs in seconds; Verilator runs the LayerNorm here
and the whole layer in the slow test (its C++ compile of a layer takes minutes on 2 cores).
"""
from __future__ import annotations

import os

import pytest

from sim.layers import LAYERS, run_layer

SEED = int(os.environ.get("BINBERT_SIM_SEED", "20240611"))
VECTORS = {"ln": 400, "ffn": 40, "attn": 3, "encoder": 2}


def _check(results, layer):
    # ln: the parallel unit at two shapes and the shared-multiplier unit
    assert len(results) == {"ln": 3}.get(layer, 2) or layer not in ("ffn", "attn", "encoder", "ln")
    for r in results:
        st = r.stats
        print(f"{layer} on {r.sim}: build {r.build_s:.1f}s sim {r.sim_s:.1f}s, "
              f"{st['cycles_per_group']:.1f} cycles (model {st['cycles_per_group_model']})")
        assert r.tests == 1
        assert st["cycles_per_group"] <= 1.10 * st["cycles_per_group_model"]
        assert st.get("unplanned", 0) == 0  # the DUT saw exactly the planned stimulus


@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_on_icarus(layer):
    _check(run_layer(layer, sim="icarus", seed=SEED, vectors=VECTORS[layer], size="tiny"), layer)


def test_ln_on_verilator():
    _check(run_layer("ln", sim="verilator", seed=SEED, vectors=VECTORS["ln"], size="tiny"), "ln")


@pytest.mark.slow
def test_encoder_on_verilator():
    _check(run_layer("encoder", sim="verilator", seed=SEED, vectors=VECTORS["encoder"], size="tiny"), "encoder")


def _export(tmp_path_factory, variant, hidden, inter):
    """A 1-layer quantized BERT with the MiniLM vocabulary (so real sentences tokenize), exported."""
    from tests.sw.chain_models import exported_tiny

    return exported_tiny(tmp_path_factory, variant, vocab=30522, hidden=hidden, layers=1, heads=2,
                         inter=inter, max_pos=16)


@pytest.fixture(scope="module")
def bi_export(tmp_path_factory):
    # with learned thresholds: the per-row B of the input and context requantizers (§7)
    return _export(tmp_path_factory, "bi_rsign", 16, 32)


@pytest.fixture(scope="module")
def split_export(tmp_path_factory):
    return _export(tmp_path_factory, "split", 32, 64)


@pytest.fixture(scope="module")
def split_bi_export(tmp_path_factory):
    # TWS W1A1: two binary terms per matrix on one-bit inputs, half the heads and neurons pruned
    return _export(tmp_path_factory, "split_bi", 32, 64)


def _check_export(results, layer):
    assert len(results) == 1
    st = results[0].stats
    assert results[0].tests == 1 and st.get("unplanned", 0) == 0
    if layer in ("encoder", "attn"):
        assert st["source"].endswith(".npz")
        assert st["valid_tokens"] > 3 * (st["sequences"] - 3) // 2  # real sentences: several tokens each
    assert st["cycles_per_group"] <= 1.10 * st["cycles_per_group_model"]


def test_exported_bibert_layer_on_sst2_sentences(bi_export):
    _check_export(run_layer("encoder", sim="icarus", seed=SEED, ckpt=bi_export, vectors=3, size="tiny"), "encoder")


def test_exported_tws_w1a1_layer_on_sst2_sentences(split_bi_export):
    _check_export(run_layer("encoder", sim="icarus", seed=SEED, ckpt=split_bi_export, vectors=3,
                            size="tiny"), "encoder")


def test_exported_split_ln_on_sst2_sentences(split_export):
    _check_export(run_layer("ln", sim="icarus", seed=SEED, ckpt=split_export, vectors=3, size="tiny"), "ln")


@pytest.mark.slow
def test_exported_split_layer_on_sst2_sentences(split_export):
    _check_export(run_layer("encoder", sim="icarus", seed=SEED, ckpt=split_export, vectors=3, size="tiny"), "encoder")


def test_a_ckpt_layer_runs_on_its_tasks_sentences(tmp_path):
    """MRPC pairs are longer than SST-2's 16-token default: the layer gets a length that fits
    them, and its label names the task."""
    import numpy as np

    from sim.layers import layer_configs
    from sw.export import export_model
    from tests.sw.chain_models import tiny_quant

    model = tiny_quant("bi", vocab=30522, hidden=16, layers=1, heads=2, inter=32, max_pos=64)
    export_model(model, tmp_path, meta={"backbone": "minilm", "task": "mrpc"})
    [(label, _, extra)] = layer_configs("encoder", tmp_path, size="tiny", sentences=2)
    valid = np.load(extra["inputs"])["valid"]
    os.unlink(extra["inputs"])
    seq_len = valid.shape[1]
    assert 16 < seq_len <= 64 and len(valid) == 2 and valid.sum(axis=1).max() == seq_len
    assert f"on 2 mrpc dev sentences ({int(valid.sum())} tokens, seq_len {seq_len})" in label


def test_unknown_layer_and_size():
    from hw.errors import BinbertError
    from sim.layers import layer_configs

    with pytest.raises(BinbertError, match="unknown layer 'conv'"):
        layer_configs("conv")
    with pytest.raises(BinbertError, match="unknown size 'huge'"):
        layer_configs("ln", size="huge")


def test_bitstream_presets():
    from hw.errors import BinbertError
    from hw.fpga.presets import BITSTREAM_CONFIGS, bitstream_spec

    for name in BITSTREAM_CONFIGS:
        spec = bitstream_spec(name)
        p = spec["params"]
        assert spec["macs_per_cycle"] == sum(u.pe * u.simd for u in (
            *p.attention.projections, p.attention.out_proj, p.ffn.lin1, p.ffn.lin2))
        assert spec["cycles_per_vector"] * p.seq_len >= p.cycles_per_sequence
    with pytest.raises(BinbertError, match="unknown encoder config 'huge'"):
        bitstream_spec("huge")
