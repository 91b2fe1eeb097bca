"""sw.backbone: the offline MiniLM, truncation, tiny random configs, the real tokenizer."""
import json

import pytest
import torch
from safetensors.torch import load_file

from hw.errors import BinbertError
from sw import backbone as bb
from sw.config import ModelConfig, TinyModel


def test_minilm_is_offline_and_complete():
    p = bb.minilm_path()
    for f in ("config.json", "model.safetensors", "vocab.txt"):
        assert (p / f).is_file()


def test_truncated_minilm_keeps_pretrained_layers():
    m = bb.build_model(ModelConfig(num_layers=1, dropout=0.0), "sst2")
    assert m.config.num_hidden_layers == 1 and len(m.bert.encoder.layer) == 1
    assert m.config.hidden_dropout_prob == 0.0 and m.config._attn_implementation == "eager"
    ref = load_file(str(bb.minilm_path() / "model.safetensors"))
    key = next(k for k in ref if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(m.bert.encoder.layer[0].attention.self.query.weight, ref[key])
    key = next(k for k in ref if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(m.bert.embeddings.word_embeddings.weight, ref[key])
    assert m.classifier.out_features == 2


def test_tiny_model_uses_minilm_vocab_and_seed():
    cfg = ModelConfig(backbone="tiny", tiny=TinyModel(hidden_size=16, num_layers=1, num_heads=2,
                                                      intermediate_size=32))
    a = bb.build_model(cfg, "stsb", seed=3)
    b = bb.build_model(cfg, "stsb", seed=3)
    c = bb.build_model(cfg, "stsb", seed=4)
    vocab = sum(1 for _ in open(bb.minilm_path() / "vocab.txt", encoding="utf-8"))
    assert a.config.vocab_size == vocab and a.config.hidden_size == 16
    assert a.config.num_labels == 1 and a.config.problem_type == "regression"
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_tokenizer_is_the_real_wordpiece():
    tok = bb.load_tokenizer("tiny")
    vocab = [l.rstrip("\n") for l in open(bb.minilm_path() / "vocab.txt", encoding="utf-8")]
    ids = tok("The film was unwatchable")["input_ids"]
    pieces = [vocab[i] for i in ids]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert pieces[1:3] == ["the", "film"]  # lower-cased whole words
    assert "".join(p.removeprefix("##") for p in pieces[4:-1]) == "unwatchable"


def test_local_directory_backbone(tmp_path):
    # a user's own HF BERT directory: here a copy of MiniLM's config + vocab + weights
    for f in ("config.json", "vocab.txt", "model.safetensors", "tokenizer_config.json",
              "special_tokens_map.json"):
        (tmp_path / f).write_bytes((bb.minilm_path() / f).read_bytes())
    m = bb.build_model(ModelConfig(backbone=str(tmp_path), num_layers=1), "cola")
    assert m.config.num_hidden_layers == 1
    tok = bb.load_tokenizer(str(tmp_path))
    assert tok("hi")["input_ids"] == bb.load_tokenizer("minilm")("hi")["input_ids"]


def test_bad_backbones(tmp_path):
    with pytest.raises(BinbertError, match="is not 'minilm', 'tiny' or a directory"):
        bb.build_model(ModelConfig(backbone=str(tmp_path / "none")), "sst2")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BinbertError, match="has no vocab.txt"):
        bb.load_tokenizer(str(tmp_path))
    with pytest.raises(BinbertError, match="num_layers=9 exceeds the backbone's 6 layers"):
        bb.build_model(ModelConfig(num_layers=9), "sst2")


def test_max_seq_len_beyond_the_position_table_is_refused_when_built():
    tiny = ModelConfig(backbone="tiny", tiny=TinyModel(hidden_size=16, num_layers=1, num_heads=2,
                                                       intermediate_size=32,
                                                       max_position_embeddings=64))
    assert bb.build_model(tiny, "sst2", max_seq_len=64).config.max_position_embeddings == 64
    with pytest.raises(BinbertError, match=r"data.max_seq_len=100 is longer than the model's "
                                           r"position table of 64 tokens \(model.tiny.max_position"
                                           r"_embeddings\)"):
        bb.build_model(tiny, "sst2", max_seq_len=100)
    table = json.loads((bb.minilm_path() / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(BinbertError, match=rf"max_seq_len={table + 1} .* of {table} tokens "
                                           rf"\(max_position_embeddings in .*config.json\)"):
        bb.build_model(ModelConfig(num_layers=1), "sst2", max_seq_len=table + 1)
