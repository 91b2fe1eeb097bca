"""Encoder-level blocks for ``binbert sim --layer attn|ffn|ln|encoder``: default configurations
(seeded random golden ops, or the ops of an exported checkpoint) and :func:`run_layer`.

The random ops are built the way ``sw/export.py`` folds a trained model (docs/arithmetic.md §8,
§11-§17: the same default shifts, fraction bits and table shapes) from seeded random real
scales, so the RTL sees realistic constants without a checkpoint; with ``ckpt`` the ops come
from ``binbert export`` output (or a checkpoint, exported on the fly).
"""
from __future__ import annotations

import math

import numpy as np

from hw.encoder_params import LayerNorm

RES_BITS, RES_FRAC = 16, 8
LN_EXTRA, LN_NORM_FRAC, LN_RECIP = 4, 12, 24   # ExportOptions defaults (§17)


def _round(x) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def random_layernorm(n: int, rng: np.random.Generator, *, in_bits: int = RES_BITS + 1,
                     in_frac: int = RES_FRAC, out_bits: int = RES_BITS, eps: float = 1e-5,
                     gamma_scale: float = 1.0) -> LayerNorm:
    """A §17 LayerNorm with random affine parameters, folded like sw.export.layer_norm."""
    gamma = rng.normal(1.0, 0.4, n) * gamma_scale
    beta = rng.normal(0.0, 0.5, n)
    p = LN_RECIP + in_frac + LN_EXTRA
    g_frac = 14
    while abs(math.floor(float(np.abs(gamma).max()) * 2.0**g_frac + 0.5)) >= 1 << 15:
        g_frac -= 1
    return LayerNorm(n=n, in_bits=in_bits, extra_bits=LN_EXTRA,
                     eps=int(_round(eps * 2.0 ** (2 * (in_frac + LN_EXTRA)))), recip_shift=p,
                     norm_shift=p - LN_NORM_FRAC, gamma=_round(gamma * 2.0**g_frac),
                     beta=_round(beta * 2.0 ** (LN_NORM_FRAC + g_frac)),
                     out_shift=LN_NORM_FRAC + g_frac - RES_FRAC, out_bits=out_bits)


def ln_inputs(ln: LayerNorm, rng: np.random.Generator, count: int) -> np.ndarray:
    """Edge rows first (constant, full-scale extremes, one outlier, tiny variance), then random
    rows at several scales, all inside the signed in_bits range."""
    lo, hi = -(1 << (ln.in_bits - 1)), (1 << (ln.in_bits - 1)) - 1
    n = ln.n
    alt = np.where(np.arange(n) % 2 == 0, hi, lo)
    outlier = np.zeros(n, dtype=np.int64)
    outlier[n // 3] = hi
    tiny = np.zeros(n, dtype=np.int64)
    tiny[0] = 1  # the smallest non-zero variance: σ = 1 when eps = 0 and n is large (R = 2^P)
    rows = [np.zeros(n), np.full(n, hi), np.full(n, lo), np.full(n, -1), alt, alt[::-1], outlier,
            -outlier, tiny, -tiny, np.arange(n) - n // 2, np.r_[np.full(n - 1, lo), [hi]]]
    edges = np.stack(rows).astype(np.int64)
    scales = 2.0 ** rng.integers(0, ln.in_bits, count)
    rand = np.clip(_round(rng.normal(0, 1, (count, n)) * scales[:, None]
                          + rng.normal(0, 1, (count, 1)) * scales[:, None]), lo, hi)
    return np.concatenate([edges, rand])
