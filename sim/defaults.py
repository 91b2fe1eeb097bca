"""Every default configuration and seed of the simulation benches (``binbert sim``).

Blocks (pe, mvu, lsq): their bench modules, the CLI's full-size shapes, seeded constants and
vector count, and :func:`block_configs`, every default run of a block (``--ckpt`` swaps in a
checkpoint's MVU weights).
Encoder-level layers (ln, ffn, attn, encoder): their bench modules, vector counts, the random
configurations' sizes, and what a checkpoint run uses (sentences, tokens, MAC budget).
The whole model (``--layer model``): its sentence count. The random encoder ops are drawn from
:data:`CONFIG_SEED` (hw.golden.random, shared with the hardware presets).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hw.errors import BinbertError
from hw.golden.random import CONFIG_SEED  # the random encoder ops' seed, re-exported

__all__ = ["CONFIG_SEED", "BLOCKS", "BLOCK_VECTORS", "MVU_SHAPE", "WEIGHT_SEED", "mvu_weights", "pe_params",
           "mvu_params", "lsq_params", "ckpt_weights", "supported_layers", "block_configs", "LAYERS",
           "LAYER_VECTORS", "SEQ_LEN", "CKPT_SEQ_LEN", "CKPT_SENTENCES", "CKPT_SENTENCES_BY_SIM", "CKPT_MACS",
           "SIZES", "DEFAULT_SENTENCES"]

# --------------------------------------------------------------------------------------------
# blocks: binbert sim --layer pe|mvu|lsq
# --------------------------------------------------------------------------------------------

# block name -> cocotb test module (the encoder-level benches: LAYERS)
BLOCKS = {"pe": "sim.benches.pe", "mvu": "sim.benches.mvu", "lsq": "sim.benches.lsq"}
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


def lsq_params(*, n: int = 32, lanes: int = 8, terms: int = 2, acc_width: int = 12,
               out_bits: int = 4, m_bits: int = 8, shift: int = 9, seed: int = WEIGHT_SEED):
    """A requantizer unit (hw.rtl.requant) with seeded per-row (M, B) and a moderate shift:
    random accumulators then hit interior codes, both clamps and exact round-half-up ties (see
    sim/benches/lsq.py). ``acc_width``: the signed width of each accumulator term.

    The integers are handed to :func:`hw.golden.fold.from_scales` as the reals M / 2**shift and
    B / 2**shift (s_x = s_y = 1, capped at this shift), which folds them back exactly: the bench
    runs the constants that folding produces."""
    import numpy as np

    from hw.golden.fold import from_scales
    from hw.rtl.requant import RequantUnitParams

    rng = np.random.default_rng(seed)
    m = rng.integers(1, 1 << m_bits, size=(terms, n))
    if out_bits == 1:  # b a multiple of m so that z == 0 (the threshold) is reachable
        b = -m[0] * rng.integers(-(1 << (acc_width - 3)), 1 << (acc_width - 3), size=n)
    else:
        b = rng.integers(-(1 << (acc_width + 1)), 1 << (acc_width + 1), size=n)
    unit = 2.0**-shift  # exact: M, B and 2**-shift are small binary fractions
    op = from_scales(n=n, acc_bits=acc_width, s_x=1.0, alpha=m * unit, s_y=1.0, beta=b * unit,
                     out_bits=out_bits, m_bits=m_bits, max_shift=shift)
    return RequantUnitParams(op=op, n=n, lanes=lanes)


def ckpt_weights(path: str | Path, k: int, n: int) -> tuple[Any, str]:
    """Sign bits of the first encoder linear weight of a checkpoint, cropped to (n, k)."""
    import numpy as np

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise BinbertError(f"--ckpt {path}: no such checkpoint (expected a directory with "
                           "model.safetensors, or the file itself)")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            names = sorted(f.keys())
            pick = next((nm for nm in names if nm.endswith("attention.self.query.weight")), None)
            if pick is None:
                pick = next((nm for nm in names if "encoder" in nm and nm.endswith(".weight")
                             and len(f.get_slice(nm).get_shape()) == 2), None)
            if pick is None:
                raise BinbertError(f"--ckpt {p}: no 2-D encoder weight to take MVU weights from")
            shape = f.get_slice(pick).get_shape()
            if shape[0] < n or shape[1] < k:
                raise BinbertError(f"--ckpt {p}: {pick} is {shape[0]}x{shape[1]}, smaller than "
                                   f"the MVU's n x k = {n}x{k}")
            w = f.get_tensor(pick)[:n, :k].float().numpy()
    except BinbertError:
        raise
    except Exception as exc:  # a corrupt file: name it, in one line
        raise BinbertError(f"--ckpt {p}: cannot read safetensors ({type(exc).__name__}: {exc})") from None
    return (w >= 0).astype(np.uint8), f"sign of {pick}[:{n}, :{k}] from {p}"


# --------------------------------------------------------------------------------------------
# encoder-level layers: binbert sim --layer ln|ffn|attn|encoder
# --------------------------------------------------------------------------------------------

LAYERS = {"ln": "sim.benches.ln", "ffn": "sim.benches.ffn", "attn": "sim.benches.attn", "encoder": "sim.benches.encoder"}
LAYER_VECTORS = {"ln": 2000, "ffn": 100, "attn": 6, "encoder": 4}
SEQ_LEN = 8            # random configurations: tokens per sequence
CKPT_SEQ_LEN = 16      # checkpoint runs: tokens per sequence, more where the task's sentences need it (sim.layers.default_seq_len)
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


# --------------------------------------------------------------------------------------------
# every default run of a block
# --------------------------------------------------------------------------------------------

def supported_layers() -> list[str]:
    """Blocks (pe, mvu, lsq), encoder-level layers (ln, ffn, attn, encoder) and the whole
    model's encoder (model), in that order."""
    return [*BLOCKS, *LAYERS, "model"]


def block_configs(layer: str, *, ckpt: str | Path | None = None) -> list[tuple[str, Any]]:
    """(label, params) for every default run of ``layer``; ``ckpt``: the MVU's weights from a
    checkpoint (:func:`ckpt_weights`) instead of the seeded ones."""
    if layer not in BLOCKS:
        raise BinbertError(f"unknown layer {layer!r}: supported layers are {', '.join(supported_layers())}")
    if ckpt is not None and layer != "mvu":
        raise BinbertError(f"--ckpt applies to --layer mvu only (it supplies the MVU weights), "
                           f"not to --layer {layer}")
    if layer == "pe":
        p = pe_params()
        return [(f"pe simd={p.simd} pipeline={p.pipeline}", p)]
    if layer == "lsq":
        a, b = lsq_params(), lsq_params(n=16, lanes=4, terms=1, acc_width=10, out_bits=1)
        return [(f"lsq n={a.n} lanes={a.lanes} terms={a.terms} out_bits={a.out_bits}", a),
                (f"lsq n={b.n} lanes={b.lanes} terms={b.terms} out_bits=1 (sign)", b)]
    weights, note = None, ""
    if ckpt is not None:
        weights, note = ckpt_weights(ckpt, MVU_SHAPE["k"], MVU_SHAPE["n"])
        note = f" weights: {note}"
    shape = " ".join(f"{key}={v}" for key, v in MVU_SHAPE.items())
    return [(f"mvu {shape} A={a}{note}", mvu_params(**MVU_SHAPE, a_bits=a, weights=weights))
            for a in (1, 4)]
