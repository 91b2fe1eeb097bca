"""Checkpoint -> integer model (docs/arithmetic.md §10-§19) -> ROM files + manifest.json.

``build_params(model)`` folds a quantized BERT classifier (``sw.qbert.quantize_bert``, optionally
split by ``sw.split``) into the :mod:`hw.golden.ops` objects: packed binary weight terms,
fixed-point requantizer multipliers/shifts/biases from the weight scales and LSQ steps (§8),
fixed-point LayerNorm parameters, LUT ROMs for GELU/tanh and the softmax exp table.
``export_model`` / ``export_checkpoint`` write them with :func:`hw.golden.export_format.save_params`.
Anything the contract cannot represent is refused with a BinbertError naming the module.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hw.golden import arith
from hw.golden.arith import signed_bits, signed_range
from hw.golden.attention import Attention
from hw.golden.embedding import Embedding
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.model import EncoderParams
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Heaviside, Softmax, exp2_table, shifted_score_bits
from hw.errors import BinbertError
from hw.golden.export_format import save_params

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
LOG2E = 1.0 / math.log(2.0)


@dataclass(frozen=True)
class ExportOptions:
    """Fixed-point formats chosen at export (docs/arithmetic.md §10-§18 give the defaults)."""

    res_bits: int = 20          # residual stream width
    res_frac: int = 12          # residual stream fraction bits (range ±128, step 2^-12)
    emb_bits: int = 16          # embedding table width (fraction bits chosen to fit the tables)
    lut_bits: int = 0           # GELU / tanh index bits (ROM depth); 0 = clamp(out bits + 6, 10, 12)
    softmax_frac_bits: int = 8  # exp ROM: 2^G entries
    softmax_exp_bits: int = 15  # exp ROM entries <= 2^EB
    softmax_recip_bits: int = 40  # C = 2^P / s_p < 2^this
    ln_extra_bits: int = 4      # E: extra fraction bits of sigma
    ln_norm_frac: int = 12      # N: fraction bits of the normalised value
    ln_recip_bits: int = 24     # R ~ 2^this at sigma = 1
    m_bits: int = 16            # requantizer multiplier width (§7)
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
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise BinbertError(f"export option {f}={v!r} out of range [{lo}, {hi}]")
        if self.lut_bits == 1:
            raise BinbertError("export option lut_bits=1 too small: use 0 (auto) or 2..14")
        if self.res_frac >= self.res_bits:
            raise BinbertError(f"export option res_frac={self.res_frac} must be < res_bits={self.res_bits}")


# --------------------------------------------------------------------------------------------
# quantizer introspection
# --------------------------------------------------------------------------------------------

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


def act_of(q, name: str) -> Act:
    """Integer view of a ``sw.quant.ActQuantizer`` (refuses what the contract cannot represent)."""
    from sw.quant import qrange

    cfg = getattr(q, "cfg", None)
    if cfg is None:
        raise BinbertError(f"{name}: not an activation quantizer ({type(q).__name__})")
    if cfg.method == "fp":
        raise BinbertError(f"{name}: full-precision activations cannot be exported "
                           f"(the hardware needs 1..{arith.MAX_ACT_BITS}-bit codes)")
    if cfg.method == "sign":
        return Act(1, 1.0, 0, 1)
    if not 2 <= cfg.bits <= arith.MAX_ACT_BITS:
        raise BinbertError(f"{name}: {cfg.bits}-bit activations unsupported by the hardware "
                           f"(1..{arith.MAX_ACT_BITS})")
    if not bool(q.initialized):
        raise BinbertError(f"{name}: activation quantizer never initialised (no step learned)")
    qn, qp = qrange(cfg.bits)
    step = float(q.scale.detach().double())
    if not (math.isfinite(step) and step > 0):
        raise BinbertError(f"{name}: step {step!r} must be a positive number")
    if cfg.method == "lsq":
        return Act(cfg.bits, step, -qn, qp)
    if cfg.method == "uniform":
        return Act(cfg.bits, step, -qp, qp)
    raise BinbertError(f"{name}: activation method {cfg.method!r} unknown to the exporter")


def _alpha_rows(alpha: torch.Tensor, rows: int) -> np.ndarray:
    a = alpha.detach().double().cpu().reshape(-1).numpy()
    return np.broadcast_to(a, (rows,)).copy() if a.size == 1 else a.reshape(rows)


def weight_terms(mod: nn.Module, name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Binary terms of a weight layer: ([bits (N, K) uint8], [alpha (N,) float64]), §6 / §11."""
    from sw.quant import QuantEmbedding, QuantLinear
    from sw.split import SplitQuantEmbedding, SplitQuantLinear

    if isinstance(mod, (SplitQuantLinear, SplitQuantEmbedding)):
        bits, alphas = [], []
        for w, wq in ((mod.weight1, mod.weight_quant1), (mod.weight2, mod.weight_quant2)):
            b, a = wq.codes(w.detach())
            bits.append(b.cpu().numpy().astype(np.uint8))
            alphas.append(_alpha_rows(a, w.shape[0]))
        return bits, alphas
    if isinstance(mod, (QuantLinear, QuantEmbedding)):
        method = mod.weight_quant.cfg.method
        codes, a = mod.weight_quant.codes(mod.weight.detach())
        alpha = _alpha_rows(a, mod.weight.shape[0])
        if method == "bwn":
            return [codes.cpu().numpy().astype(np.uint8)], [alpha]
        if method == "twn":  # t = (b1 + b2)/2 in ±1 terms: b1 = [t >= 0], b2 = [t > 0]
            t = codes.cpu().numpy()
            return [(t >= 0).astype(np.uint8), (t > 0).astype(np.uint8)], [alpha / 2, alpha / 2]
        raise BinbertError(f"{name}: full-precision weights cannot be exported to the binary "
                           f"hardware (weight method {method!r})")
    raise BinbertError(f"{name}: {type(mod).__name__} is not a quantized layer")


def bias_of(mod: nn.Module, rows: int) -> np.ndarray:
    if getattr(mod, "bias1", None) is not None:
        b = mod.bias1.detach() + mod.bias2.detach()
    elif getattr(mod, "bias", None) is not None:
        b = mod.bias.detach()
    else:
        return np.zeros(rows)
    return b.double().cpu().numpy()


def _round(x) -> np.ndarray:
    """Round half up, float64 -> int64 (§8)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


# --------------------------------------------------------------------------------------------
# op builders
# --------------------------------------------------------------------------------------------

def requant(reals, bias_real, s_out: float, acc_bits: int, out: Act | int, opts: ExportOptions,
            name: str, lo: int | None = None) -> Requant:
    """Fold real scales into a Requant (§8). ``reals`` (T, N) or (T, 1): real value of one acc unit.

    out: an Act (code of the next quantizer) or an int width (plain signed output, e.g. residual).
    For a sign output the scale is free: use the largest real so M keeps m_bits of precision.
    """
    reals = np.atleast_2d(np.asarray(reals, dtype=np.float64))
    bias_real = np.atleast_1d(np.asarray(bias_real, dtype=np.float64))
    if not np.all(np.isfinite(reals)) or not np.all(np.isfinite(bias_real)):
        raise BinbertError(f"{name}: non-finite scale or bias")
    if isinstance(out, Act) and out.sign:
        s_out = float(reals.max()) if reals.max() > 0 else 1.0
    mult, shift = arith.fold_scale(reals / s_out, m_bits=opts.m_bits)
    bias = _round(bias_real / s_out * 2.0**shift)
    if isinstance(out, Act):
        out_bits, lo_, hi = out.bits, out.lo, out.hi
    else:
        out_bits, (lo_, hi) = out, signed_range(out)
    if lo is not None:
        lo_ = max(lo_, lo)
    return Requant(mult=mult, bias=bias, shift=shift, acc_bits=acc_bits, out_bits=out_bits,
                   lo=None if out_bits == 1 else lo_, hi=None if out_bits == 1 else hi, m_bits=opts.m_bits)


def act_function(kind: str):
    """float64 numpy version of an activation (the LUT contents are computed from it)."""
    from scipy.special import erf

    if kind == "gelu":
        return lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if kind == "gelu_tanh":
        return lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "tanh":
        return np.tanh
    raise BinbertError(f"no lookup table for activation {kind!r}")


def lut(fn, reals, bias_real, acc_bits: int, out: Act, opts: ExportOptions, name: str, fname: str) -> Lut:
    """Requantize to a lut_bits index covering exactly the interval where the output code moves (§12)."""
    def code(x):
        return np.clip(_round(fn(x) / out.step), out.lo, out.hi)

    # where does the output code change? dense float64 grid over a generous range
    top = (out.hi + 1) * out.step + 8.0
    grid = np.linspace(-64.0, top, 1 << 20)
    c = code(grid)
    moving = np.nonzero(c != c[0])[0]
    if moving.size == 0:  # constant output: one-entry table would do, keep the generic shape
        x_lo, x_hi = -1.0, 1.0
    else:
        x_lo = grid[max(moving[0] - 1, 0)]
        sat = np.nonzero(c == out.hi)[0]
        x_hi = grid[sat[0]] if sat.size and sat[0] > moving[0] else grid[-1]
    # the index must be much finer than the output codes it selects between (a step of s_o/8 or
    # less for 4-bit codes, whose range includes GELU's negative dip)
    n = 1 << (opts.lut_bits or min(max(out.bits + 6, 10), 12))
    s_i = (x_hi - x_lo) / (n - 2)
    i_lo = int(math.floor(x_lo / s_i))
    i_hi = i_lo + n - 1
    bits = signed_bits(i_lo, i_hi)
    index = requant(np.asarray(reals) / s_i, np.asarray(bias_real) / s_i, 1.0, acc_bits, bits, opts,
                    name + ".index")
    index = Requant(mult=index.mult, bias=index.bias, shift=index.shift, acc_bits=acc_bits,
                    out_bits=bits, lo=i_lo, hi=i_hi, m_bits=opts.m_bits)
    table = code(np.arange(i_lo, i_hi + 1) * s_i)
    return Lut(index=index, table=table, out_bits=out.bits, lo=out.lo, hi=out.hi, function=fname)


def layer_norm(ln: nn.LayerNorm, in_bits: int, in_frac: int, opts: ExportOptions, name: str) -> LayerNorm:
    """Fixed-point LayerNorm (§17) from an nn.LayerNorm; output in the residual format."""
    if not isinstance(ln, nn.LayerNorm) or ln.weight is None or ln.bias is None:
        raise BinbertError(f"{name}: expected an affine nn.LayerNorm, got {type(ln).__name__}")
    gamma = ln.weight.detach().double().cpu().numpy()
    beta = ln.bias.detach().double().cpu().numpy()
    e, nf = opts.ln_extra_bits, opts.ln_norm_frac
    p = opts.ln_recip_bits + in_frac + e
    g_frac = 14
    gmax = float(np.abs(gamma).max()) if gamma.size else 0.0
    while g_frac > -8 and abs(math.floor(gmax * 2.0**g_frac + 0.5)) >= 1 << 15:
        g_frac -= 1
    out_shift = nf + g_frac - opts.res_frac
    if out_shift < 1:
        raise BinbertError(f"{name}: gamma up to {gmax:g} leaves no fraction bits (out_shift={out_shift})")
    return LayerNorm(n=gamma.shape[0], in_bits=in_bits, extra_bits=e,
                     eps=int(_round(ln.eps * 2.0 ** (2 * (in_frac + e)))), recip_shift=p,
                     norm_shift=p - nf, gamma=_round(gamma * 2.0**g_frac),
                     beta=_round(beta * 2.0 ** (nf + g_frac)), out_shift=out_shift, out_bits=opts.res_bits)


def binary_linear(mod, name: str, x: Act, out_fn) -> BinaryLinear:
    """BinaryLinear from a quantized linear; ``out_fn(reals, bias, acc_bits)`` builds its output op."""
    bits, alphas = weight_terms(mod, name)
    k = bits[0].shape[1]
    n = bits[0].shape[0]
    reals = np.stack([x.step * a for a in alphas])
    acc_bits = arith.acc_width(k, x.bits)
    return BinaryLinear(weights=np.stack([arith.pack_bits(b) for b in bits]), k=k, in_bits=x.bits,
                        out=out_fn(reals, bias_of(mod, n), acc_bits))


def int_linear(lin: nn.Linear, name: str, in_bits: int, s_in: float, out_fn, opts: ExportOptions) -> IntLinear:
    """IntLinear (§16): per-row symmetric rounding of a full-precision weight."""
    if not isinstance(lin, nn.Linear):
        raise BinbertError(f"{name}: expected nn.Linear, got {type(lin).__name__}")
    w = lin.weight.detach().double().cpu().numpy()
    qmax = (1 << (opts.cls_w_bits - 1)) - 1
    s_w = np.abs(w).max(axis=1) / qmax
    s_w = np.where(s_w > 0, s_w, 1.0)
    w8 = np.clip(_round(w / s_w[:, None]), -qmax, qmax)
    bias = lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0])
    bound = w.shape[1] * (1 << (in_bits - 1)) * (1 << (opts.cls_w_bits - 1))  # IntLinear.acc_bits
    return IntLinear(weight=w8, w_bits=opts.cls_w_bits, in_bits=in_bits,
                     out=out_fn((s_in * s_w)[None], bias, signed_bits(-bound, bound)))


def threshold_bias(q, n: int, name: str) -> np.ndarray:
    """Real requantizer bias of a sign quantizer's learned thresholds: [x >= beta] is
    [x - beta >= 0], so B = -beta per row (§7); [0] for a plain sign or a multi-bit code."""
    if not q.cfg.threshold:
        return np.zeros(1)
    b = q.beta.detach().double().cpu().numpy()
    if b.shape != (n,):
        raise BinbertError(f"{name}: {b.shape[0]} thresholds for {n} features")
    return -b


def _mag(bits: int) -> int:
    return 1 if bits == 1 else 1 << (bits - 1)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------

def _embedding(bert, opts: ExportOptions) -> Embedding:
    from sw.quant import QuantEmbedding
    from sw.split import SplitQuantEmbedding

    emb = bert.embeddings
    we = emb.word_embeddings
    quant_word = isinstance(we, (QuantEmbedding, SplitQuantEmbedding)) and not (
        isinstance(we, QuantEmbedding) and we.weight_quant.cfg.method == "fp")
    pos = emb.position_embeddings.weight.detach().double().cpu().numpy()
    tt = emb.token_type_embeddings.weight.detach().double().cpu().numpy()
    if quant_word:
        bits, alphas = weight_terms(we, "embeddings.word_embeddings")
        word_max = float(np.sum([a.max() for a in alphas]))
    else:
        table = we.weight.detach().double().cpu().numpy()
        word_max = float(np.abs(table).max())
    # finest fraction that keeps every table entry in emb_bits (embeddings are small, ~0.05)
    top = max(word_max, float(np.abs(pos).max()), float(np.abs(tt).max()), 1e-30)
    frac = 24
    while frac > 0 and math.floor(top * 2.0**frac + 0.5) > (1 << (opts.emb_bits - 1)) - 1:
        frac -= 1
    if math.floor(top * 2.0**frac + 0.5) > (1 << (opts.emb_bits - 1)) - 1:
        raise BinbertError(f"embeddings: values up to {top:g} do not fit emb_bits={opts.emb_bits}")
    scale = 2.0**frac
    kw = {}
    if quant_word:
        kw.update(word_bits=np.stack([arith.pack_bits(b) for b in bits]),
                  alpha=np.stack([_round(a * scale) for a in alphas]), word_table=None)
    else:
        kw.update(word_bits=None, alpha=None, word_table=_round(table * scale))
    ln = layer_norm(emb.LayerNorm, opts.emb_bits + 2, frac, opts, "embeddings.LayerNorm")
    return Embedding(hidden=pos.shape[1], table_bits=opts.emb_bits, table_frac=frac,
                     position=_round(pos * scale), token_type=_round(tt * scale), ln=ln, **kw)


def _layer(layer, i: int, act_kind: str, max_len: int, opts: ExportOptions) -> EncoderLayer:
    from sw.qbert import QuantBertSelfAttention

    pre = f"encoder.layer.{i}"
    att = layer.attention.self
    if not isinstance(att, QuantBertSelfAttention):
        raise BinbertError(f"{pre}.attention.self: not quantized (run quantize_bert)")
    res, frac = opts.res_bits, opts.res_frac
    res_step = 2.0**-frac

    x = act_of(att.query.act_quant, f"{pre}.attention.self.query.act_quant")
    if att.key.act_quant is not att.query.act_quant or att.value.act_quant is not att.query.act_quant:
        raise BinbertError(f"{pre}.attention.self: Q, K and V must share one input quantizer")
    qkv_in = requant([[res_step / x.step]], threshold_bias(att.query.act_quant, att.query.in_features, f"{pre}.qkv_in"),
                     1.0, res, x, opts, f"{pre}.qkv_in")

    acts = {}
    for key in ("q", "k", "v"):
        acts[key] = act_of(getattr(att, f"{key}_quant"), f"{pre}.attention.self.{key}_quant")

    def to_code(a: Act, nm):
        return lambda reals, bias, acc: requant(reals, bias, a.step, acc, a, opts, nm)

    query = binary_linear(att.query, f"{pre}.attention.self.query", x, to_code(acts["q"], f"{pre}.query"))
    key = binary_linear(att.key, f"{pre}.attention.self.key", x, to_code(acts["k"], f"{pre}.key"))
    value = binary_linear(att.value, f"{pre}.attention.self.value", x, to_code(acts["v"], f"{pre}.value"))

    d = att.attention_head_size
    heads = query.n // d
    b = d * _mag(acts["q"].bits) * _mag(acts["k"].bits)  # largest |score|
    dense_out = layer.attention.output.dense
    c_act = act_of(dense_out.act_quant, f"{pre}.attention.output.dense.act_quant")
    thresholds = None
    if att.mode == "bi" and att.score_threshold is not None:
        # S·scaling > τ  <=>  S > τ / scaling  <=>  S > floor(τ / scaling) for integer S (§14)
        tau = att.score_threshold.detach().double().cpu().numpy()
        if not np.isfinite(tau).all():
            raise BinbertError(f"{pre}.attention.self.score_threshold: not finite")
        thresholds = np.clip(np.floor(tau / float(att.scaling)), -b - 1, b).astype(np.int64)
    sb = shifted_score_bits(b, thresholds)
    if att.mode == "bi":
        probs, s_p = Heaviside(score_bits=sb), 1.0
    else:
        p = act_of(att.p_quant, f"{pre}.attention.self.p_quant")
        if p.sign:
            raise BinbertError(f"{pre}.attention.self.p_quant: sign-quantized probabilities carry no "
                               f"information; softmax attention needs a multi-bit quantizer")
        g, eb = opts.softmax_frac_bits, opts.softmax_exp_bits
        real = acts["q"].step * acts["k"].step * float(att.scaling) * LOG2E * 2.0**g
        (mult,), shift = arith.fold_scale(np.array([real]), m_bits=opts.m_bits)
        pshift = 1
        while math.floor(2.0 ** (pshift + 1) / p.step + 0.5) < 2.0**opts.softmax_recip_bits and pshift < 62:
            pshift += 1
        probs = Softmax(score_bits=sb, mult=int(mult), shift=shift, frac_bits=g, exp_bits=eb,
                        table=exp2_table(g, eb), recip_num=int(math.floor(2.0**pshift / p.step + 0.5)),
                        recip_shift=pshift, out_bits=p.bits, hi=p.hi, m_bits=opts.m_bits)
        s_p = p.step
    cb = max_len * probs.hi * _mag(acts["v"].bits)
    context = requant([[s_p * acts["v"].step]], threshold_bias(dense_out.act_quant, dense_out.in_features,
                                                               f"{pre}.context"), c_act.step, signed_bits(-cb, cb),
                      c_act, opts, f"{pre}.context")
    attention = Attention(heads=heads, head_dim=d, q_bits=acts["q"].bits, k_bits=acts["k"].bits,
                          v_bits=acts["v"].bits, probs=probs, context=context, max_len=max_len,
                          thresholds=thresholds)

    def to_res(nm):
        return lambda reals, bias, acc: requant(reals * 2.0**frac, bias * 2.0**frac, 1.0, acc, res, opts, nm)

    attn_out = binary_linear(dense_out, f"{pre}.attention.output.dense", c_act, to_res(f"{pre}.attn_out"))
    ln1 = layer_norm(layer.attention.output.LayerNorm, res + 1, frac, opts, f"{pre}.attention.output.LayerNorm")

    inter = layer.intermediate.dense
    fx = act_of(inter.act_quant, f"{pre}.intermediate.dense.act_quant")
    ffn_in_q = requant([[res_step / fx.step]], threshold_bias(inter.act_quant, inter.in_features, f"{pre}.ffn_in_q"),
                       1.0, res, fx, opts, f"{pre}.ffn_in_q")
    out_dense = layer.output.dense
    o = act_of(out_dense.act_quant, f"{pre}.output.dense.act_quant")

    def ffn_act(reals, bias, acc):
        nm = f"{pre}.ffn_act"
        if act_kind == "relu":
            if o.sign:  # sign(relu(x)) = +1 everywhere: z = 0 -> bit 1
                return Requant(mult=np.zeros_like(reals, dtype=np.int64), bias=[0], shift=1, acc_bits=acc,
                               out_bits=1, m_bits=opts.m_bits)
            return requant(reals, bias, o.step, acc, o, opts, nm, lo=0)
        if o.sign:  # gelu(x) >= 0 <=> x >= 0
            return requant(reals, bias, 1.0, acc, o, opts, nm)
        return lut(act_function(act_kind), reals, bias, acc, o, opts, nm, act_kind)

    ffn_in = binary_linear(inter, f"{pre}.intermediate.dense", fx, ffn_act)
    ffn_out = binary_linear(out_dense, f"{pre}.output.dense", o, to_res(f"{pre}.ffn_out"))
    ln2 = layer_norm(layer.output.LayerNorm, res + 1, frac, opts, f"{pre}.output.LayerNorm")
    return EncoderLayer(qkv_in=qkv_in, query=query, key=key, value=value, attention=attention,
                        attn_out=attn_out, ln1=ln1, ffn_in_q=ffn_in_q, ffn_in=ffn_in, ffn_out=ffn_out, ln2=ln2)


def build_params(model: nn.Module, opts: ExportOptions | None = None, meta: dict | None = None) -> EncoderParams:
    """The integer model (hw.golden.ops) of a quantized BertForSequenceClassification."""
    from sw.qbert import bert_of, quant_config_of
    from sw.quant import QuantLinear

    opts = opts or ExportOptions()
    bert = bert_of(model)
    if quant_config_of(bert) is None:
        raise BinbertError("model is not quantized (quantize_bert): nothing to export to binary hardware")
    cls = getattr(model, "classifier", None)
    if not isinstance(cls, nn.Linear):
        raise BinbertError("model has no linear classifier head (expected BertForSequenceClassification)")
    if bert.pooler is None:
        raise BinbertError("model has no pooler: the integer model classifies the pooled [CLS] token")
    hidden_act = bert.config.hidden_act
    if not isinstance(hidden_act, str) or hidden_act not in ACTIVATIONS:
        raise BinbertError(f"hidden_act={hidden_act!r} unsupported: choose one of {', '.join(ACTIVATIONS)}")
    act_kind = ACTIVATIONS[hidden_act]
    with torch.no_grad():
        embedding = _embedding(bert, opts)
        max_len = embedding.max_len
        layers = [_layer(layer, i, act_kind, max_len, opts) for i, layer in enumerate(bert.encoder.layer)]

        tanh_hi = (1 << (opts.tanh_bits - 1)) - 1
        tanh_out = Act(opts.tanh_bits, 1.0 / tanh_hi, -tanh_hi, tanh_hi)
        pdense = bert.pooler.dense

        def tanh_lut(reals, bias, acc):
            return lut(np.tanh, reals, bias, acc, tanh_out, opts, "pooler.tanh", "tanh")

        if isinstance(pdense, QuantLinear) or hasattr(pdense, "weight_quant1"):
            px = act_of(pdense.act_quant, "pooler.dense.act_quant")
            pooler_in = requant([[2.0**-opts.res_frac / px.step]],
                                threshold_bias(pdense.act_quant, pdense.in_features, "pooler_in"),
                                1.0, opts.res_bits, px, opts, "pooler_in")
            pooler = binary_linear(pdense, "pooler.dense", px, tanh_lut)
        else:
            pooler_in = None
            pooler = int_linear(pdense, "pooler.dense", opts.res_bits, 2.0**-opts.res_frac, tanh_lut, opts)

        def logits(reals, bias, acc):
            return requant(reals * 2.0**opts.logit_frac, bias * 2.0**opts.logit_frac, 1.0, acc,
                           opts.logit_bits, opts, "classifier")

        classifier = int_linear(cls, "classifier", opts.tanh_bits, tanh_out.step, logits, opts)
    info = dict(meta or {})
    info.setdefault("hidden_act", hidden_act)
    info.setdefault("attention", quant_config_of(bert).attention)
    info["options"] = asdict(opts)
    return EncoderParams(res_bits=opts.res_bits, res_frac=opts.res_frac, embedding=embedding,
                         layers=tuple(layers), pooler_in=pooler_in, pooler=pooler, classifier=classifier,
                         logit_frac=opts.logit_frac, meta=info)


def export_model(model: nn.Module, out_dir, opts: ExportOptions | None = None, meta: dict | None = None) -> Path:
    """Build the integer model and write ROMs + manifest.json; returns the manifest path."""
    from sw.qbert import quant_config_of

    params = build_params(model, opts, meta)
    info = dict(params.meta)
    qc = quant_config_of(model)
    info["quant"] = qc.to_dict() if qc is not None else None
    info["num_labels"] = params.num_labels
    info["max_len"] = params.max_len
    return save_params(params, out_dir, info)


def export_checkpoint(ckpt, out_dir, opts: ExportOptions | None = None) -> Path:
    """``binbert export``: a checkpoint directory (sw.train.save_checkpoint) -> export directory."""
    from sw.train import load_checkpoint

    model, state, cfg = load_checkpoint(ckpt)
    model.eval()
    meta = {"checkpoint": str(ckpt), "stage": state.get("stage") if isinstance(state, dict) else None,
            "task": cfg.data.task, "max_seq_len": cfg.data.max_seq_len, "backbone": cfg.model.backbone}
    return export_model(model, out_dir, opts, meta)
