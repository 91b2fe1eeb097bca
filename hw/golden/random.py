"""Seeded random golden ops for the tests and cocotb benches, and the seed of the designs.

Each generator draws random real scales, biases and LayerNorm parameters from ``rng`` and folds
them with :mod:`hw.golden.fold` -- the functions sw/export.py folds a trained model's reals
with (the same default shifts, fraction bits and table shapes, docs/arithmetic.md §8,
§11-§17) -- so the RTL sees realistic constants without a checkpoint. The draw order of every
generator is part of the designs it builds (tests/test_verilog_hashes.py pins them).
"""
from __future__ import annotations

import math

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith, fold
from hw.golden.arith import signed_bits
from hw.golden.attention import Attention
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Heaviside, Softmax, shifted_score_bits

CONFIG_SEED = 2024  # the random ops are part of the design: fixed, so builds are reused
RES_BITS, RES_FRAC = 16, 8   # the random layers' residual stream
_round = fold.round_half_up
_act_range = fold.act_range
_mag = fold.mag


def random_layernorm(n: int, rng: np.random.Generator, *, in_bits: int = RES_BITS + 1,
                     in_frac: int = RES_FRAC, out_bits: int = RES_BITS, eps: float = 1e-5,
                     gamma_scale: float = 1.0) -> LayerNorm:
    """A §17 LayerNorm with random affine parameters (fold.layer_norm at the export's defaults)."""
    gamma = rng.normal(1.0, 0.4, n) * gamma_scale
    beta = rng.normal(0.0, 0.5, n)
    return fold.layer_norm(gamma, beta, eps, in_bits=in_bits, in_frac=in_frac, res_frac=RES_FRAC,
                           out_bits=out_bits, name="random_layernorm")


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


def random_requant(rng: np.random.Generator, *, rows: int, terms: int, acc_bits: int, out_bits: int,
                   real_scale: float, per_row: bool = True, bias_scale: float = 1.0,
                   lo: int | None = None, kind: str = "lsq") -> Requant:
    """A §10 requantizer folded (§8) from random real scales: ``real_scale`` ~ output codes per
    accumulator unit, biases ~ ``bias_scale`` output codes; out_bits 1 is the sign bit."""
    reals = rng.uniform(0.5, 1.5, (terms, rows if per_row else 1)) * real_scale
    bias = rng.normal(0, bias_scale, rows if per_row else 1)
    qlo, qhi = _act_range(out_bits, kind) if 1 < out_bits <= 8 else (None, None)
    if lo is not None and out_bits > 1:
        qlo = max(lo, qlo if qlo is not None else lo)
    return fold.requant(reals, bias, acc_bits, out_bits, lo=qlo, hi=qhi, name="random_requant")


gelu = fold.gelu


def random_gelu_lut(rng: np.random.Generator, *, rows: int, terms: int, acc_bits: int, out_bits: int,
                    real_scale: float, index_bits: int = 8) -> Lut:
    """A §12 GELU table after a requantizer to a ``index_bits`` index (export's shape: index
    range [i_lo, i_lo + 2^G - 1] over the interval where the output code moves)."""
    s_out = 3.0 / ((1 << (out_bits - 1)) - 1)            # output step: the code saturates near 3
    qlo, qhi = _act_range(out_bits)
    reals = rng.uniform(0.5, 1.5, (terms, rows)) * real_scale
    bias = rng.normal(0, 0.5, rows)
    return fold.lut_over(gelu, "gelu", reals, bias, acc_bits, fold.Act(out_bits, s_out, qlo, qhi),
                         x_lo=-4.0, x_hi=(qhi + 0.5) * s_out, depth=1 << index_bits, name="random_gelu_lut")


def random_softmax(rng: np.random.Generator, *, score_bits: int, p_bits: int = 4,
                   logit_scale: float | None = None, frac_bits: int = 8, exp_bits: int = 15,
                   recip_bits: int = 40) -> Softmax:
    """A §13 softmax (fold.softmax): ``logit_scale`` = real logit per score unit
    (s_q·s_k/√d; default: the full score range spans ~12 nats), p codes on ``p_bits`` (LSQ)."""
    top = (1 << (score_bits - 1)) - 1
    if logit_scale is None:
        logit_scale = rng.uniform(6.0, 18.0) / top
    hi = (1 << (p_bits - 1)) - 1
    s_p = rng.uniform(0.8, 1.0) / hi  # p = 1 maps to a code >= hi: the clamp is reachable
    return fold.softmax(score_bits, logit_scale / math.log(2.0), s_p, p_bits, hi, frac_bits=frac_bits,
                        exp_bits=exp_bits, recip_bits=recip_bits)


def score_rows(rng: np.random.Generator, score_bits: int, length: int, rows: int):
    """(scores, valid) rows: edge rows (all masked, one valid key, ties at the maximum, extremes,
    a masked key above the valid maximum) then random rows with random masks."""
    lo, hi = -(1 << (score_bits - 1)), (1 << (score_bits - 1)) - 1
    s = rng.integers(lo, hi + 1, (rows + 6, length))
    v = rng.random((rows + 6, length)) < 0.8
    v[:, 0] = True
    s[0], v[0] = rng.integers(lo, hi + 1, length), False           # no valid key
    v[1] = False
    v[1, length // 2] = True                                        # one valid key
    s[2], v[2] = hi, True                                           # all tied at the top
    s[3], v[3] = np.where(np.arange(length) % 2 == 0, hi, lo), True  # extremes
    s[4], v[4] = lo, True
    s[5, 0], v[5, 0] = hi, False                                    # masked key above the max
    return s, v


def random_binary_linear(rng: np.random.Generator, *, k: int, n: int, terms: int, in_bits: int,
                         out: str, out_bits: int = 4, relu: bool = False) -> BinaryLinear:
    """Random ±1 weight terms and an output op: ``out`` = "code" (an out_bits activation code),
    "gelu" (a §12 table), "res" (the 16-bit residual), scaled so the outputs spread over their
    range (row 0 of term 0 all +1 and row 1 all -1: the extreme dot products)."""
    bits = rng.integers(0, 2, (terms, n, k), dtype=np.uint8)
    bits[0, 0] = 1
    if n > 1:
        bits[0, 1] = 0
    acc_bits = arith.acc_width(k, in_bits)
    spread = math.sqrt(k * terms) * _mag(in_bits)      # ~ std of an accumulator sum
    if out == "gelu":
        op = random_gelu_lut(rng, rows=n, terms=terms, acc_bits=acc_bits, out_bits=out_bits,
                             real_scale=2.0 / spread)
    elif out == "res":
        op = random_requant(rng, rows=n, terms=terms, acc_bits=acc_bits, out_bits=RES_BITS,
                            real_scale=2.0**RES_FRAC / spread, bias_scale=0.3 * 2.0**RES_FRAC)
    else:
        op = random_requant(rng, rows=n, terms=terms, acc_bits=acc_bits, out_bits=out_bits,
                            real_scale=2.0 * _mag(out_bits) / spread, bias_scale=0.5,
                            lo=0 if relu else None)
    return BinaryLinear(weights=fold.pack_terms(bits), k=k, in_bits=in_bits, out=op)


def random_codes(rng: np.random.Generator, bits: int, shape) -> np.ndarray:
    lo, hi = _act_range(bits)
    return rng.integers(lo, hi + 1, shape)


def res_inputs(rng: np.random.Generator, count: int, hidden: int, scale: float = 1.0) -> np.ndarray:
    """Residual-stream vectors: LayerNorm-like values (std ~ ``scale`` real units)."""
    lo, hi = -(1 << (RES_BITS - 1)), (1 << (RES_BITS - 1)) - 1
    return np.clip(_round(rng.normal(0, scale, (count, hidden)) * 2.0**RES_FRAC), lo, hi)


def input_requant(rng: np.random.Generator, out_bits: int, *, scale: float = 1.0, n: int | None = None) -> Requant:
    """§11 input requantizer r -> code: acc = r (RES_BITS), real = 2^-RES_FRAC / s_x, B = 0.
    A sign output over ``n`` features gets per-row thresholds B = -beta (learned RSign
    thresholds, sw.quant), |beta| ~ 0.5 in real units."""
    if out_bits == 1:  # only the sign of r - beta matters: M = 1, B = -beta in residual units
        bias = [0] if n is None else _round(rng.normal(0, 0.5, n) * 2.0**RES_FRAC)
        return Requant(mult=[[1]], bias=bias, shift=1, acc_bits=RES_BITS, out_bits=1)
    s_x = scale * rng.uniform(1.5, 2.5) / _mag(out_bits)
    lo, hi = _act_range(out_bits)
    return fold.requant([[2.0**-RES_FRAC / s_x]], [0.0], RES_BITS, out_bits, lo=lo, hi=hi, name="input_requant")


def random_encoder_layer(rng: np.random.Generator, *, hidden: int = 32, heads: int = 2, ffn: int = 64,
                         max_len: int = 8, x_bits: int = 2, q_bits: int = 2, k_bits: int = 2,
                         v_bits: int = 2, p_bits: int = 4, c_bits: int = 2, f_bits: int = 2,
                         g_bits: int = 2, terms: int = 1, mode: str = "softmax",
                         act: str = "gelu", head_dim: int | None = None,
                         head_thresholds: bool = False) -> EncoderLayer:
    """A whole §19 layer of seeded random ops, folded like the export (binary weight terms,
    LSQ codes of the given widths, softmax or Bi-Attention Heaviside, GELU table or ReLU).
    ``head_dim`` below hidden/heads: width-pruned heads (Q/K/V heads·head_dim x hidden).
    ``head_thresholds`` (bi mode): learned per-head Bi-Attention thresholds T_h (§14), nonzero,
    within about ±sqrt(head_dim) of 0 like a trained one; above two heads one of them at the
    range's edge."""
    d = hidden // heads if head_dim is None else head_dim
    ah = heads * d
    if mode == "bi":
        q_bits = k_bits = v_bits = 1
    qkv = [random_binary_linear(rng, k=hidden, n=ah, terms=terms, in_bits=x_bits, out="code",
                                out_bits=b) for b in (q_bits, k_bits, v_bits)]
    if head_thresholds and mode != "bi":
        raise BinbertError("random_encoder_layer: head_thresholds needs mode='bi'")
    sb = shifted_score_bits(d * _mag(q_bits) * _mag(k_bits))
    if mode == "bi":
        hi = 1
    else:
        probs = random_softmax(rng, score_bits=sb, p_bits=p_bits,
                               logit_scale=rng.uniform(1.0, 3.0) / math.sqrt(d) / (_mag(q_bits) * _mag(k_bits)) * 2)
        hi = probs.hi
    cb = max_len * hi * _mag(v_bits)
    cbits = signed_bits(-cb, cb)
    typical = hi * _mag(v_bits) * (math.sqrt(max_len) if mode == "bi" else 1.0)
    # a sign context gets per-row thresholds (learned RSign thresholds, fold.threshold_bias)
    sign_c = c_bits == 1
    context = random_requant(rng, rows=ah if sign_c else 1, terms=1, acc_bits=cbits, out_bits=c_bits,
                             real_scale=2.0 * _mag(c_bits) / typical, per_row=sign_c,
                             bias_scale=0.5 if sign_c else 0.0)
    attn_out = random_binary_linear(rng, k=ah, n=hidden, terms=terms, in_bits=c_bits, out="res")
    ffn_in = random_binary_linear(rng, k=hidden, n=ffn, terms=terms, in_bits=f_bits,
                                  out="gelu" if act == "gelu" and g_bits > 1 else "code", out_bits=g_bits,
                                  relu=act == "relu")
    ffn_out = random_binary_linear(rng, k=ffn, n=hidden, terms=terms, in_bits=g_bits, out="res")
    qkv_in = input_requant(rng, x_bits, n=hidden)
    ln1 = random_layernorm(hidden, rng)
    ffn_in_q = input_requant(rng, f_bits, n=hidden)
    ln2 = random_layernorm(hidden, rng)
    thresholds = None
    if head_thresholds:  # drawn last: every other op is the layer drawn without them
        r = max(1, int(math.isqrt(d)))
        choices = np.concatenate([np.arange(-r, 0), np.arange(1, r + 1)])  # 0 is plain BiBERT
        thresholds = rng.choice(choices, heads, replace=heads > choices.size)
        if heads > 2:  # an extreme one: keep every key (T = -d - 1) or none (T = d)
            thresholds[rng.integers(heads)] = rng.choice([-d - 1, d])
        sb = shifted_score_bits(d, thresholds)
    if mode == "bi":
        probs = Heaviside(score_bits=sb)
    attention = Attention(heads=heads, head_dim=d, q_bits=q_bits, k_bits=k_bits, v_bits=v_bits,
                          probs=probs, context=context, max_len=max_len, thresholds=thresholds)
    return EncoderLayer(qkv_in=qkv_in, query=qkv[0], key=qkv[1], value=qkv[2], attention=attention,
                        attn_out=attn_out, ln1=ln1, ffn_in_q=ffn_in_q, ffn_in=ffn_in, ffn_out=ffn_out, ln2=ln2)


def random_layer_pair(rng: np.random.Generator, *, hidden: int, heads: int, ffn: int, max_len: int):
    """A W1A4 split layer (T = 2, softmax) and a BiBERT W1A1 layer (Bi-Attention, sign codes)."""
    split = random_encoder_layer(rng, hidden=hidden, heads=heads, ffn=ffn, max_len=max_len, x_bits=4, q_bits=4,
                                 k_bits=4, v_bits=4, p_bits=4, c_bits=4, f_bits=4, g_bits=4, terms=2)
    bi = random_encoder_layer(rng, hidden=hidden, heads=heads, ffn=ffn, max_len=max_len, x_bits=1, c_bits=1,
                              f_bits=1, g_bits=1, terms=1, mode="bi",
                              head_thresholds=True)
    return split, bi
