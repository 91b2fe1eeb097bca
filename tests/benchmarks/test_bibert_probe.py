"""benchmarks/bibert_probe.py on a tiny random BERT: the probe, the dropout cosine and the
residual branch ratios measure what they claim."""
from pathlib import Path

import pytest
import torch

from benchmarks import bibert_probe as bp
from sw import backbone as bb
from sw.config import ModelConfig, TinyModel
from sw.data import Encoded, epoch_batches, load_split, loader
from sw.qbert import quant_config_of
from sw.train import set_dropout

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(backbone="tiny", tiny=TinyModel(hidden_size=32, num_layers=2, num_heads=4,
                                                      intermediate_size=64,
                                                      max_position_embeddings=64))
    model = bb.build_model(cfg, "sst2", seed=1)
    ds = Encoded(load_split(ROOT / "data/glue", "sst2", "train", 40, 0), bb.load_tokenizer("tiny"),
                 24, False)
    return model, ds


def test_probe_separates_a_linear_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    y = (x[:, 0] - 0.5 * x[:, 3] > 0).long()
    assert bp.probe_accuracy(x[:300], y[:300], x[300:], y[300:]) >= 0.95
    noise = torch.randint(0, 2, (400,), generator=g)
    assert bp.probe_accuracy(x[:300], noise[:300], x[300:], noise[300:]) < 0.7


def test_layer_features_are_mean_pooled_hidden_states(tiny):
    model, ds = tiny
    feats = bp.layer_features(model, ds, batch_size=16)
    assert len(feats) == model.config.num_hidden_layers + 1
    b = next(loader(ds, epoch_batches(len(ds), 3, 0, 0, shuffle=False)))
    model.eval()
    with torch.no_grad():
        out = model(**{k: v for k, v in b.items() if k != "labels"}, output_hidden_states=True)
    n = int(b["attention_mask"][0].sum())
    for f, h in zip(feats, out.hidden_states):
        assert torch.allclose(f[0], h[0, :n].mean(0), atol=1e-5)


def test_dropout_cosine_is_one_without_dropout(tiny):
    model, ds = tiny
    b = next(loader(ds, epoch_batches(len(ds), 16, 0, 0)))
    noisy = bp.dropout_cosine(model, b)
    assert min(noisy[1:]) < 0.999
    quiet = set_dropout(bp.copy.deepcopy(model), 0.0)
    assert all(c == pytest.approx(1.0, abs=1e-5) for c in bp.dropout_cosine(quiet, b))


def test_branch_ratio_scales_with_the_branch(tiny):
    model, ds = tiny
    b = next(loader(ds, epoch_batches(len(ds), 16, 0, 0)))
    base = bp.branch_ratios(model, b)
    m2 = bp.copy.deepcopy(model)
    dense = m2.bert.encoder.layer[0].attention.output.dense
    with torch.no_grad():
        dense.weight.mul_(2)
        dense.bias.mul_(2)
    doubled = bp.branch_ratios(m2, b)
    assert doubled[0][0] == pytest.approx(2 * base[0][0], rel=1e-5)
    assert doubled[0][1] != pytest.approx(base[0][1], rel=1e-6)  # the FFN sees another input


def test_bibert_student_uses_the_recipe_quantization(tiny):
    model, _ = tiny
    q = quant_config_of(bp.bibert_student(model))
    assert (q.weight, q.act, q.attention, q.centered, q.weight_per_row) == \
        ("bwn", "sign", "bi", True, True)
    assert quant_config_of(model) is None  # the teacher is left alone
