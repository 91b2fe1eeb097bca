"""The BertModel a model wraps, and the QuantBertConfig recorded on it.

:func:`sw.qbert.quantize_bert` records the config; :func:`sw.split.split_model` and the
activation switches of :mod:`sw.qbert` rewrite it. Both modules read it from here, so neither
needs the other for it.
"""
from __future__ import annotations

from torch import nn
from transformers.models.bert.modeling_bert import BertModel

from hw.errors import BinbertError


def bert_of(model: nn.Module) -> BertModel:
    """The BertModel inside ``model`` (itself, or ``.bert`` of a task model)."""
    base = getattr(model, "base_model", model)
    if not isinstance(base, BertModel):
        raise BinbertError(f"expected a Hugging Face BERT model, got {type(model).__name__}")
    return base


def quant_config_of(model: nn.Module):
    """The QuantBertConfig ``quantize_bert`` applied to ``model`` (None if not quantized)."""
    return getattr(model, "binbert_quant", None)


def set_quant_config(model: nn.Module, cfg) -> None:
    """Record ``cfg`` (a QuantBertConfig) on the model and in its HF config (so save_pretrained
    keeps it)."""
    model.binbert_quant = cfg
    bert_of(model).binbert_quant = cfg
    model.config.binbert_quant = cfg.to_dict()
