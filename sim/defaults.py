"""Every default configuration and seed of the simulation benches (``binbert sim``).

Blocks (pe, mvu, lsq): the CLI's full-size shapes, their seeded weights and vector count.
Encoder-level layers (ln, ffn, attn, encoder): their bench modules, vector counts, the random
configurations' sizes, and what a checkpoint run uses (sentences, tokens, MAC budget).
The whole model (``--layer model``): its sentence count. The random encoder ops are drawn from
:data:`CONFIG_SEED` (hw.golden.random, shared with the hardware presets).
"""
from __future__ import annotations

from hw.golden.random import CONFIG_SEED  # the random encoder ops' seed, re-exported

__all__ = ["CONFIG_SEED", "BLOCK_VECTORS", "MVU_SHAPE", "WEIGHT_SEED", "mvu_weights", "pe_params", "mvu_params",
           "LAYERS", "LAYER_VECTORS", "SEQ_LEN", "CKPT_SEQ_LEN", "CKPT_SENTENCES", "CKPT_SENTENCES_BY_SIM",
           "CKPT_MACS", "SIZES", "DEFAULT_SENTENCES"]

# --------------------------------------------------------------------------------------------
# blocks: binbert sim --layer pe|mvu|lsq
# --------------------------------------------------------------------------------------------

BLOCK_VECTORS = 10_000  # random vectors per configuration
# Default shapes: the CLI's full-size runs (10,000 vectors each finish in well under a minute
# on Verilator); tests/sim/test_blocks.py uses smaller ones through the same builders.
MVU_SHAPE = {"k": 128, "n": 32, "pe": 8, "simd": 32}
WEIGHT_SEED = 2024  # fixed: the weights are part of the design, so builds are reused


def mvu_weights(k: int, n: int, seed: int = WEIGHT_SEED):
    """Seeded random +-1 bits with row 0 all +1 and row 1 all -1 (the extreme dot products)."""
    import numpy as np

    w = np.random.default_rng(seed).integers(0, 2, size=(n, k), dtype=np.uint8)
    w[0] = 1
    if n > 1:
        w[1] = 0
    return w


def pe_params(*, simd: int = 32, pipeline: int = 2):
    from hw.rtl.pe import PEParams

    return PEParams(simd=simd, pipeline=pipeline)


def mvu_params(*, k: int, n: int, pe: int, simd: int, a_bits: int = 1, mmv: int = 1,
               pipeline: int = 1, weights=None):
    from hw.rtl.mvu import MVUParams

    if weights is None:
        weights = mvu_weights(k, n)
    return MVUParams(k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv, pipeline=pipeline,
                     weights=weights)


# --------------------------------------------------------------------------------------------
# encoder-level layers: binbert sim --layer ln|ffn|attn|encoder
# --------------------------------------------------------------------------------------------

LAYERS = {"ln": "sim.benches.ln", "ffn": "sim.benches.ffn", "attn": "sim.benches.attn", "encoder": "sim.benches.encoder"}
LAYER_VECTORS = {"ln": 2000, "ffn": 100, "attn": 6, "encoder": 4}
SEQ_LEN = 8            # random configurations: tokens per sequence
CKPT_SEQ_LEN = 16      # checkpoint runs: real sentences of at most this many tokens
CKPT_SENTENCES = 8
# checkpoint runs by default: Icarus interprets a BERT-sized layer ~100x slower than Verilator
# runs it, so it gets fewer sentences (--sentences / VECTORS= sets any count on either)
CKPT_SENTENCES_BY_SIM = {"verilator": CKPT_SENTENCES, "icarus": 2}
CKPT_MACS = 1024       # checkpoint runs: XNOR lanes per MVU (a BERT-sized layer folds wider)

SIZES = {
    # CLI default: small but real; MVUs of ~128 XNOR lanes keep builds short
    "default": dict(hidden=64, heads=2, ffn=128, seq_len=SEQ_LEN, macs=128, lanes=4, ln_n=(64, 48)),
    # tests: the same structure at the smallest sizes that still fold (SF, NF > 1)
    "tiny": dict(hidden=16, heads=2, ffn=32, seq_len=4, macs=32, lanes=4, ln_n=(16, 12)),
}

# --------------------------------------------------------------------------------------------
# the whole model: binbert sim --layer model
# --------------------------------------------------------------------------------------------

DEFAULT_SENTENCES = 20
