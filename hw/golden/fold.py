"""Real scales -> the integer constants of the golden ops (docs/arithmetic.md §8, §11-§18).

The one folding of real-valued scales, biases, LayerNorm parameters and function tables into
fixed point: sw/export.py reads a trained model's reals and passes them here, hw/golden/random.py
passes seeded random ones. numpy only (scipy for erf).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith
from hw.golden.arith import signed_bits, signed_range
from hw.golden.embedding import Embedding
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Softmax, exp2_table
from hw.validate import int_field, int_value

LOG2E = 1.0 / math.log(2.0)
M_BITS = 16                 # requantizer multiplier width (§7)
MAX_SHIFT = 40              # requantizer shift S <= this (hw.golden.arith.fold_scale)
LN_EXTRA_BITS = 4           # E: extra fraction bits of sigma (§17)
LN_NORM_FRAC = 12           # N: fraction bits of the normalised value
LN_RECIP_BITS = 24          # R ~ 2^this at sigma = 1
SOFTMAX_FRAC_BITS = 8       # exp ROM: 2^G entries (§13)
SOFTMAX_EXP_BITS = 15       # exp ROM entries <= 2^EB
SOFTMAX_RECIP_BITS = 40     # C = 2^P / s_p < 2^this


@dataclass(frozen=True)
class ExportOptions:
    """Fixed-point formats chosen at export (docs/arithmetic.md §10-§18 give the defaults)."""

    res_bits: int = 20          # residual stream width
    res_frac: int = 12          # residual stream fraction bits (range ±128, step 2^-12)
    emb_bits: int = 16          # embedding table width (fraction bits chosen to fit the tables)
    lut_bits: int = 0           # GELU / tanh index bits (ROM depth); 0 = clamp(out bits + 6, 10, 12)
    softmax_frac_bits: int = SOFTMAX_FRAC_BITS
    softmax_exp_bits: int = SOFTMAX_EXP_BITS
    softmax_recip_bits: int = SOFTMAX_RECIP_BITS
    ln_extra_bits: int = LN_EXTRA_BITS
    ln_norm_frac: int = LN_NORM_FRAC
    ln_recip_bits: int = LN_RECIP_BITS
    m_bits: int = M_BITS
    cls_w_bits: int = 8         # IntLinear weight width (classifier, unquantized pooler)
    tanh_bits: int = 8          # pooler tanh output code width (step 1/(2^(bits-1)-1))
    logit_bits: int = 32
    logit_frac: int = 16

    def __post_init__(self):
        for f, lo, hi in (("res_bits", 4, 24), ("res_frac", 0, 20), ("emb_bits", 4, 24), ("lut_bits", 0, 14),
                          ("softmax_frac_bits", 1, 12), ("softmax_exp_bits", 4, 24),
                          ("softmax_recip_bits", 20, 48), ("ln_extra_bits", 0, 8), ("ln_norm_frac", 4, 16),
                          ("ln_recip_bits", 8, 32), ("m_bits", 4, 24), ("cls_w_bits", 2, 16),
                          ("tanh_bits", 2, 8), ("logit_bits", 8, 32), ("logit_frac", 0, 24)):
            v = getattr(self, f)
            int_value(v, f"export option {f}={v!r} out of range [{lo}, {hi}]", lo=lo, hi=hi)
        if self.lut_bits == 1:
            raise BinbertError("export option lut_bits=1 too small: use 0 (auto) or 2..14")
        if self.res_frac >= self.res_bits:
            raise BinbertError(f"export option res_frac={self.res_frac} must be < res_bits={self.res_bits}")


@dataclass(frozen=True)
class Act:
    """An activation code as the hardware sees it: width, step (real value of one code), range."""

    bits: int
    step: float
    lo: int
    hi: int

    @property
    def sign(self) -> bool:
        return self.bits == 1


def round_half_up(x) -> np.ndarray:
    """Round half up, float64 -> int64 (§8)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def mag(bits: int) -> int:
    """Largest |code| of a ``bits``-bit activation (1 for a sign bit read as ±1)."""
    return 1 if bits == 1 else 1 << (bits - 1)


def act_range(bits: int, kind: str = "lsq") -> tuple[int, int]:
    """Code range of a ``bits``-bit activation: LSQ [-Qp-1, Qp], uniform [-Qp, Qp], sign {0, 1}."""
    if bits == 1:
        return 0, 1
    qp = (1 << (bits - 1)) - 1
    return (-qp - 1 if kind == "lsq" else -qp), qp


def pack_terms(bits) -> np.ndarray:
    """(T, N, K) bits {0, 1} -> (T, N, words) packed uint64, one plane per binary weight term."""
    return np.stack([arith.pack_bits(b) for b in bits])


# --------------------------------------------------------------------------------------------
# requantizers (§8, §10)
# --------------------------------------------------------------------------------------------

def requant(reals, bias, acc_bits: int, out_bits: int, *, lo: int | None = None, hi: int | None = None,
            m_bits: int = M_BITS, max_shift: int = MAX_SHIFT, name: str = "requant") -> Requant:
    """A Requant from ``reals`` (T, N) or (T, 1): output codes per accumulator unit, and ``bias``
    (N,) or (1,) in output codes. out_bits 1 is the sign bit (no clamp)."""
    reals = np.atleast_2d(np.asarray(reals, dtype=np.float64))
    bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
    if not np.all(np.isfinite(reals)) or not np.all(np.isfinite(bias)):
        raise BinbertError(f"{name}: non-finite scale or bias")
    mult, shift = arith.fold_scale(reals, m_bits=m_bits, max_shift=max_shift)
    return Requant(mult=mult, bias=round_half_up(bias * 2.0**shift), shift=shift, acc_bits=acc_bits,
                   out_bits=out_bits, lo=None if out_bits == 1 else lo, hi=None if out_bits == 1 else hi,
                   m_bits=m_bits)


def requant_to(reals, bias_real, s_out: float, acc_bits: int, out: Act | int, *, m_bits: int = M_BITS,
               name: str = "requant", lo: int | None = None) -> Requant:
    """Fold real scales into a Requant (§8). ``reals`` (T, N) or (T, 1): real value of one acc unit;
    ``bias_real`` in real units; ``s_out`` the real value of one output code.

    out: an Act (code of the next quantizer) or an int width (plain signed output, e.g. residual).
    For a sign output the scale is free: use the largest real so M keeps m_bits of precision.
    ``lo`` narrows the output's lower clamp (0 after a ReLU).
    """
    reals = np.atleast_2d(np.asarray(reals, dtype=np.float64))
    bias_real = np.atleast_1d(np.asarray(bias_real, dtype=np.float64))
    if not np.all(np.isfinite(reals)) or not np.all(np.isfinite(bias_real)):
        raise BinbertError(f"{name}: non-finite scale or bias")
    if isinstance(out, Act) and out.sign:
        s_out = float(reals.max()) if reals.max() > 0 else 1.0
    if isinstance(out, Act):
        out_bits, lo_, hi = out.bits, out.lo, out.hi
    else:
        out_bits, (lo_, hi) = out, signed_range(out)
    if lo is not None:
        lo_ = max(lo_, lo)
    return requant(reals / s_out, bias_real / s_out, acc_bits, out_bits, lo=lo_, hi=hi, m_bits=m_bits,
                   name=name)


def from_scales(*, n: int, acc_bits: int, s_x: float, alpha, s_y: float, out_bits: int,
                beta=None, m_bits: int = M_BITS, max_shift: int = MAX_SHIFT) -> Requant:
    """:func:`requant` of a linear's scales per §8: M_t / 2**S ~= s_x·alpha_t / s_y (one shift
    for every term and row), B = floor(beta / s_y · 2**S + 1/2), the full output range.

    ``alpha``: weight scales, (terms,) or (terms, n) (a scalar means one term);
    ``beta``: real bias per row (or None); ``s_x`` input step; ``s_y`` the next LSQ step.
    """
    own = "fold.from_scales"
    n = int_field(own, "n", n, 1)
    for name, v in (("s_x", s_x), ("s_y", s_y)):
        if not (np.isfinite(v) and v > 0):
            raise BinbertError(f"{own}: {name}={v} must be finite and > 0")
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim == 0:
        alpha = alpha.reshape(1)
    terms = alpha.shape[0]
    if alpha.ndim == 1:
        alpha = np.repeat(alpha[:, None], n, axis=1)
    if alpha.shape != (terms, n):
        raise BinbertError(f"{own}: alpha has shape {alpha.shape}, expected (terms,) or (terms, n={n})")
    if not np.all(np.isfinite(alpha)) or alpha.min() < 0:
        raise BinbertError(f"{own}: alpha must be finite and >= 0")
    if beta is None:
        beta = np.zeros(n)
    else:
        beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n,))
        if not np.all(np.isfinite(beta)):
            raise BinbertError(f"{own}: beta must be finite")
    return requant(s_x * alpha / s_y, beta / s_y, acc_bits, out_bits, m_bits=m_bits, max_shift=max_shift,
                   name=own)


def always_one(reals, acc_bits: int, *, m_bits: int = M_BITS) -> Requant:
    """A sign output that is 1 for every input (M = 0, B = 0: z = 0 >= 0), shaped like ``reals``."""
    return Requant(mult=np.zeros_like(reals, dtype=np.int64), bias=[0], shift=1, acc_bits=acc_bits,
                   out_bits=1, m_bits=m_bits)


def threshold_bias(beta, n: int, name: str) -> np.ndarray:
    """Real requantizer bias of a sign quantizer's learned thresholds: [x >= beta] is
    [x - beta >= 0], so B = -beta per feature (§7)."""
    b = np.asarray(beta, dtype=np.float64)
    if b.shape != (n,):
        raise BinbertError(f"{name}: {b.shape[0]} thresholds for {n} features")
    return -b


# --------------------------------------------------------------------------------------------
# function tables (§12)
# --------------------------------------------------------------------------------------------

def gelu(x):
    """float64 GELU (erf form)."""
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """float64 GELU (tanh approximation)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def act_function(kind: str):
    """float64 numpy version of an activation (the LUT contents are computed from it)."""
    if kind == "gelu":
        return gelu
    if kind == "gelu_tanh":
        return gelu_tanh
    if kind == "tanh":
        return np.tanh
    raise BinbertError(f"no lookup table for activation {kind!r}")


def _codes(fn, x, out: Act) -> np.ndarray:
    return np.clip(round_half_up(fn(x) / out.step), out.lo, out.hi)


def lut_interval(fn, out: Act) -> tuple[float, float]:
    """[x_lo, x_hi]: the inputs over which ``out``'s code of fn(x) moves (a dense float64 grid over
    a generous range); (-1, 1) for a constant output."""
    top = (out.hi + 1) * out.step + 8.0
    grid = np.linspace(-64.0, top, 1 << 20)
    c = _codes(fn, grid, out)
    moving = np.nonzero(c != c[0])[0]
    if moving.size == 0:  # constant output: one-entry table would do, keep the generic shape
        return -1.0, 1.0
    x_lo = grid[max(moving[0] - 1, 0)]
    sat = np.nonzero(c == out.hi)[0]
    x_hi = grid[sat[0]] if sat.size and sat[0] > moving[0] else grid[-1]
    return x_lo, x_hi


def lut_depth(out_bits: int, lut_bits: int = 0) -> int:
    """Table entries: 2^lut_bits, or (0) 2^clamp(out_bits + 6, 10, 12) -- the index much finer
    than the output codes it selects between (a step of s_o/8 or less for 4-bit codes, whose
    range includes GELU's negative dip)."""
    return 1 << (lut_bits or min(max(out_bits + 6, 10), 12))


def lut_over(fn, function: str, reals, bias_real, acc_bits: int, out: Act, *, x_lo: float, x_hi: float,
             depth: int, m_bits: int = M_BITS, name: str = "lut") -> Lut:
    """A Lut: a requantizer to an index of ``depth`` codes [i_lo, i_lo + depth - 1] spanning
    [x_lo, x_hi], then fn's ``out`` code at each index. ``reals`` / ``bias_real`` as in
    :func:`requant_to` (real units of fn's input)."""
    s_i = (x_hi - x_lo) / (depth - 2)
    i_lo = int(math.floor(x_lo / s_i))
    i_hi = i_lo + depth - 1
    index = requant(np.asarray(reals, dtype=np.float64) / s_i, np.asarray(bias_real, dtype=np.float64) / s_i,
                    acc_bits, signed_bits(i_lo, i_hi), lo=i_lo, hi=i_hi, m_bits=m_bits, name=name + ".index")
    table = _codes(fn, np.arange(i_lo, i_hi + 1) * s_i, out)
    return Lut(index=index, table=table, out_bits=out.bits, lo=out.lo, hi=out.hi, function=function)


def lut(fn, function: str, reals, bias_real, acc_bits: int, out: Act, *, lut_bits: int = 0,
        m_bits: int = M_BITS, name: str = "lut") -> Lut:
    """Requantize to an index covering exactly the interval where the output code moves (§12)."""
    x_lo, x_hi = lut_interval(fn, out)
    return lut_over(fn, function, reals, bias_real, acc_bits, out, x_lo=x_lo, x_hi=x_hi,
                    depth=lut_depth(out.bits, lut_bits), m_bits=m_bits, name=name)


# --------------------------------------------------------------------------------------------
# softmax, attention thresholds (§13, §14)
# --------------------------------------------------------------------------------------------

def softmax(score_bits: int, log2_scale: float, s_p: float, out_bits: int, hi: int, *,
            frac_bits: int = SOFTMAX_FRAC_BITS, exp_bits: int = SOFTMAX_EXP_BITS,
            recip_bits: int = SOFTMAX_RECIP_BITS, m_bits: int = M_BITS) -> Softmax:
    """A §13 softmax: ``log2_scale`` = log2 units per score unit (s_q·s_k·scaling·log2 e),
    ``s_p`` the real value of one probability code, codes clamped to ``hi``."""
    real = log2_scale * 2.0**frac_bits
    (mult,), shift = arith.fold_scale(np.array([real]), m_bits=m_bits)
    pshift = 1
    while math.floor(2.0 ** (pshift + 1) / s_p + 0.5) < 2.0**recip_bits and pshift < 62:
        pshift += 1
    return Softmax(score_bits=score_bits, mult=int(mult), shift=shift, frac_bits=frac_bits,
                   exp_bits=exp_bits, table=exp2_table(frac_bits, exp_bits),
                   recip_num=int(math.floor(2.0**pshift / s_p + 0.5)), recip_shift=pshift,
                   out_bits=out_bits, hi=hi, m_bits=m_bits)


def head_thresholds(tau, scaling: float, score_max: int, name: str) -> np.ndarray:
    """Integer Bi-Attention thresholds T_h of real ones τ_h: S·scaling > τ <=> S > τ / scaling
    <=> S > floor(τ / scaling) for integer S (§14), clamped to [-score_max - 1, score_max]."""
    tau = np.asarray(tau, dtype=np.float64)
    if not np.isfinite(tau).all():
        raise BinbertError(f"{name}: not finite")
    return np.clip(np.floor(tau / float(scaling)), -score_max - 1, score_max).astype(np.int64)


# --------------------------------------------------------------------------------------------
# LayerNorm, linears, embeddings (§16-§18)
# --------------------------------------------------------------------------------------------

def layer_norm(gamma, beta, eps: float, *, in_bits: int, in_frac: int, res_frac: int, out_bits: int,
               extra_bits: int = LN_EXTRA_BITS, norm_frac: int = LN_NORM_FRAC,
               recip_bits: int = LN_RECIP_BITS, name: str = "LayerNorm") -> LayerNorm:
    """Fixed-point LayerNorm (§17): inputs with ``in_frac`` fraction bits, output on ``out_bits``
    with ``res_frac``; gamma on 16 bits with as many fraction bits as fit."""
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    e, nf = extra_bits, norm_frac
    p = recip_bits + in_frac + e
    g_frac = 14
    gmax = float(np.abs(gamma).max()) if gamma.size else 0.0
    while g_frac > -8 and abs(math.floor(gmax * 2.0**g_frac + 0.5)) >= 1 << 15:
        g_frac -= 1
    out_shift = nf + g_frac - res_frac
    if out_shift < 1:
        raise BinbertError(f"{name}: gamma up to {gmax:g} leaves no fraction bits (out_shift={out_shift})")
    return LayerNorm(n=gamma.shape[0], in_bits=in_bits, extra_bits=e,
                     eps=int(round_half_up(eps * 2.0 ** (2 * (in_frac + e)))), recip_shift=p,
                     norm_shift=p - nf, gamma=round_half_up(gamma * 2.0**g_frac),
                     beta=round_half_up(beta * 2.0 ** (nf + g_frac)), out_shift=out_shift, out_bits=out_bits)


def binary_linear(bits, alphas, bias, x: Act, out_fn) -> BinaryLinear:
    """BinaryLinear of binary weight terms ``bits`` [(N, K) {0, 1}] with per-row scales ``alphas``
    [(N,)] on ``x`` codes; ``out_fn(reals, bias, acc_bits)`` builds its output op."""
    k = bits[0].shape[1]
    reals = np.stack([x.step * a for a in alphas])
    acc_bits = arith.acc_width(k, x.bits)
    return BinaryLinear(weights=pack_terms(bits), k=k, in_bits=x.bits, out=out_fn(reals, bias, acc_bits))


def int_linear(w, bias, *, in_bits: int, s_in: float, w_bits: int, out_fn) -> IntLinear:
    """IntLinear (§16): per-row symmetric rounding of a full-precision weight (N, K) to w_bits."""
    w = np.asarray(w, dtype=np.float64)
    qmax = (1 << (w_bits - 1)) - 1
    s_w = np.abs(w).max(axis=1) / qmax
    s_w = np.where(s_w > 0, s_w, 1.0)
    w8 = np.clip(round_half_up(w / s_w[:, None]), -qmax, qmax)
    bound = w.shape[1] * (1 << (in_bits - 1)) * (1 << (w_bits - 1))  # IntLinear.acc_bits
    return IntLinear(weight=w8, w_bits=w_bits, in_bits=in_bits,
                     out=out_fn((s_in * s_w)[None], bias, signed_bits(-bound, bound)))


def embedding_frac(position, token_type, *, table_bits: int, word_alphas=None, word_table=None) -> int:
    """The finest fraction (<= 24 bits) that keeps every table entry in ``table_bits`` (embeddings are
    small, ~0.05): of the word table, or of Σ_t alpha_t of binary word terms."""
    if word_alphas is not None:
        word_max = float(np.sum([a.max() for a in word_alphas]))
    else:
        word_max = float(np.abs(word_table).max())
    top = max(word_max, float(np.abs(position).max()), float(np.abs(token_type).max()), 1e-30)
    frac = 24
    while frac > 0 and math.floor(top * 2.0**frac + 0.5) > (1 << (table_bits - 1)) - 1:
        frac -= 1
    if math.floor(top * 2.0**frac + 0.5) > (1 << (table_bits - 1)) - 1:
        raise BinbertError(f"embeddings: values up to {top:g} do not fit emb_bits={table_bits}")
    return frac


def embedding(position, token_type, ln: LayerNorm, *, frac: int, table_bits: int, word_bits=None,
              word_alphas=None, word_table=None) -> Embedding:
    """§18 tables at ``frac`` fraction bits: binary word terms (``word_bits``, ``word_alphas``)
    or a full word table, position and token type tables."""
    scale = 2.0**frac
    if word_bits is not None:
        kw = dict(word_bits=pack_terms(word_bits), alpha=np.stack([round_half_up(a * scale) for a in word_alphas]),
                  word_table=None)
    else:
        kw = dict(word_bits=None, alpha=None, word_table=round_half_up(np.asarray(word_table) * scale))
    position = np.asarray(position, dtype=np.float64)
    return Embedding(hidden=position.shape[1], table_bits=table_bits, table_frac=frac,
                     position=round_half_up(position * scale), token_type=round_half_up(np.asarray(token_type) * scale),
                     ln=ln, **kw)
