"""Tiny quantized BERT classifiers for the checkpoint-to-silicon tests (export, golden, intsim)."""
from __future__ import annotations

import os

import torch
from transformers import BertConfig, BertForSequenceClassification

from sw.qbert import QuantBertConfig, quantize_bert, requantize_activations
from sw.split import split_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 200

# name -> (QuantBertConfig kwargs, split after calibration, BertConfig overrides)
VARIANTS = {
    "split": (dict(weight="twn", act="lsq", act_bits=4), True, {}),
    "binary": (dict(weight="bwn", act="lsq", act_bits=4), False, {}),
    "ternary": (dict(weight="twn", act="lsq", act_bits=2), False, {}),
    "bi": (dict(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True), False, {}),
    # learned per-feature activation thresholds (RSign), set to random values after quantizing
    "bi_rsign": (dict(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True,
                      act_threshold=True), False, {}),
    # learned gains on the binary weight scales, set to random values after quantizing
    "bi_gain": (dict(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True,
                     act_threshold=True, learned_scale=True), False, {}),
    # learned per-head Bi-Attention thresholds, set to random values after quantizing
    "bi_athr": (dict(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True,
                     attention_threshold=True), False, {}),
    "uniform8_relu": (dict(weight="bwn", act="uniform", act_bits=8), False, {"hidden_act": "relu"}),
    "fp_pooler_emb": (dict(weight="bwn", act="lsq", act_bits=8, pooler=False, embedding=False), False,
                      {"hidden_act": "gelu_new"}),
    # half the heads and FFN neurons kept per layer (sw.prune), as a half-width ternary stage has
    "pruned": (dict(weight="twn", act="lsq", act_bits=4), True, {"prune": True}),
    # TWS W1A1: the pruned split model's binary terms, activations swapped for sign with learned
    # thresholds and Bi-Attention (sw.qbert.requantize_activations, models/minilm-sst2-tws-a1)
    "split_bi": (dict(weight="twn", act="uniform", act_bits=8), True,
                 {"prune": True, "requant": dict(act="sign", attention="bi", act_threshold=True)}),
}


def batch(seed: int = 0, b: int = 6, t: int = 12, vocab: int = VOCAB) -> dict[str, torch.Tensor]:
    """Random ids with right padding of varying length and a second segment."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    types = torch.zeros(b, t, dtype=torch.long)
    for r in range(b):
        n = t - (r * 3) % max(t - 2, 1)
        mask[r, n:] = 0
        types[r, n // 2: n] = 1
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def tiny_quant(variant: str = "split", seed: int = 0, vocab: int = VOCAB, hidden: int = 32, layers: int = 2,
               heads: int = 4, inter: int = 64, max_pos: int = 48, scale_up: bool = True):
    """A random tiny BertForSequenceClassification, quantized as ``variant`` and calibrated.

    ``scale_up`` widens the random classifier / pooler so that logits are not all near ties.
    """
    qkw, split, bkw = VARIANTS[variant]
    bkw = dict(bkw)
    prune, requant = bkw.pop("prune", False), bkw.pop("requant", None)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, max_position_embeddings=max_pos, num_labels=2, **bkw)
    cfg._attn_implementation = "eager"
    model = BertForSequenceClassification(cfg).eval()
    if scale_up:
        with torch.no_grad():
            model.classifier.weight.mul_(20)
            model.bert.pooler.dense.weight.mul_(5)
            for mod in model.modules():  # zero biases make exact ties that float32 noise breaks
                if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                    mod.bias.uniform_(-0.05, 0.05)
            for layer in model.bert.encoder.layer:  # non-trivial LayerNorm affine parameters
                for ln in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
                    ln.weight.uniform_(0.5, 1.5)
                    ln.bias.uniform_(-0.2, 0.2)
    if prune:
        from sw.prune import keep_units

        keep_units(model, [torch.arange(0, heads, 2)] * layers, [torch.arange(1, inter, 2)] * layers)
    quantize_bert(model, QuantBertConfig(**qkw))
    with torch.no_grad():  # first batch initialises the LSQ steps / uniform clips
        model(**batch(seed + 100, b=16, t=min(24, max_pos), vocab=vocab))
    if split:
        split_model(model)
    if requant:
        requantize_activations(model, requant)
    with torch.no_grad():  # thresholds on the scale of each input: LayerNorm outputs ~1, counts ~t
        for name, p in model.named_parameters():
            if name.endswith("act_quant.beta"):
                spread = 2.0 if "attention.output" in name else 0.5
                p.copy_(torch.randn(p.shape) * spread)
            if name.endswith("score_threshold"):  # on S/sqrt(d): within about ±1 of 0
                p.uniform_(-1.0, 1.0)
            if name.endswith("weight_quant.gain"):
                p.uniform_(0.5, 1.5)
    return model


def exported_tiny(tmp_path_factory, variant: str, **shape):
    """``tiny_quant(variant, **shape)`` exported into a fresh temp directory, tagged with the MiniLM
    backbone so that real sentences tokenize (pass the MiniLM ``vocab=30522`` for real ids)."""
    from sw.export import export_model

    out = tmp_path_factory.mktemp(f"export-{variant}")
    export_model(tiny_quant(variant, **shape), out, meta={"backbone": "minilm"})
    return out
