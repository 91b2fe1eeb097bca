"""EncoderLayerUnit == EncoderLayer.compute (attention + FFN, §11/§19) on random layers with
padding masks, idles and backpressure; folding_for picks a valid balanced folding."""
import numpy as np
import pytest

from hw.rtl.encoder_layer import EncoderLayerParams, EncoderLayerUnit, folding_for
from hw.errors import BinbertError
from hw.golden.random import random_encoder_layer
from tests.hw.rtl.seqsim import masked_residuals, run_sequences, steady_cycles


@pytest.mark.parametrize("mode,terms,head_dim,idle,stall,ln", [
    ("softmax", 2, 4, 0.2, 0.3, "parallel"), ("bi", 1, 8, 0.0, 0.0, "parallel"),
    ("bi", 1, 8, 0.0, 0.0, "shared"), ("softmax", 2, 8, 0.3, 0.3, "shared")])
def test_encoder_layer_matches_golden(mode, terms, head_dim, idle, stall, ln):
    """head_dim 4 with 2 heads: Q/K/V are 8 x 16 (width-pruned heads, as DynaBERT exports).
    ln "shared": both LayerNorms on one bit-serial multiplier each (the iCE40 preset's)."""
    rng = np.random.default_rng(40 + terms)
    layer = random_encoder_layer(rng, hidden=16, heads=2, ffn=32, max_len=8, mode=mode, terms=terms,
                                 head_dim=head_dim, x_bits=1 if mode == "bi" else 2,
                                 c_bits=1 if mode == "bi" else 2)
    params = folding_for(layer, seq_len=6, macs=32, lanes=4, ln_multiplier=ln)
    r, valid = masked_residuals(rng, 4, 6, 16)
    got, ends = run_sequences(params, r, valid, idle=idle, stall=stall)
    assert np.array_equal(got, params.compute(r, valid))
    if not idle and not stall:
        per_seq = steady_cycles(ends)
        print(f"encoder: {per_seq:.1f} cycles/sequence, model {params.cycles_per_sequence} {params.stage_cycles}")
        assert per_seq <= 1.10 * params.cycles_per_sequence


def test_encoder_bad_params():
    layer = random_encoder_layer(np.random.default_rng(0), hidden=16, heads=2, ffn=32, terms=2)
    with pytest.raises(BinbertError, match="layer must be"):
        EncoderLayerParams(
            layer=None, seq_len=4, lanes=4, pe_qkv=4, simd_qkv=8, pe_o=4, simd_o=8, pe_ffn1=4,
            simd_ffn1=8, pe_ffn2=4, simd_ffn2=8)
    with pytest.raises(BinbertError, match="pe=3 must be a multiple of the 2 weight terms"):
        EncoderLayerParams(layer=layer, seq_len=4, lanes=4, pe_qkv=3, simd_qkv=8, pe_o=4, simd_o=8,
                           pe_ffn1=4, simd_ffn1=8, pe_ffn2=4, simd_ffn2=8)
    with pytest.raises(BinbertError, match="params must be EncoderLayerParams"):
        EncoderLayerUnit(layer)
    p = folding_for(layer, seq_len=4, macs=64)
    for lin, pe, simd in ((layer.query, p.pe_qkv, p.simd_qkv), (layer.ffn_out, p.pe_ffn2, p.simd_ffn2)):
        assert pe % lin.terms == 0 and lin.k % simd == 0 and (lin.terms * lin.n) % pe == 0
        assert pe * simd <= 64
