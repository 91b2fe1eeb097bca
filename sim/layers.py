"""Encoder-level blocks for ``binbert sim --layer attn|ffn|ln|encoder``: default configurations
(seeded random golden ops, or the ops of an exported checkpoint) and :func:`run_layer`.

The random ops are built the way ``sw/export.py`` folds a trained model (docs/arithmetic.md §8,
§11-§17: the same default shifts, fraction bits and table shapes) from seeded random real
scales, so the RTL sees realistic constants without a checkpoint; with ``ckpt`` the ops come
from ``binbert export`` output (or a checkpoint, exported on the fly).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hw.golden import arith, fold
from hw.golden.arith import signed_bits
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Softmax, shifted_score_bits
from hw.errors import BinbertError

RES_BITS, RES_FRAC = 16, 8
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
    """A §13 softmax folded like sw.export: ``logit_scale`` = real logit per score unit
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
                         head_thresholds: bool = False) -> "EncoderLayer":
    """A whole §19 layer of seeded random ops, folded like the export (binary weight terms,
    LSQ codes of the given widths, softmax or Bi-Attention Heaviside, GELU table or ReLU).
    ``head_dim`` below hidden/heads: width-pruned heads (Q/K/V heads·head_dim x hidden).
    ``head_thresholds`` (bi mode): learned per-head Bi-Attention thresholds T_h (§14), nonzero,
    within about ±sqrt(head_dim) of 0 like a trained one; above two heads one of them at the
    range's edge."""
    from hw.golden.attention import Attention
    from hw.golden.encoder_layer import EncoderLayer
    from hw.golden.softmax import Heaviside

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
    # a sign context gets per-row thresholds (learned RSign thresholds fold into B, sw.export)
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


# --------------------------------------------------------------------------------------------
# `binbert sim --layer attn|ffn|ln|encoder`
# --------------------------------------------------------------------------------------------

LAYERS = {"ln": "sim.benches.ln", "ffn": "sim.benches.ffn", "attn": "sim.benches.attn", "encoder": "sim.benches.encoder"}
DEFAULT_VECTORS = {"ln": 2000, "ffn": 100, "attn": 6, "encoder": 4}
SEQ_LEN = 8            # random configurations: tokens per sequence
CKPT_SEQ_LEN = 16      # checkpoint runs: real sentences of at most this many tokens
CKPT_SENTENCES = 8
# checkpoint runs by default: Icarus interprets a BERT-sized layer ~100x slower than Verilator
# runs it, so it gets fewer sentences (--sentences / VECTORS= sets any count on either)
CKPT_SENTENCES_BY_SIM = {"verilator": CKPT_SENTENCES, "icarus": 2}
CKPT_MACS = 1024
from hw.fpga.presets import CONFIG_SEED  # noqa: E402  (fixed: the random ops are part of the design, builds are reused)


SIZES = {
    # CLI default: the brief's small-but-real shape; MVUs of ~128 XNOR lanes keep builds short
    "default": dict(hidden=64, heads=2, ffn=128, seq_len=SEQ_LEN, macs=128, lanes=4, ln_n=(64, 48)),
    # tests: the same structure at the smallest sizes that still fold (SF, NF > 1)
    "tiny": dict(hidden=16, heads=2, ffn=32, seq_len=4, macs=32, lanes=4, ln_n=(16, 12)),
}


def random_layer_pair(rng: np.random.Generator, *, hidden: int, heads: int, ffn: int, max_len: int):
    """A W1A4 split layer (T = 2, softmax) and a BiBERT W1A1 layer (Bi-Attention, sign codes)."""
    split = random_encoder_layer(rng, hidden=hidden, heads=heads, ffn=ffn, max_len=max_len, x_bits=4, q_bits=4,
                                 k_bits=4, v_bits=4, p_bits=4, c_bits=4, f_bits=4, g_bits=4, terms=2)
    bi = random_encoder_layer(rng, hidden=hidden, heads=heads, ffn=ffn, max_len=max_len, x_bits=1, c_bits=1,
                              f_bits=1, g_bits=1, terms=1, mode="bi",
                              head_thresholds=True)
    return split, bi


def _random_configs(layer: str, size: str = "default") -> list[tuple[str, object]]:
    from hw.rtl.encoder_layer import folding_for
    from hw.rtl.layernorm import LayerNormUnitParams, shared_or_parallel

    z = SIZES[size]
    rng = np.random.default_rng(CONFIG_SEED)
    if layer == "ln":
        n1, n2 = z["ln_n"]
        a = LayerNormUnitParams(ln=random_layernorm(n1, rng), lanes=4)
        b = LayerNormUnitParams(ln=random_layernorm(n2, rng, eps=0.0), lanes=1)
        # the iCE40 preset's unit: one bit-serial multiplier, radix-2 dividers
        c = shared_or_parallel(random_layernorm(n1, rng), 4, "shared")
        return [(f"ln n={n1} lanes=4", a), (f"ln n={n2} lanes=1 eps=0", b),
                (f"ln n={n1} lanes=4 shared multiplier", c)]
    split, bi = random_layer_pair(rng, hidden=z["hidden"], heads=z["heads"], ffn=z["ffn"], max_len=z["seq_len"])
    shape = f"hidden={z['hidden']} heads={z['heads']} ffn={z['ffn']} seq={z['seq_len']}"
    cases = [(f"{shape} W1A4 split (T=2) softmax", split), (f"{shape} W1A1 BiBERT Heaviside", bi)]
    return [(f"{layer} {label}", _block(layer, folding_for(lyr, seq_len=z["seq_len"], macs=z["macs"],
                                                            lanes=z["lanes"])))
            for label, lyr in cases]


def _block(layer: str, p):
    return {"encoder": p, "attn": p.attention, "ffn": p.ffn}[layer]


def load_export(ckpt) -> tuple[object, dict, str]:
    """(EncoderParams, meta, tokenizer backbone) from an export directory, or from a checkpoint
    directory exported on the fly (cached under sim_build/exports)."""
    import hashlib
    from pathlib import Path

    from hw.errors import BinbertError
    from hw.golden.export_format import load_params

    path = Path(ckpt)
    if (path / "manifest.json").is_file():
        params, meta = load_params(path)
        return params, meta, meta.get("backbone", "minilm")
    if not path.exists():
        raise BinbertError(f"--ckpt {ckpt}: no such checkpoint or export directory")
    from sim.runner import BUILD_ROOT
    from sw.export import export_model
    from sw.train import load_checkpoint

    model, _state, cfg = load_checkpoint(path)
    files = sorted(f for f in path.iterdir() if f.is_file())
    key = str(path.resolve()) + "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    stamp = hashlib.sha256(key.encode()).hexdigest()[:12]
    out = BUILD_ROOT / "exports" / f"{path.name}-{stamp}"
    params = None
    if (out / "manifest.json").is_file():
        try:
            params, meta = load_params(out)
        except BinbertError:   # a stale or damaged cache: export again
            params = None
    if params is None:
        import shutil
        import tempfile

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        export_model(model.eval(), tmp, meta={"checkpoint": str(path), "backbone": cfg.model.backbone})
        shutil.rmtree(out, ignore_errors=True)
        tmp.replace(out)  # atomic: a reader never sees half an export
        params, meta = load_params(out)
    return params, {**meta, "data_dir": cfg.data.dir, "task": cfg.data.task}, cfg.model.backbone


def dev_sentences(params, meta: dict, backbone: str, *, seq_len: int, count: int,
                  exact: bool = False) -> dict:
    """The first ``count`` dev sentences of the export's task that fit ``seq_len`` tokens of the
    model's vocabulary: ``ids``, ``types``, ``valid`` (S, seq_len) padded arrays, ``labels``,
    ``index`` (position in the dev set) and ``text``.

    ``exact``: a BinbertError (before any simulation) unless exactly ``count`` are found, naming
    the dev set's size or how many sentences fit; otherwise fewer are returned (at least one).
    """
    from hw.errors import BinbertError
    from sw import backbone as bb
    from sw.data import load_split

    task = meta.get("task", "sst2")
    if seq_len > params.max_len:
        raise BinbertError(f"seq_len {seq_len}: longer than the model's maximum of {params.max_len} "
                           f"tokens (its position table)")
    examples = load_split(meta.get("data_dir", "data/glue"), task, "dev")
    if exact and count > len(examples):
        raise BinbertError(f"--sentences {count}: the {task} dev set has only {len(examples)} sentences")
    tok = bb.load_tokenizer(backbone)
    rows = {k: [] for k in ("ids", "types", "valid", "labels", "index", "text")}
    for i, e in enumerate(examples):
        enc = tok(e.text_a, e.text_b, truncation=False, return_token_type_ids=True)
        n = len(enc["input_ids"])
        if n > seq_len or max(enc["input_ids"]) >= params.embedding.vocab:
            continue
        pad = seq_len - n
        rows["ids"].append(enc["input_ids"] + [tok.pad_token_id or 0] * pad)
        rows["types"].append(enc["token_type_ids"] + [0] * pad)
        rows["valid"].append([1] * n + [0] * pad)
        rows["labels"].append(e.label)
        rows["index"].append(i)
        rows["text"].append(e.text_a if e.text_b is None else f"{e.text_a} / {e.text_b}")
        if len(rows["ids"]) == count:
            break
    found = len(rows["ids"])
    if not found or (exact and found < count):
        raise BinbertError(f"--sentences {count}: only {found} of the {len(examples)} {task} dev "
                           f"sentences fit {seq_len} tokens of this model's vocabulary")
    return {"ids": np.array(rows["ids"]), "types": np.array(rows["types"]),
            "valid": np.array(rows["valid"], dtype=bool), "labels": np.array(rows["labels"]),
            "index": np.array(rows["index"]), "text": rows["text"]}


def sentence_inputs(params, meta: dict, backbone: str, *, seq_len: int, count: int):
    """Real SST-2 dev sentences of at most ``seq_len`` tokens: (input_ids, token types, mask)."""
    d = dev_sentences(params, meta, backbone, seq_len=seq_len, count=count)
    return d["ids"], d["types"], d["valid"]


def ckpt_configs(layer: str, ckpt, *, seq_len: int | None = None, count: int = CKPT_SENTENCES,
                 layer_index: int = 0, macs: int = 256) -> list[tuple[str, object, dict]]:
    """The exported layer ``layer_index`` of a checkpoint on real sentences: the block's params
    and an .npz of its inputs (the residual stream the golden model feeds that block)."""
    import tempfile

    from hw.rtl.encoder_layer import folding_for
    from hw.errors import BinbertError
    from hw.rtl.layernorm import LayerNormUnitParams

    params, meta, backbone = load_export(ckpt)
    if not 0 <= layer_index < len(params.layers):
        raise BinbertError(f"--ckpt {ckpt}: layer {layer_index} out of range ({len(params.layers)} layers)")
    # the default fits the model; an explicit length beyond its position table is an error
    seq_len = min(CKPT_SEQ_LEN, params.max_len) if seq_len is None else seq_len
    ids, types, valid = sentence_inputs(params, meta, backbone, seq_len=seq_len, count=count)
    states = params.hidden_states(ids, valid, types)
    lyr = params.layers[layer_index]
    r = states[layer_index]
    enc = folding_for(lyr, seq_len=seq_len, macs=macs)
    att = enc.attention
    h = att.compute(r, valid)
    note = (f"layer {layer_index} of {ckpt} on {len(ids)} SST-2 dev sentences "
            f"({int(valid.sum())} tokens, seq_len {seq_len})")
    tmp = tempfile.NamedTemporaryFile(prefix="binbert-sim-", suffix=".npz", delete=False)
    if layer == "ln":
        # the sum ln1 normalises: attn_out(context) + r, of every token
        x = lyr.qkv_in.compute(r[None])
        c = lyr.attention.compute(lyr.query.compute(x), lyr.key.compute(x), lyr.value.compute(x), valid)
        v = (lyr.attn_out.compute(c) + r)[valid]
        block = LayerNormUnitParams(ln=lyr.ln1, lanes=enc.lanes)
        np.savez(tmp, v=v)
    elif layer == "ffn":
        block = enc.ffn
        np.savez(tmp, h=h[valid])
    else:
        block = _block(layer, enc)
        np.savez(tmp, r=r, valid=valid)
    tmp.close()
    return [(f"{layer} {note}", block, {"inputs": tmp.name, "burst": 3})]


def layer_configs(layer: str, ckpt=None, size: str = "default", sentences: int = CKPT_SENTENCES,
                  seq_len: int | None = None) -> list[tuple[str, object, dict]]:
    from hw.errors import BinbertError

    if layer not in LAYERS:
        raise BinbertError(f"unknown layer {layer!r}: encoder-level layers are {', '.join(LAYERS)}")
    if ckpt is not None:
        # a trained layer is BERT-sized: fold it wider than the random default (~1k XNOR lanes
        # per MVU) so a sentence takes tens of thousands of cycles, not millions
        macs = CKPT_MACS if size == "default" else SIZES[size]["macs"]
        return ckpt_configs(layer, ckpt, count=sentences, seq_len=seq_len, macs=macs)
    if size not in SIZES:
        raise BinbertError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    return [(label, p, {}) for label, p in _random_configs(layer, size)]


def run_layer(layer: str, sim: str = "verilator", waves: bool = False, seed: int | None = None,
              ckpt=None, vectors: int | None = None, build_dir=None, log=print,
              size: str = "default", seq_len: int | None = None, **run_kw) -> list:
    """Run every configuration of ``layer`` (attn, ffn, ln, encoder) through its cocotb bench on
    ``sim``; returns the :class:`sim.runner.SimResult` list, raising SimulationError on a mismatch.

    With ``ckpt`` (a checkpoint or export directory) the block is that model's layer 0 on
    ``vectors`` real SST-2 dev sentences (default ``CKPT_SENTENCES_BY_SIM[sim]``) of at most
    ``seq_len`` tokens (default 16, or the model's maximum when shorter) instead of random ops
    and inputs.
    ``run_kw`` goes to :func:`sim.runner.run_block` (e.g. ``verbose``).
    """
    from sim.runner import check_sim_name, run_block

    check_sim_name(sim)
    results = []
    sentences = CKPT_SENTENCES_BY_SIM[sim] if vectors is None or ckpt is None else max(1, vectors)
    for label, params, extra in layer_configs(layer, ckpt, size, sentences=sentences, seq_len=seq_len):
        if log:
            log(f"{label}")
        try:
            results.append(run_block(params, block=layer, sim=sim, waves=waves, seed=seed,
                                     vectors=DEFAULT_VECTORS[layer] if vectors is None else vectors,
                                     build_dir=build_dir, test_module=LAYERS[layer], extra=extra,
                                     log=log, **run_kw))
        finally:  # ckpt_configs' stimulus file: a temporary of this run only
            if extra.get("inputs"):
                Path(extra["inputs"]).unlink(missing_ok=True)
    return results


# `make bitstream LAYER=encoder CONFIG=...`: the presets are hardware configs (models/hw/*.yaml),
# loaded and validated by hw/fpga/presets.py; re-exported here for the benches that use them.
from hw.fpga.presets import BITSTREAM_CONFIGS, bitstream_params, bitstream_spec  # noqa: E402,F401
