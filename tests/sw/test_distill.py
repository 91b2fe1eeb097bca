"""sw.distill on real recordings of tiny BERTs (sw.qbert.record)."""
import copy

import pytest
import torch

from hw.errors import BinbertError
from sw.config import DistillConfig, ModelConfig, TinyModel
from sw import backbone as bb
from sw.distill import (direction_pattern, distill_loss, dmd_term, masked_mse, scores_mse,
                        soft_cross_entropy)
from sw.prune import keep_units
from sw.qbert import QuantBertConfig, quantize_bert, record
from tests.sw.common import padded_batch

W = DistillConfig()
TINY = ModelConfig(backbone="tiny", tiny=TinyModel(hidden_size=32, num_layers=2, num_heads=4,
                                                   intermediate_size=64,
                                                   max_position_embeddings=32))


def _batch(seed=0, b=3, t=10):
    return padded_batch(seed, (b, t), (1000, 3000), {1: 6, 2: 3}, zero_pads=False, token_types=True)


def _trace(model, batch):
    with record(model) as rec:
        logits = model(**batch).logits
    return {"embeddings": rec.embeddings, "layers": rec.layers, "logits": logits}


@pytest.fixture(scope="module")
def teacher():
    m = bb.build_model(TINY, "sst2", seed=1)
    return m.eval()


@pytest.mark.parametrize("mode", ["intermediate", "prediction", "joint", "dmd"])
def test_zero_for_identical_student(teacher, mode):
    b = _batch()
    t = _trace(teacher, b)
    s = _trace(copy.deepcopy(teacher), b)
    total, terms = distill_loss(mode, s, t, b["attention_mask"], W)
    # every term vanishes except soft CE, which equals the teacher's entropy at its minimum
    for k, v in terms.items():
        if k != "pred":
            assert v == pytest.approx(0.0, abs=1e-10), k
    if "pred" in terms:
        p = torch.softmax(t["logits"].detach(), -1)
        entropy = float(-(p * p.log()).sum(-1).mean().detach())
        assert terms["pred"] == pytest.approx(entropy, rel=1e-5)


@pytest.mark.parametrize("mode", ["intermediate", "joint", "dmd"])
def test_positive_for_quantized_student(teacher, mode):
    b = _batch()
    t = _trace(teacher, b)
    student = quantize_bert(copy.deepcopy(teacher), QuantBertConfig(weight="twn", act="uniform"))
    s = _trace(student, b)
    total, terms = distill_loss(mode, s, t, b["attention_mask"], W)
    assert all(v > 0 for k, v in terms.items() if k != "pred")
    total.backward()  # the loss reaches the student's latent weights
    g = student.bert.encoder.layer[0].attention.self.query.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_soft_ce_minimised_at_teacher():
    torch.manual_seed(0)
    t = torch.randn(5, 2)
    s = torch.randn(5, 2)
    for temp in (0.5, 1.0, 3.0):
        assert soft_cross_entropy(s, t, temp) > soft_cross_entropy(t, t, temp)
    # hard one-hot teacher -> ordinary cross-entropy
    hard = torch.tensor([[50.0, -50.0], [-50.0, 50.0]])
    s2 = torch.randn(2, 2)
    ce = torch.nn.functional.cross_entropy(s2, torch.tensor([0, 1]))
    assert soft_cross_entropy(s2, hard) == pytest.approx(float(ce), rel=1e-5)
    # one output: regression -> MSE
    assert soft_cross_entropy(torch.ones(3, 1), torch.zeros(3, 1)) == pytest.approx(1.0)


def test_dmd_invariant_to_scale_and_sensitive_to_direction():
    torch.manual_seed(0)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    s, t = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    base = dmd_term(s, t, mask, 4, 4)
    for c in (1e-3, 0.5, 7.0, -2.0):
        assert dmd_term(c * s, t, mask, 4, 4) == pytest.approx(float(base), rel=1e-5)
    assert dmd_term(s, s * 3, mask, 4, 4) == pytest.approx(0.0, abs=1e-6)
    assert base > 0
    p = direction_pattern(s.view(2, 7, 4, 4).transpose(1, 2), mask)
    assert torch.allclose(p.flatten(-2).norm(dim=-1), torch.ones(2, 4))
    assert (p[1, :, 4:, :] == 0).all() and (p[1, :, :, 4:] == 0).all()


def test_padding_never_contributes(teacher):
    b = _batch()
    t = _trace(teacher, b)
    s = _trace(quantize_bert(copy.deepcopy(teacher), QuantBertConfig(weight="bwn")), b)
    mask = b["attention_mask"]
    ref_total, ref = distill_loss("joint", s, t, mask, W)
    _, ref_dmd = distill_loss("dmd", s, t, mask, W)
    pad = ~mask.bool()

    def poison(tr):
        out = {"embeddings": tr["embeddings"].masked_fill(pad[..., None], 1e3),
               "logits": tr["logits"], "layers": []}
        for l in tr["layers"]:
            l2 = dict(l)
            for k in ("attn_out", "ffn_out"):
                l2[k] = l[k].masked_fill(pad[..., None], -1e3)
            for k in ("q", "k", "v"):
                l2[k] = l[k].masked_fill(pad[:, None, :, None], 5e2)
            l2["scores"] = l["scores"].masked_fill(pad[:, None, None, :], 9e2)
            out["layers"].append(l2)
        return out

    _, poisoned = distill_loss("joint", poison(s), t, mask, W)
    _, poisoned_dmd = distill_loss("dmd", poison(s), t, mask, W)
    for k in ref:
        assert poisoned[k] == pytest.approx(ref[k], rel=1e-5), k
    for k in ref_dmd:
        assert poisoned_dmd[k] == pytest.approx(ref_dmd[k], rel=1e-5), k


def test_half_width_student_against_full_teacher(teacher):
    """Pruned heads/neurons: hidden-size terms compare directly, heads are averaged/concatenated."""
    b = _batch()
    t = _trace(teacher, b)
    student = copy.deepcopy(teacher)
    keep_units(student, [torch.tensor([0, 2])] * 2, [torch.arange(32)] * 2)
    s_fp = _trace(student, b)
    assert s_fp["layers"][0]["scores"].shape[1] == 2 != t["layers"][0]["scores"].shape[1]
    for mode in ("joint", "dmd"):
        total, terms = distill_loss(mode, s_fp, t, b["attention_mask"], W)
        assert torch.isfinite(total)
        # embeddings are not pruned (identical), every layer term sees the pruning
        assert all(v > 0 for k, v in terms.items() if k not in ("pred", "emb"))
        assert terms.get("emb", 0.0) == 0.0
    # head-averaged score MSE equals the MSE of explicitly averaged scores
    a, c = s_fp["layers"][0]["scores"], t["layers"][0]["scores"]
    m = b["attention_mask"].bool()
    pair = m[:, :, None] & m[:, None, :]
    ref = ((a.mean(1) - c.mean(1))[pair] ** 2).mean()
    got = scores_mse(a, c, b["attention_mask"]).detach()
    assert float(got) == pytest.approx(float(ref.detach()), rel=1e-6)


def test_mismatches_are_errors(teacher):
    b = _batch()
    t = _trace(teacher, b)
    short = dict(t, layers=t["layers"][:1])
    with pytest.raises(BinbertError, match="student has 1 layers, teacher 2"):
        distill_loss("intermediate", short, t, b["attention_mask"], W)
    with pytest.raises(BinbertError, match="unknown mode 'kd'"):
        distill_loss("kd", t, t, b["attention_mask"], W)
    with pytest.raises(BinbertError, match="shapes differ"):
        masked_mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.ones(1, 2))
    with pytest.raises(BinbertError, match="logits"):
        soft_cross_entropy(torch.zeros(2, 2), torch.zeros(2, 1))


def test_head_map_matches_pruned_heads_one_to_one(teacher):
    """A freshly pruned student's heads equal their teacher heads: with the map, layer 0 (same
    input) has zero score and DMD error; head-averaging cannot see that."""
    from sw.train import teacher_heads

    b = _batch()
    t = _trace(teacher, b)
    student = copy.deepcopy(teacher)
    keep_units(student, [torch.tensor([1, 3]), torch.tensor([0, 2])], [torch.arange(32)] * 2)
    hmap = teacher_heads(student, teacher)
    assert hmap == [[1, 3], [0, 2]]
    s = _trace(student, b)
    mask = b["attention_mask"]
    a, c = s["layers"][0], t["layers"][0]
    got = scores_mse(a["scores"], c["scores"], mask, hmap[0]).detach()
    assert float(got) == pytest.approx(0, abs=1e-12)
    assert float(scores_mse(a["scores"], c["scores"], mask).detach()) > 0
    for name in ("q", "k", "v"):
        got = dmd_term(a[name], c[name], mask, 2, 4, hmap[0]).detach()
        assert float(got) == pytest.approx(0, abs=1e-6)
    _, with_map = distill_loss("joint", s, t, mask, W, head_map=hmap)
    _, without = distill_loss("joint", s, t, mask, W)
    assert with_map["scores"] < without["scores"]
    with pytest.raises(BinbertError, match=r"head_map\[0\] names 3 heads"):
        distill_loss("joint", s, t, mask, W, head_map=[[0, 1, 2], [0, 1]])
