"""Quantized BERT: turn a Hugging Face BertModel into BinaryBERT / BiBERT in place.

``quantize_bert(model, cfg)`` replaces, in every encoder layer, the self-attention with
:class:`QuantBertSelfAttention` (quantized Q/K/V projections, quantized Q and K before Q·Kᵀ,
quantized attention probabilities and V before the second matmul, or BiBERT's Bi-Attention),
and the attention-output and both FFN linears with :class:`sw.quant.QuantLinear`; optionally
the pooler and the word embedding too. LayerNorm, biases, position / token-type embeddings,
residual adds and the classifier stay full precision (BinaryBERT §4, BiBERT §4).

``record(model)`` collects, during one forward, what the distillation losses of both papers
need (attention scores, Q/K/V, MHA and FFN outputs, hidden states), for quantized students and
plain Hugging Face teachers alike.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn
from transformers.models.bert.modeling_bert import BertSelfAttention

from hw.errors import BinbertError
from sw.quant.config import ACT_METHODS, WEIGHT_METHODS, ActQuantConfig, WeightQuantConfig
from sw.quant.modules import ActQuantizer, QuantEmbedding, QuantLinear, share_act_quant
from sw.quant.ste import HeavisideSTE
from sw.qmodel import bert_of, quant_config_of, set_quant_config
from hw.validate import boolean, choice, int_value
from sw.quant.functions import MAX_ACT_BITS, MIN_ACT_BITS, check_bits
from sw.split import SplitQuantEmbedding, SplitQuantLinear, split_model

ATTENTIONS = ("softmax", "bi")


@dataclass(frozen=True)
class QuantBertConfig:
    """What to quantize in a BERT and how: each field's metadata says what it does (rendered,
    with the stage types' defaults, into docs/config.md by ``binbert config-doc``)."""

    weight: str = field(default="fp", metadata={
        "doc": "every encoder linear (+ pooler, word embedding if enabled): full precision, "
               "TWN ternary or BWN binary", "choices": WEIGHT_METHODS})
    act: str = field(default="fp", metadata={
        "doc": "inputs of those linears and of both attention matmuls", "choices": ACT_METHODS})
    act_bits: int = field(default=8, metadata={
        "doc": "code bits of uniform / lsq activations (ignored by fp and sign)",
        "range": f"[{MIN_ACT_BITS}, {MAX_ACT_BITS}]"})
    attention: str = field(default="softmax", metadata={
        "doc": "softmax: BinaryBERT's quantized softmax attention; bi: BiBERT's Bi-Attention "
               "(binarized Q, K, V, probabilities = heaviside(scores), no softmax)",
        "choices": ATTENTIONS})
    embedding: bool = field(default=True, metadata={
        "doc": "quantize the word embedding (per-row scales)"})
    pooler: bool = field(default=True, metadata={"doc": "quantize the pooler dense layer"})
    centered: bool = field(default=False, metadata={
        "doc": "BiBERT's row-centred binarization (weight bwn only)"})
    weight_per_row: bool = field(default=False, metadata={
        "doc": "per-row scales for the linears too (BiBERT); the embedding is always per row"})
    act_integer: bool = field(default=False, metadata={
        "doc": "round half up in the activation quantizers, as the hardware does "
               "(integer-simulation path, docs/arithmetic.md §8)",
        "note": "A binary stage right after a split may set only this key: it fine-tunes the "
                "split model in the integer path's rounding."})
    act_threshold: bool = field(default=False, metadata={
        "doc": "act sign only: learned per-feature thresholds on the binarized inputs "
               "(ReActNet's RSign, `[x >= θ]`)",
        "note": "The thresholds sit on the binarized inputs that read the residual stream or "
                "the attention context: Q/K/V, the attention output dense, FFN1 and the pooler. "
                "Not on FFN2's: its input sign(gelu(z) - beta) is a shift of FFN1's bias, "
                "already learned. The export folds them into the requantizers' per-row bias, "
                "so the hardware cost is a constants ROM (docs/arithmetic.md §11); the stage's "
                "`threshold_lr` gives them their own learning rate."})
    attention_threshold: bool = field(default=False, metadata={
        "doc": "attention bi only: a learned threshold per head on the scaled scores, "
               "`P = [S/√d > τ_h]`, starting at 0",
        "note": "BiBERT keeps `[S > 0]`; with a learned threshold a head may keep fewer (or "
                "more) keys than the half a zero threshold keeps. The export turns τ_h into an "
                "integer per-head constant on the XNOR-popcount score that the attention core "
                "subtracts before the sign test (docs/arithmetic.md §14); `threshold_lr` sets "
                "its rate too."})
    learned_scale: bool = field(default=False, metadata={
        "doc": "weight bwn only: a learned gain on each linear's binary scales (per row with "
               "weight_per_row), starting at 1",
        "note": "XNOR-Net++'s learned scaling factors: the scale `mean|w|` otherwise moves only "
                "as fast as the latent weights do. The export folds the gain into `α` "
                "(docs/arithmetic.md §7), so the hardware is unchanged. Not on the word "
                "embedding (one gain per token would be a vocab-sized table) nor on split "
                "modules (their two terms keep BinaryBERT's a and b); the stage's `scale_lr` "
                "gives the gains their own learning rate."})
    split: tuple[str, ...] = field(default=(), metadata={
        "doc": "names of the modules stored as two binary terms: set by the split stage "
               "(sw.split.split_model), not by hand"})

    def __post_init__(self):
        choice("weight", self.weight, WEIGHT_METHODS)
        choice("act", self.act, ACT_METHODS)
        if self.act in ("uniform", "lsq"):
            check_bits("act_bits", self.act_bits)
        else:
            int_value(self.act_bits, f"act_bits={self.act_bits!r} must be an integer")
        choice("attention", self.attention, ATTENTIONS)
        for name in ("embedding", "pooler", "centered", "weight_per_row", "act_integer", "act_threshold",
                     "attention_threshold", "learned_scale"):
            boolean(name, getattr(self, name))
        if self.act_threshold and self.act != "sign":
            raise BinbertError(f"act_threshold=true needs act='sign', got act={self.act!r}")
        if self.attention_threshold and self.attention != "bi":
            raise BinbertError(f"attention_threshold=true needs attention='bi', got attention={self.attention!r}")
        if self.centered and self.weight != "bwn":
            raise BinbertError(f"centered=true needs weight='bwn', got weight={self.weight!r}")
        if isinstance(self.split, list):
            object.__setattr__(self, "split", tuple(self.split))
        if not isinstance(self.split, tuple) or not all(isinstance(s, str) for s in self.split):
            raise BinbertError(f"split={self.split!r} must be a list of module names")
        if self.split and self.weight != "bwn":
            raise BinbertError(f"split modules need weight='bwn', got weight={self.weight!r}")
        if self.learned_scale and self.weight != "bwn":
            raise BinbertError(f"learned_scale=true needs weight='bwn', got weight={self.weight!r}")
        if self.learned_scale and self.split:
            raise BinbertError("learned_scale=true does not apply to split models: their two binary "
                               "terms keep their own scales (BinaryBERT's a and b)")

    @classmethod
    def from_dict(cls, d: dict) -> "QuantBertConfig":
        """Build from a plain mapping (YAML); unknown keys and wrong types raise BinbertError."""
        if not isinstance(d, dict):
            raise BinbertError(f"quantization config must be a mapping, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        for key in d:
            if key not in known:
                raise BinbertError(f"unknown quantization key {key!r}: expected one of {', '.join(known)}")
        expected = {"weight": str, "act": str, "attention": str, "act_bits": int, "split": (list, tuple)}
        for key, value in d.items():
            want = expected.get(key, bool)
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if not ok:
                tname = want.__name__ if isinstance(want, type) else "list"
                raise BinbertError(f"{key}={value!r} must be of type {tname}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["split"] = list(self.split)
        return d

    # the per-module quantizer configs this model config implies
    def linear_weight(self) -> WeightQuantConfig:
        return WeightQuantConfig(self.weight, per_row=self.weight_per_row, centered=self.centered,
                                 learned_scale=self.learned_scale)

    def embedding_weight(self) -> WeightQuantConfig:
        if not self.embedding:
            return WeightQuantConfig("fp")
        return WeightQuantConfig(self.weight, per_row=True, centered=self.centered)

    def linear_act(self, threshold: bool = False) -> ActQuantConfig:
        """Input quantizer of a linear; ``threshold``: one of the inputs act_threshold covers."""
        return ActQuantConfig(self.act, bits=self.act_bits, integer=self.act_integer,
                              threshold=threshold and self.act_threshold)

    @property
    def is_quantized(self) -> bool:
        return self.weight != "fp" or self.act != "fp" or self.attention != "softmax"


def _mask_parts(mask: torch.Tensor | None, dtype: torch.dtype):
    """HF hands the layers either a boolean mask (True = attend; sdpa) or an additive float mask
    (0 = attend, very negative = masked; eager). Return (additive float, allowed bool)."""
    if mask is None:
        return None, None
    if mask.dtype == torch.bool:
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return additive.masked_fill(~mask, torch.finfo(dtype).min), mask
    return mask.to(dtype), mask > -1


def attention_acts(cfg: QuantBertConfig) -> tuple[ActQuantConfig, ActQuantConfig, ActQuantConfig]:
    """Activation quantizers of a self-attention: (its input, shared by Q/K/V; Q, K and V before
    the matmuls; the probabilities). Bi mode: sign and heaviside (no parameters, p stays fp)."""
    if cfg.attention == "bi":
        return cfg.linear_act(threshold=True), ActQuantConfig("sign"), ActQuantConfig("fp")
    return cfg.linear_act(threshold=True), cfg.linear_act(), cfg.linear_act()


def layer_acts(cfg: QuantBertConfig) -> dict[str, ActQuantConfig]:
    """Input quantizer of each encoder-layer linear outside the self-attention, by module path.
    Not FFN2's threshold: its input sign(gelu(z) - beta) is a shift of FFN1's bias."""
    return {"attention.output.dense": cfg.linear_act(threshold=True),
            "intermediate.dense": cfg.linear_act(threshold=True),
            "output.dense": cfg.linear_act()}


def pooler_act(cfg: QuantBertConfig) -> ActQuantConfig:
    """Input quantizer of the pooler dense (it reads the residual stream: thresholds apply)."""
    return cfg.linear_act(threshold=True)


class QuantBertSelfAttention(BertSelfAttention):
    """Drop-in replacement of BertSelfAttention (same forward signature and outputs).

    softmax mode: scores = q(Q)·q(K)ᵀ/√d (+ mask); P = softmax(scores); out = q(P)·q(V)
    bi mode:      scores = sign(Q)·sign(K)ᵀ/√d; P = heaviside(scores − τ_h) (0 where masked);
                  out = P·sign(V)   (BiBERT Bi-Attention, the bool attention; τ_h = 0 unless
                  attention_threshold: parameter ``score_threshold``, one per head)

    Subclassing BertSelfAttention keeps isinstance checks and HF's output_attentions capture
    working; the head count follows the projections' width, so pruned heads work too.
    """

    def __init__(self, source: BertSelfAttention, cfg: QuantBertConfig):
        nn.Module.__init__(self)  # not BertSelfAttention.__init__: the projections are reused
        if not isinstance(source, BertSelfAttention):
            raise BinbertError(f"expected a BertSelfAttention, got {type(source).__name__}")
        if getattr(source, "is_decoder", False) or getattr(source, "is_causal", False):
            raise BinbertError("quantize_bert supports encoder (bidirectional) BERTs only")
        self.config = source.config
        self.num_attention_heads = source.num_attention_heads
        self.attention_head_size = source.attention_head_size
        self.all_head_size = source.all_head_size
        self.scaling = source.scaling
        self.dropout = source.dropout
        self.is_decoder = False
        self.is_causal = False
        self.layer_idx = source.layer_idx
        self.mode = cfg.attention

        wcfg = cfg.linear_weight()
        acfg, inner, probs = attention_acts(cfg)
        # Q, K and V read the same input: one quantizer (owned here, borrowed by the three
        # projections), so the hardware feeds one code vector to all three
        dev = dict(device=source.query.weight.device, dtype=source.query.weight.dtype)
        self.act_quant = ActQuantizer(acfg, features=source.query.in_features).to(**dev)
        self.query = QuantLinear.from_linear(source.query, wcfg, acfg, act_quant=self.act_quant)
        self.key = QuantLinear.from_linear(source.key, wcfg, acfg, act_quant=self.act_quant)
        self.value = QuantLinear.from_linear(source.value, wcfg, acfg, act_quant=self.act_quant)
        self.q_quant = ActQuantizer(inner).to(**dev)
        self.k_quant = ActQuantizer(inner).to(**dev)
        self.v_quant = ActQuantizer(inner).to(**dev)
        self.p_quant = ActQuantizer(probs).to(**dev)
        self.set_threshold(cfg.attention_threshold)
        self._record: dict | None = None
        self.train(source.training)  # a fresh Module is in training mode; keep the source's

    def set_threshold(self, learned: bool) -> None:
        """Give the heads learned Bi-Attention thresholds (from 0) or take them away."""
        if not learned:
            self.score_threshold = None
            return
        like = self.query.weight
        self.score_threshold = nn.Parameter(torch.zeros(self.query.out_features // self.attention_head_size,
                                                        device=like.device, dtype=like.dtype))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values=None, **kwargs):
        if past_key_values is not None:
            raise BinbertError("QuantBertSelfAttention has no key/value cache (encoder only)")
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        q = self.query(hidden_states).view(*hidden_shape).transpose(1, 2)
        k = self.key(hidden_states).view(*hidden_shape).transpose(1, 2)
        v = self.value(hidden_states).view(*hidden_shape).transpose(1, 2)

        scores = torch.matmul(self.q_quant(q), self.k_quant(k).transpose(2, 3)) * self.scaling
        additive, allowed = _mask_parts(attention_mask, scores.dtype)
        if self.mode == "bi":
            shifted = scores if self.score_threshold is None else scores - self.score_threshold[:, None, None]
            probs = HeavisideSTE.apply(shifted)
            if allowed is not None:
                probs = probs * allowed.to(probs.dtype)
        else:
            masked = scores + additive if additive is not None else scores
            probs = self.p_quant(nn.functional.softmax(masked, dim=-1))
            probs = nn.functional.dropout(probs, p=self.dropout.p, training=self.training)
        context = torch.matmul(probs, self.v_quant(v)).transpose(1, 2).reshape(*input_shape, -1).contiguous()

        if self._record is not None:
            self._record.update(q=q, k=k, v=v, scores=scores, probs=probs, context=context,
                                mask=allowed)
        return context, probs

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, heads={self.num_attention_heads}, head_size={self.attention_head_size}"


def quantize_bert(model: nn.Module, cfg: QuantBertConfig) -> nn.Module:
    """Quantize a HF BertModel / BertFor* in place (and return it). Parameters are shared, not
    copied; activation quantizers initialise their clip / step on the first batch."""
    if not isinstance(cfg, QuantBertConfig):
        raise BinbertError(f"quantize_bert needs a QuantBertConfig, got {type(cfg).__name__}")
    bert = bert_of(model)
    if quant_config_of(bert) is not None:
        raise BinbertError("model is already quantized: start from a full-precision BERT")
    if bert.config.is_decoder or bert.config.add_cross_attention:
        raise BinbertError("quantize_bert supports encoder (bidirectional) BERTs only")

    wcfg = cfg.linear_weight()
    base_cfg = replace(cfg, split=())
    for layer in bert.encoder.layer:
        layer.attention.self = QuantBertSelfAttention(layer.attention.self, base_cfg)
        for path, acfg in layer_acts(cfg).items():
            owner, name = path.rsplit(".", 1)
            holder = layer.get_submodule(owner)
            setattr(holder, name, QuantLinear.from_linear(getattr(holder, name), wcfg, acfg))
    if cfg.pooler and bert.pooler is not None:
        bert.pooler.dense = QuantLinear.from_linear(bert.pooler.dense, wcfg, pooler_act(cfg))
    if cfg.embedding:
        emb = bert.embeddings
        emb.word_embeddings = QuantEmbedding.from_embedding(emb.word_embeddings, cfg.embedding_weight())
    model.train(model.training)  # new modules start in training mode: align them with the model
    set_quant_config(model, base_cfg)
    if cfg.split:
        # rebuilding a split checkpoint: same structure, weights come from load_state_dict
        if cfg.weight != "bwn":
            raise BinbertError("split needs weight='bwn'")
        split_model(model, names=list(cfg.split), _from_binary=True)
    return model


def quant_modules(model: nn.Module):
    """(name, module) of every quantized weight layer: QuantLinear, QuantEmbedding and splits."""
    kinds = (QuantLinear, QuantEmbedding, SplitQuantLinear, SplitQuantEmbedding)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def set_act_integer(model: nn.Module, integer: bool = True) -> nn.Module:
    """Switch every activation quantizer to round half up (the integer path, §8) or back."""
    boolean("integer", integer)
    for m in model.modules():
        if isinstance(m, ActQuantizer):
            m.integer = integer
    cfg = quant_config_of(model)
    if cfg is not None:
        set_quant_config(model, replace(cfg, act_integer=integer))
    return model


# what requantize_activations may change: everything that is not a weight layer
ACT_KEYS = ("act", "act_bits", "attention", "act_integer", "act_threshold", "attention_threshold")


def requantize_activations(model: nn.Module, changes: dict) -> nn.Module:
    """Give a quantized model fresh activation quantizers (and attention mode) from ``changes``
    (keys of :data:`ACT_KEYS`), keeping its weight layers as they are: multi-step binarisation of
    a model whose weights the teacher cannot seed (a split or pruned one, e.g. TWS W1A8 -> W1A1).
    The new quantizers sit exactly where :func:`quantize_bert` puts them, so a checkpoint of the
    result rebuilds from its config; learned clips / steps initialise on the first batch."""
    cfg = quant_config_of(model)
    if cfg is None:
        raise BinbertError("requantize_activations needs a quantized model (see quantize_bert)")
    for key in changes:
        if key not in ACT_KEYS:
            raise BinbertError(f"requantize_activations: {key!r} is not an activation setting "
                               f"(one of {', '.join(ACT_KEYS)}); the weight layers stay as trained")
    new = QuantBertConfig.from_dict({**cfg.to_dict(), **changes})
    bert = bert_of(model)
    like = next(bert.encoder.parameters())

    def fresh(acfg: ActQuantConfig, features: int | None = None) -> ActQuantizer:
        return ActQuantizer(acfg, features=features).to(device=like.device, dtype=like.dtype)

    # each replaces the module of the same name (same place in state_dict, so in the optimizer)
    for layer in bert.encoder.layer:
        att = layer.attention.self
        if not isinstance(att, QuantBertSelfAttention):
            raise BinbertError(f"{type(att).__name__}: not a quantized self-attention")
        acfg, inner, probs = attention_acts(new)
        att.act_quant = fresh(acfg, att.query.in_features)
        for proj in (att.query, att.key, att.value):
            share_act_quant(proj, att.act_quant)
        att.mode = new.attention
        att.set_threshold(new.attention_threshold)
        att.q_quant, att.k_quant, att.v_quant = fresh(inner), fresh(inner), fresh(inner)
        att.p_quant = fresh(probs)
        for path, acfg in layer_acts(new).items():
            lin = layer.get_submodule(path)
            lin.act_quant = fresh(acfg, lin.in_features)
    if new.pooler and bert.pooler is not None:
        bert.pooler.dense.act_quant = fresh(pooler_act(new), bert.pooler.dense.in_features)
    model.train(model.training)
    set_quant_config(model, new)
    return model


# --------------------------------------------------------------------------------------------
# recording for distillation
# --------------------------------------------------------------------------------------------

@dataclass
class Recording:
    """What one forward produced, per encoder layer l:

    layers[l]["q"|"k"|"v"]   projections (batch, heads, seq, head_size), before quantization
    layers[l]["scores"]      attention scores Q·Kᵀ/√d of the (quantized) Q, K, before the mask
    layers[l]["probs"]       attention probabilities used (softmax or heaviside)
    layers[l]["mask"]        bool, True where attention is allowed (None: no mask), broadcastable
    layers[l]["context"]     attention context before the output projection (batch, seq, hidden)
    layers[l]["attn_out"]    MHA block output (after output dense + residual + LayerNorm)
    layers[l]["ffn_out"]     FFN block output = the layer's output hidden state
    embeddings               embedding output (after LayerNorm)
    """

    embeddings: torch.Tensor | None = None
    layers: list[dict] = field(default_factory=list)

    @property
    def hidden_states(self) -> list[torch.Tensor]:
        """[embeddings, layer 1 output, ..., layer L output] as in output_hidden_states."""
        return [self.embeddings] + [layer["ffn_out"] for layer in self.layers]


def _heads(x: torch.Tensor, head_size: int) -> torch.Tensor:
    return x.view(*x.shape[:-1], -1, head_size).transpose(1, 2)


@contextlib.contextmanager
def record(model: nn.Module):
    """``with record(model) as rec: model(**batch)`` fills ``rec`` (a :class:`Recording`).

    Works for quantized models (the attention reports its own quantized scores) and for plain
    HF BERTs (scores recomputed from the recorded projections, probs with softmax + mask).
    Tensors keep their autograd graph. Only the last forward inside the block is kept.
    """
    bert = bert_of(model)
    layers = list(bert.encoder.layer)
    rec = Recording(layers=[{} for _ in layers])
    handles = []

    def put(store: dict, key: str):
        def hook(module, args, output):
            store[key] = output[0] if isinstance(output, tuple) else output
        return hook

    def on_embeddings(module, args, output):
        rec.embeddings = output
    handles.append(bert.embeddings.register_forward_hook(on_embeddings))

    quant_attn = []
    for i, layer in enumerate(layers):
        store = rec.layers[i]
        attn = layer.attention.self
        if isinstance(attn, QuantBertSelfAttention):
            attn._record = store
            quant_attn.append(attn)
        else:
            def proj(store_key, s=store, hs=attn.attention_head_size):
                def hook(module, args, output):
                    s[store_key] = _heads(output, hs)
                return hook
            for key, lin in (("q", attn.query), ("k", attn.key), ("v", attn.value)):
                handles.append(lin.register_forward_hook(proj(key)))

            def plain(module, args, kwargs, output, s=store):
                mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
                scores = torch.matmul(s["q"], s["k"].transpose(2, 3)) * module.scaling
                additive, allowed = _mask_parts(mask, scores.dtype)
                probs = torch.softmax(scores + additive if additive is not None else scores, dim=-1)
                s.update(scores=scores, probs=probs, mask=allowed, context=output[0])
            handles.append(attn.register_forward_hook(plain, with_kwargs=True))
        handles.append(layer.attention.register_forward_hook(put(store, "attn_out")))
        handles.append(layer.register_forward_hook(put(store, "ffn_out")))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()
        for attn in quant_attn:
            attn._record = None
