"""Checkpoint -> integer model (docs/arithmetic.md §10-§19) -> ROM files + manifest.json.

``build_params(model)`` reads a quantized BERT classifier (``sw.qbert.quantize_bert``, optionally
split by ``sw.split``): its binary weight terms, weight scales, LSQ steps, thresholds and
LayerNorm / embedding / head parameters, as float64 numpy; :mod:`hw.golden.fold` folds them into
the golden ops (packed weights, fixed-point requantizer multipliers/shifts/biases (§8),
fixed-point LayerNorm parameters, LUT ROMs for GELU/tanh and the softmax exp table).
``export_model`` / ``export_checkpoint`` write them with :func:`hw.golden.export_format.save_params`;
an export of a checkpoint records its weights' sha256 (:func:`checkpoint_digest`) in the manifest's
meta, which :func:`check_export_of` compares when a checkpoint and an export meet.
Anything the contract cannot represent is refused with a BinbertError naming the module.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hw.errors import BinbertError
from hw.files import CannotWrite
from hw.golden import arith, fold
from hw.golden.arith import signed_bits
from hw.golden.attention import Attention
from hw.golden.embedding import Embedding
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.export_format import save_params
from hw.golden.fold import Act, ExportOptions, act_function
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.model import EncoderParams
from hw.golden.softmax import Heaviside, shifted_score_bits

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


# --------------------------------------------------------------------------------------------
# quantizer introspection
# --------------------------------------------------------------------------------------------

def act_of(q, name: str) -> Act:
    """Integer view of a ``sw.quant.ActQuantizer`` (refuses what the contract cannot represent)."""
    from sw.quant.functions import qrange

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
    from sw.quant.modules import QuantEmbedding, QuantLinear
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


# --------------------------------------------------------------------------------------------
# op builders: a module's reals -> hw.golden.fold
# --------------------------------------------------------------------------------------------

def layer_norm(ln: nn.LayerNorm, in_bits: int, in_frac: int, opts: ExportOptions, name: str) -> LayerNorm:
    """Fixed-point LayerNorm (§17) from an nn.LayerNorm; output in the residual format."""
    if not isinstance(ln, nn.LayerNorm) or ln.weight is None or ln.bias is None:
        raise BinbertError(f"{name}: expected an affine nn.LayerNorm, got {type(ln).__name__}")
    return fold.layer_norm(ln.weight.detach().double().cpu().numpy(), ln.bias.detach().double().cpu().numpy(),
                           ln.eps, in_bits=in_bits, in_frac=in_frac, res_frac=opts.res_frac,
                           out_bits=opts.res_bits, extra_bits=opts.ln_extra_bits,
                           norm_frac=opts.ln_norm_frac, recip_bits=opts.ln_recip_bits, name=name)


def binary_linear(mod, name: str, x: Act, out_fn) -> BinaryLinear:
    """BinaryLinear from a quantized linear; ``out_fn(reals, bias, acc_bits)`` builds its output op."""
    bits, alphas = weight_terms(mod, name)
    return fold.binary_linear(bits, alphas, bias_of(mod, bits[0].shape[0]), x, out_fn)


def int_linear(lin: nn.Linear, name: str, in_bits: int, s_in: float, out_fn, opts: ExportOptions) -> IntLinear:
    """IntLinear (§16): per-row symmetric rounding of a full-precision weight."""
    if not isinstance(lin, nn.Linear):
        raise BinbertError(f"{name}: expected nn.Linear, got {type(lin).__name__}")
    w = lin.weight.detach().double().cpu().numpy()
    bias = lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0])
    return fold.int_linear(w, bias, in_bits=in_bits, s_in=s_in, w_bits=opts.cls_w_bits, out_fn=out_fn)


def threshold_bias(q, n: int, name: str) -> np.ndarray:
    """Real requantizer bias of a sign quantizer's learned thresholds (fold.threshold_bias);
    [0] for a plain sign or a multi-bit code."""
    if not q.cfg.threshold:
        return np.zeros(1)
    return fold.threshold_bias(q.beta.detach().double().cpu().numpy(), n, name)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------

def _embedding(bert, opts: ExportOptions) -> Embedding:
    from sw.quant.modules import QuantEmbedding
    from sw.split import SplitQuantEmbedding

    emb = bert.embeddings
    we = emb.word_embeddings
    quant_word = isinstance(we, (QuantEmbedding, SplitQuantEmbedding)) and not (
        isinstance(we, QuantEmbedding) and we.weight_quant.cfg.method == "fp")
    pos = emb.position_embeddings.weight.detach().double().cpu().numpy()
    tt = emb.token_type_embeddings.weight.detach().double().cpu().numpy()
    bits = alphas = table = None
    if quant_word:
        bits, alphas = weight_terms(we, "embeddings.word_embeddings")
    else:
        table = we.weight.detach().double().cpu().numpy()
    frac = fold.embedding_frac(pos, tt, table_bits=opts.emb_bits, word_alphas=alphas, word_table=table)
    ln = layer_norm(emb.LayerNorm, opts.emb_bits + 2, frac, opts, "embeddings.LayerNorm")
    return fold.embedding(pos, tt, ln, frac=frac, table_bits=opts.emb_bits, word_bits=bits, word_alphas=alphas,
                          word_table=table)


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
    qkv_in = fold.requant_to([[res_step / x.step]],
                             threshold_bias(att.query.act_quant, att.query.in_features, f"{pre}.qkv_in"),
                             1.0, res, x, m_bits=opts.m_bits, name=f"{pre}.qkv_in")

    acts = {}
    for key in ("q", "k", "v"):
        acts[key] = act_of(getattr(att, f"{key}_quant"), f"{pre}.attention.self.{key}_quant")

    def to_code(a: Act, nm):
        return lambda reals, bias, acc: fold.requant_to(reals, bias, a.step, acc, a, m_bits=opts.m_bits, name=nm)

    query = binary_linear(att.query, f"{pre}.attention.self.query", x, to_code(acts["q"], f"{pre}.query"))
    key = binary_linear(att.key, f"{pre}.attention.self.key", x, to_code(acts["k"], f"{pre}.key"))
    value = binary_linear(att.value, f"{pre}.attention.self.value", x, to_code(acts["v"], f"{pre}.value"))

    d = att.attention_head_size
    heads = query.n // d
    b = d * fold.mag(acts["q"].bits) * fold.mag(acts["k"].bits)  # largest |score|
    dense_out = layer.attention.output.dense
    c_act = act_of(dense_out.act_quant, f"{pre}.attention.output.dense.act_quant")
    thresholds = None
    if att.mode == "bi" and att.score_threshold is not None:
        thresholds = fold.head_thresholds(att.score_threshold.detach().double().cpu().numpy(), float(att.scaling),
                                          b, f"{pre}.attention.self.score_threshold")
    sb = shifted_score_bits(b, thresholds)
    if att.mode == "bi":
        probs, s_p = Heaviside(score_bits=sb), 1.0
    else:
        p = act_of(att.p_quant, f"{pre}.attention.self.p_quant")
        if p.sign:
            raise BinbertError(f"{pre}.attention.self.p_quant: sign-quantized probabilities carry no "
                               f"information; softmax attention needs a multi-bit quantizer")
        probs = fold.softmax(sb, acts["q"].step * acts["k"].step * float(att.scaling) * fold.LOG2E, p.step,
                             p.bits, p.hi, frac_bits=opts.softmax_frac_bits, exp_bits=opts.softmax_exp_bits,
                             recip_bits=opts.softmax_recip_bits, m_bits=opts.m_bits)
        s_p = p.step
    cb = max_len * probs.hi * fold.mag(acts["v"].bits)
    context = fold.requant_to([[s_p * acts["v"].step]],
                              threshold_bias(dense_out.act_quant, dense_out.in_features, f"{pre}.context"),
                              c_act.step, signed_bits(-cb, cb), c_act, m_bits=opts.m_bits, name=f"{pre}.context")
    attention = Attention(heads=heads, head_dim=d, q_bits=acts["q"].bits, k_bits=acts["k"].bits,
                          v_bits=acts["v"].bits, probs=probs, context=context, max_len=max_len,
                          thresholds=thresholds)

    def to_res(nm):
        return lambda reals, bias, acc: fold.requant_to(reals * 2.0**frac, bias * 2.0**frac, 1.0, acc, res,
                                                        m_bits=opts.m_bits, name=nm)

    attn_out = binary_linear(dense_out, f"{pre}.attention.output.dense", c_act, to_res(f"{pre}.attn_out"))
    ln1 = layer_norm(layer.attention.output.LayerNorm, res + 1, frac, opts, f"{pre}.attention.output.LayerNorm")

    inter = layer.intermediate.dense
    fx = act_of(inter.act_quant, f"{pre}.intermediate.dense.act_quant")
    ffn_in_q = fold.requant_to([[res_step / fx.step]],
                               threshold_bias(inter.act_quant, inter.in_features, f"{pre}.ffn_in_q"),
                               1.0, res, fx, m_bits=opts.m_bits, name=f"{pre}.ffn_in_q")
    out_dense = layer.output.dense
    o = act_of(out_dense.act_quant, f"{pre}.output.dense.act_quant")

    def ffn_act(reals, bias, acc):
        nm = f"{pre}.ffn_act"
        if act_kind == "relu":
            if o.sign:  # sign(relu(x)) = +1 everywhere
                return fold.always_one(reals, acc, m_bits=opts.m_bits)
            return fold.requant_to(reals, bias, o.step, acc, o, m_bits=opts.m_bits, name=nm, lo=0)
        if o.sign:  # gelu(x) >= 0 <=> x >= 0
            return fold.requant_to(reals, bias, 1.0, acc, o, m_bits=opts.m_bits, name=nm)
        return fold.lut(act_function(act_kind), act_kind, reals, bias, acc, o, lut_bits=opts.lut_bits,
                        m_bits=opts.m_bits, name=nm)

    ffn_in = binary_linear(inter, f"{pre}.intermediate.dense", fx, ffn_act)
    ffn_out = binary_linear(out_dense, f"{pre}.output.dense", o, to_res(f"{pre}.ffn_out"))
    ln2 = layer_norm(layer.output.LayerNorm, res + 1, frac, opts, f"{pre}.output.LayerNorm")
    return EncoderLayer(qkv_in=qkv_in, query=query, key=key, value=value, attention=attention,
                        attn_out=attn_out, ln1=ln1, ffn_in_q=ffn_in_q, ffn_in=ffn_in, ffn_out=ffn_out, ln2=ln2)


def build_params(model: nn.Module, opts: ExportOptions | None = None, meta: dict | None = None) -> EncoderParams:
    """The integer model (hw.golden) of a quantized BertForSequenceClassification."""
    from sw.qbert import bert_of, quant_config_of
    from sw.quant.modules import QuantLinear

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
            return fold.lut(np.tanh, "tanh", reals, bias, acc, tanh_out, lut_bits=opts.lut_bits,
                            m_bits=opts.m_bits, name="pooler.tanh")

        if isinstance(pdense, QuantLinear) or hasattr(pdense, "weight_quant1"):
            px = act_of(pdense.act_quant, "pooler.dense.act_quant")
            pooler_in = fold.requant_to([[2.0**-opts.res_frac / px.step]],
                                        threshold_bias(pdense.act_quant, pdense.in_features, "pooler_in"),
                                        1.0, opts.res_bits, px, m_bits=opts.m_bits, name="pooler_in")
            pooler = binary_linear(pdense, "pooler.dense", px, tanh_lut)
        else:
            pooler_in = None
            pooler = int_linear(pdense, "pooler.dense", opts.res_bits, 2.0**-opts.res_frac, tanh_lut, opts)

        def logits(reals, bias, acc):
            return fold.requant_to(reals * 2.0**opts.logit_frac, bias * 2.0**opts.logit_frac, 1.0, acc,
                                   opts.logit_bits, m_bits=opts.m_bits, name="classifier")

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


CHECKPOINT_DIGEST = "checkpoint_sha256"


def checkpoint_digest(ckpt) -> str:
    """sha256 of checkpoint ``ckpt``'s weight file (sw.train.checkpoint.MODEL; of ``ckpt.old``
    where an interrupted swap left only that, as load_checkpoint reads it)."""
    from sw.train.checkpoint import MODEL, resolve_checkpoint

    p = resolve_checkpoint(Path(ckpt))
    if p is None:
        raise BinbertError(f"{ckpt}: not a complete binbert checkpoint (no {MODEL})")
    h = hashlib.sha256()
    try:
        with open(p / MODEL, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise BinbertError(f"{p / MODEL}: cannot read ({exc.strerror or exc})") from None
    return h.hexdigest()


def check_export_of(export_dir, meta: dict, ckpt) -> None:
    """Refuse export ``export_dir`` (its manifest ``meta``) unless it was exported from
    checkpoint ``ckpt``. An export that records no checkpoint (written from a model in memory,
    or before exports recorded one) cannot be checked and is accepted."""
    recorded = meta.get(CHECKPOINT_DIGEST)
    if recorded is None:
        return
    actual = checkpoint_digest(ckpt)
    if recorded != actual:
        raise BinbertError(f"--export {export_dir} was exported from another checkpoint than --ckpt {ckpt} "
                           f"(weights sha256 {str(recorded)[:12]}..., the checkpoint's {actual[:12]}...): "
                           f"export {ckpt} again")


def export_checkpoint_model(model: nn.Module, out_dir, ckpt, stage: str | None,
                            opts: ExportOptions | None = None, meta: dict | None = None) -> Path:
    """:func:`export_model` of the model of checkpoint ``ckpt``, recording ``ckpt``'s
    :func:`checkpoint_digest` in the meta: a model that cannot be exported (a full-precision
    teacher, say) is refused naming the checkpoint and its stage."""
    meta = {**(meta or {}), CHECKPOINT_DIGEST: checkpoint_digest(ckpt)}
    try:
        return export_model(model, out_dir, opts, meta)
    except CannotWrite:
        raise  # the output directory's fault, not the model's: named alone
    except BinbertError as exc:
        raise BinbertError(f"{ckpt} (stage {stage!r}): {exc}") from None


def export_checkpoint(ckpt, out_dir, opts: ExportOptions | None = None) -> Path:
    """``binbert export``: a checkpoint directory (sw.train.save_checkpoint) -> export directory."""
    from sw.train import load_checkpoint

    model, state, cfg = load_checkpoint(ckpt)
    model.eval()
    meta = {"checkpoint": str(ckpt), "stage": state.get("stage") if isinstance(state, dict) else None,
            "task": cfg.data.task, "max_seq_len": cfg.data.max_seq_len, "backbone": cfg.model.backbone}
    return export_checkpoint_model(model, out_dir, ckpt, meta["stage"], opts, meta)


def export_cache() -> Path:
    """Where checkpoints exported on the fly are kept: ``exports`` under the simulator's build
    root ($BINBERT_SIM_BUILD, else sim_build/ in the repository, as sim.runner reads it)."""
    root = os.environ.get("BINBERT_SIM_BUILD") or Path(__file__).resolve().parents[1] / "sim_build"
    return Path(root) / "exports"


def load_export(ckpt, cache=None) -> tuple[EncoderParams, dict, str]:
    """(EncoderParams, meta, tokenizer backbone) from an export directory, or from a checkpoint
    directory exported on the fly (cached under ``cache``, default :func:`export_cache`; the
    cache key is the checkpoint's path and its files' sizes and times, and a cached export
    whose recorded checkpoint digest is not the checkpoint's is stale: exported again)."""
    import shutil
    import tempfile

    from hw.golden.export_format import load_params
    from sw.train import load_checkpoint

    path = Path(ckpt)
    if (path / "manifest.json").is_file():
        params, meta = load_params(path)
        return params, meta, meta.get("backbone", "minilm")
    if not path.exists():
        raise BinbertError(f"--ckpt {ckpt}: no such checkpoint or export directory")
    model, state, cfg = load_checkpoint(path)
    files = sorted(f for f in path.iterdir() if f.is_file())
    key = str(path.resolve()) + "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    stamp = hashlib.sha256(key.encode()).hexdigest()[:12]
    out = (export_cache() if cache is None else Path(cache)) / f"{path.name}-{stamp}"
    params = None
    if (out / "manifest.json").is_file():
        try:
            params, meta = load_params(out)
            if meta.get(CHECKPOINT_DIGEST) is None:  # from before exports recorded it
                raise BinbertError(f"{out}: records no checkpoint")
            check_export_of(out, meta, path)
        except BinbertError:   # a stale or damaged cache: export again
            params = None
    if params is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        export_checkpoint_model(model.eval(), tmp, path, state.get("stage"),
                                meta={"checkpoint": str(path), "backbone": cfg.model.backbone})
        shutil.rmtree(out, ignore_errors=True)
        tmp.replace(out)  # atomic: a reader never sees half an export
        params, meta = load_params(out)
    return params, {**meta, "data_dir": cfg.data.dir, "task": cfg.data.task}, cfg.model.backbone
