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

from hw import arith
from hw.encoder_params import BinaryLinear, LayerNorm, Lut, Requant, Softmax, exp2_table, signed_bits

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


def _act_range(bits: int, kind: str = "lsq") -> tuple[int, int]:
    if bits == 1:
        return 0, 1
    qp = (1 << (bits - 1)) - 1
    return (-qp - 1 if kind == "lsq" else -qp), qp


def random_requant(rng: np.random.Generator, *, rows: int, terms: int, acc_bits: int, out_bits: int,
                   real_scale: float, per_row: bool = True, bias_scale: float = 1.0,
                   lo: int | None = None, kind: str = "lsq") -> Requant:
    """A §10 requantizer folded (§8) from random real scales: ``real_scale`` ~ output codes per
    accumulator unit, biases ~ ``bias_scale`` output codes; out_bits 1 is the sign bit."""
    reals = rng.uniform(0.5, 1.5, (terms, rows if per_row else 1)) * real_scale
    mult, shift = arith.fold_scale(reals)
    bias = _round(rng.normal(0, bias_scale, rows if per_row else 1) * 2.0**shift)
    if out_bits == 1:
        return Requant(mult=mult, bias=bias, shift=shift, acc_bits=acc_bits, out_bits=1)
    qlo, qhi = _act_range(out_bits, kind) if out_bits <= 8 else (None, None)
    if lo is not None:
        qlo = max(lo, qlo if qlo is not None else lo)
    return Requant(mult=mult, bias=bias, shift=shift, acc_bits=acc_bits, out_bits=out_bits, lo=qlo, hi=qhi)


def gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def random_gelu_lut(rng: np.random.Generator, *, rows: int, terms: int, acc_bits: int, out_bits: int,
                    real_scale: float, index_bits: int = 8) -> Lut:
    """A §12 GELU table after a requantizer to a ``index_bits`` index (export's shape: index
    range [i_lo, i_lo + 2^G - 1] over the interval where the output code moves)."""
    s_out = 3.0 / ((1 << (out_bits - 1)) - 1)            # output step: the code saturates near 3
    qlo, qhi = _act_range(out_bits)
    x_lo, x_hi = -4.0, (qhi + 0.5) * s_out
    depth = 1 << index_bits
    s_i = (x_hi - x_lo) / (depth - 2)
    i_lo = int(math.floor(x_lo / s_i))
    i_hi = i_lo + depth - 1
    reals = rng.uniform(0.5, 1.5, (terms, rows)) * real_scale / s_i
    mult, shift = arith.fold_scale(reals)
    bias = _round(rng.normal(0, 0.5, rows) / s_i * 2.0**shift)
    bits = signed_bits(i_lo, i_hi)
    index = Requant(mult=mult, bias=bias, shift=shift, acc_bits=acc_bits, out_bits=bits, lo=i_lo, hi=i_hi)
    table = np.clip(_round(gelu(np.arange(i_lo, i_hi + 1) * s_i) / s_out), qlo, qhi)
    return Lut(index=index, table=table, out_bits=out_bits, lo=qlo, hi=qhi, function="gelu")


def random_softmax(rng: np.random.Generator, *, score_bits: int, p_bits: int = 4,
                   logit_scale: float | None = None, frac_bits: int = 8, exp_bits: int = 15,
                   recip_bits: int = 40) -> Softmax:
    """A §13 softmax folded like sw.export: ``logit_scale`` = real logit per score unit
    (s_q·s_k/√d; default: the full score range spans ~12 nats), p codes on ``p_bits`` (LSQ)."""
    top = (1 << (score_bits - 1)) - 1
    if logit_scale is None:
        logit_scale = rng.uniform(6.0, 18.0) / top
    real = logit_scale / math.log(2.0) * 2.0**frac_bits
    (mult,), shift = arith.fold_scale(np.array([real]))
    hi = (1 << (p_bits - 1)) - 1
    s_p = rng.uniform(0.8, 1.0) / hi  # p = 1 maps to a code >= hi: the clamp is reachable
    pshift = 1
    while math.floor(2.0 ** (pshift + 1) / s_p + 0.5) < 2.0**recip_bits and pshift < 62:
        pshift += 1
    return Softmax(score_bits=score_bits, mult=int(mult), shift=shift, frac_bits=frac_bits,
                   exp_bits=exp_bits, table=exp2_table(frac_bits, exp_bits),
                   recip_num=int(math.floor(2.0**pshift / s_p + 0.5)), recip_shift=pshift,
                   out_bits=p_bits, hi=hi)


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


def _mag(bits: int) -> int:
    return 1 if bits == 1 else 1 << (bits - 1)


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
    return BinaryLinear(weights=np.stack([arith.pack_bits(b) for b in bits]), k=k, in_bits=in_bits, out=op)


def random_codes(rng: np.random.Generator, bits: int, shape) -> np.ndarray:
    lo, hi = _act_range(bits)
    return rng.integers(lo, hi + 1, shape)


def res_inputs(rng: np.random.Generator, count: int, hidden: int, scale: float = 1.0) -> np.ndarray:
    """Residual-stream vectors: LayerNorm-like values (std ~ ``scale`` real units)."""
    lo, hi = -(1 << (RES_BITS - 1)), (1 << (RES_BITS - 1)) - 1
    return np.clip(_round(rng.normal(0, scale, (count, hidden)) * 2.0**RES_FRAC), lo, hi)


def input_requant(rng: np.random.Generator, out_bits: int, *, scale: float = 1.0) -> Requant:
    """§11 input requantizer r -> code: acc = r (RES_BITS), real = 2^-RES_FRAC / s_x, B = 0."""
    if out_bits == 1:
        return Requant(mult=[[1]], bias=[0], shift=1, acc_bits=RES_BITS, out_bits=1)
    s_x = scale * rng.uniform(1.5, 2.5) / _mag(out_bits)
    (mult,), shift = arith.fold_scale(np.array([[2.0**-RES_FRAC / s_x]]))
    lo, hi = _act_range(out_bits)
    return Requant(mult=np.atleast_2d(mult), bias=[0], shift=shift, acc_bits=RES_BITS, out_bits=out_bits,
                   lo=lo, hi=hi)


def random_encoder_layer(rng: np.random.Generator, *, hidden: int = 32, heads: int = 2, ffn: int = 64,
                         max_len: int = 8, x_bits: int = 2, q_bits: int = 2, k_bits: int = 2,
                         v_bits: int = 2, p_bits: int = 4, c_bits: int = 2, f_bits: int = 2,
                         g_bits: int = 2, terms: int = 1, mode: str = "softmax",
                         act: str = "gelu") -> "EncoderLayer":
    """A whole §19 layer of seeded random ops, folded like the export (binary weight terms,
    LSQ codes of the given widths, softmax or Bi-Attention Heaviside, GELU table or ReLU)."""
    from hw.encoder_params import Attention, EncoderLayer, Heaviside

    d = hidden // heads
    if mode == "bi":
        q_bits = k_bits = v_bits = 1
    qkv = [random_binary_linear(rng, k=hidden, n=hidden, terms=terms, in_bits=x_bits, out="code",
                                out_bits=b) for b in (q_bits, k_bits, v_bits)]
    sb = signed_bits(-d * _mag(q_bits) * _mag(k_bits), d * _mag(q_bits) * _mag(k_bits))
    if mode == "bi":
        probs, hi = Heaviside(score_bits=sb), 1
    else:
        probs = random_softmax(rng, score_bits=sb, p_bits=p_bits,
                               logit_scale=rng.uniform(1.0, 3.0) / math.sqrt(d) / (_mag(q_bits) * _mag(k_bits)) * 2)
        hi = probs.hi
    cb = max_len * hi * _mag(v_bits)
    cbits = signed_bits(-cb, cb)
    typical = hi * _mag(v_bits) * (math.sqrt(max_len) if mode == "bi" else 1.0)
    context = random_requant(rng, rows=1, terms=1, acc_bits=cbits, out_bits=c_bits,
                             real_scale=2.0 * _mag(c_bits) / typical, per_row=False, bias_scale=0.0)
    attention = Attention(heads=heads, head_dim=d, q_bits=q_bits, k_bits=k_bits, v_bits=v_bits,
                          probs=probs, context=context, max_len=max_len)
    attn_out = random_binary_linear(rng, k=hidden, n=hidden, terms=terms, in_bits=c_bits, out="res")
    ffn_in = random_binary_linear(rng, k=hidden, n=ffn, terms=terms, in_bits=f_bits,
                                  out="gelu" if act == "gelu" and g_bits > 1 else "code", out_bits=g_bits,
                                  relu=act == "relu")
    ffn_out = random_binary_linear(rng, k=ffn, n=hidden, terms=terms, in_bits=g_bits, out="res")
    return EncoderLayer(qkv_in=input_requant(rng, x_bits), query=qkv[0], key=qkv[1], value=qkv[2],
                        attention=attention, attn_out=attn_out, ln1=random_layernorm(hidden, rng),
                        ffn_in_q=input_requant(rng, f_bits), ffn_in=ffn_in, ffn_out=ffn_out,
                        ln2=random_layernorm(hidden, rng))
