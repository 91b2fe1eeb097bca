"""sw.qbert: quantize_bert on tiny random BERTs and the real MiniLM, Bi-Attention, masks,
recording for distillation, config validation."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel

from hw.errors import BinbertError
from sw import quant as Q
from sw.qbert import (QuantBertConfig, QuantBertSelfAttention, quant_modules, quantize_bert, record,
                      requantize_activations)
from sw.qmodel import quant_config_of
from tests.sw.common import minilm_and_sentences, padded_batch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
KEYS = ("q", "k", "v", "scores", "probs", "context", "attn_out", "ffn_out")


def tiny(impl="eager", seed=0, cls=BertForSequenceClassification, **kw):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=64, num_labels=2, **kw)
    cfg._attn_implementation = impl
    return cls(cfg).eval()


def batch(seed=0, b=3, t=9):
    return padded_batch(seed, (b, t), (1, 120), {1: 6, 2: 4})


# ---------------------------------------------------------------- full precision == HF

@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertModel])
def test_fp_config_reproduces_hf(impl, cls):
    m = tiny(impl, cls=cls)
    b = batch()
    with torch.no_grad():
        ref = m(**b, output_hidden_states=True)
        quantize_bert(m, QuantBertConfig())
        out = m(**b, output_hidden_states=True)
    key = "logits" if cls is BertForSequenceClassification else "pooler_output"
    torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-5)
    for h_out, h_ref in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(h_out, h_ref, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def minilm():
    model, enc = minilm_and_sentences(slice(None, 6))
    assert (enc["attention_mask"] == 0).any()  # padding exercised
    return model, enc


def test_fp_config_reproduces_minilm_on_sst2(minilm):
    model, b = minilm
    m = copy.deepcopy(model)
    with torch.no_grad():
        ref = model(**b)
        quantize_bert(m, QuantBertConfig())
        out = m(**b)
    assert sum(isinstance(x, QuantBertSelfAttention) for x in m.modules()) == 6
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, rtol=0, atol=1e-5)


def test_quantized_minilm_on_sst2(minilm):
    """Post-training A8 on the real checkpoint keeps the sentence embeddings close; adding
    untrained TWN weights moves them far (what QAT + distillation then recovers)."""
    model, b = minilm

    def pooled(m):
        mask = b["attention_mask"][..., None].float()
        with torch.no_grad():
            return (m(**b).last_hidden_state * mask).sum(1) / mask.sum(1)

    ref = pooled(model)
    a8 = pooled(quantize_bert(copy.deepcopy(model), QuantBertConfig(act="uniform", act_bits=8)))
    w2a8 = pooled(quantize_bert(copy.deepcopy(model), QuantBertConfig(weight="twn", act="uniform")))
    assert torch.isfinite(w2a8).all()
    cos_a8 = F.cosine_similarity(a8, ref, dim=-1)
    cos_w2 = F.cosine_similarity(w2a8, ref, dim=-1)
    assert cos_a8.min() > 0.9, cos_a8
    assert cos_w2.max() < cos_a8.min(), (cos_w2, cos_a8)


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("embedding,pooler", [(True, True), (False, False)])
def test_structure_and_full_precision_parts(embedding, pooler):
    m = tiny()
    params = {id(p) for p in m.parameters()}
    quantize_bert(m, QuantBertConfig(weight="twn", act="uniform", embedding=embedding, pooler=pooler))
    assert {id(p) for p in m.parameters()} >= params  # shared, not copied
    names = {n for n, _ in quant_modules(m)}
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        assert {p + s for s in ("attention.self.query", "attention.self.key", "attention.self.value",
                                "attention.output.dense", "intermediate.dense", "output.dense")} <= names
    assert ("bert.pooler.dense" in names) == pooler
    assert ("bert.embeddings.word_embeddings" in names) == embedding
    e = m.bert.embeddings
    assert type(e.position_embeddings) is nn.Embedding and type(e.token_type_embeddings) is nn.Embedding
    assert type(m.classifier) is nn.Linear
    assert all(type(x) is nn.LayerNorm for n, x in m.named_modules() if n.endswith("LayerNorm"))
    if embedding:
        assert e.word_embeddings.weight_quant.cfg.per_row
    s = m.bert.encoder.layer[0].attention.self
    assert s.query.act_quant is s.key.act_quant is s.value.act_quant is s.act_quant
    assert Q.act_quant_is_shared(s.query) and not Q.act_quant_is_shared(m.bert.pooler.dense if pooler
                                                                        else s.query.act_quant)
    assert quant_config_of(m).weight == "twn" and m.config.binbert_quant["act"] == "uniform"


def test_act_threshold_sits_on_the_inputs_it_names():
    """RSign thresholds on Q/K/V (one, shared), the attention output dense, FFN1 and the pooler;
    not on FFN2 (a shift of FFN1's bias). At 0 they are the plain sign model."""
    plain, m = tiny(), tiny()
    m.load_state_dict(plain.state_dict())
    kw = dict(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True)
    quantize_bert(plain, QuantBertConfig(**kw))
    quantize_bert(m, QuantBertConfig(**kw, act_threshold=True))
    betas = {n: p.shape for n, p in m.named_parameters() if n.endswith("beta")}
    h = m.config.hidden_size
    want = {f"bert.encoder.layer.{i}.{s}.act_quant.beta": (h,)
            for i in range(m.config.num_hidden_layers)
            for s in ("attention.self", "attention.output.dense", "intermediate.dense")}
    assert betas == {**want, "bert.pooler.dense.act_quant.beta": (h,)}
    ids = torch.randint(1, 100, (3, 9))
    assert torch.equal(m(input_ids=ids).logits, plain(input_ids=ids).logits)
    with torch.no_grad():
        m.bert.encoder.layer[0].intermediate.dense.act_quant.beta.fill_(0.3)
    assert not torch.equal(m(input_ids=ids).logits, plain(input_ids=ids).logits)
    assert QuantBertConfig.from_dict(quant_config_of(m).to_dict()).act_threshold


def test_attention_threshold_is_a_learned_per_head_score_shift():
    """Bi-Attention thresholds: one per head and layer, from 0 (the plain bool attention); the
    keep-mask is [scores > tau_h], and tau gets the clipped STE gradient; requantize_activations
    adds or removes them with the activation side."""
    plain, m = tiny(), tiny()
    m.load_state_dict(plain.state_dict())
    kw = dict(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True)
    quantize_bert(plain, QuantBertConfig(**kw))
    quantize_bert(m, QuantBertConfig(**kw, attention_threshold=True))
    heads = m.config.num_attention_heads
    taus = {n: p.shape for n, p in m.named_parameters() if n.endswith("score_threshold")}
    assert taus == {f"bert.encoder.layer.{i}.attention.self.score_threshold": (heads,)
                    for i in range(m.config.num_hidden_layers)}
    ids = torch.randint(1, 100, (3, 9))
    assert torch.equal(m(input_ids=ids).logits, plain(input_ids=ids).logits)
    att = m.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        att.score_threshold.copy_(torch.linspace(-0.5, 0.5, heads))
    with torch.no_grad(), record(m) as rec:
        m(input_ids=ids)
    scores, probs = rec.layers[0]["scores"], rec.layers[0]["probs"]
    assert torch.equal(probs, (scores > att.score_threshold[:, None, None]).to(probs.dtype))
    assert not torch.equal(m(input_ids=ids).logits, plain(input_ids=ids).logits)
    m.train()
    m(input_ids=ids).logits.sum().backward()
    assert att.score_threshold.grad is not None and att.score_threshold.grad.abs().sum() > 0
    requantize_activations(m, {"attention_threshold": False})
    assert not any(n.endswith("score_threshold") for n, _ in m.named_parameters())
    requantize_activations(m, {"attention_threshold": True})
    assert m.bert.encoder.layer[1].attention.self.score_threshold.tolist() == [0.0] * heads


def test_training_mode_is_kept():
    m = tiny()
    quantize_bert(m, QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    assert not any(x.training for x in m.modules())
    b = batch()
    with torch.no_grad():
        assert torch.equal(m(**b).logits, m(**b).logits)  # no dropout in eval


# ---------------------------------------------------------------- numerics of the attention

def _heads(x, d):
    return x.view(*x.shape[:-1], -1, d).transpose(1, 2)


def test_softmax_attention_matches_reference():
    m = tiny()
    quantize_bert(m, QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    b = batch()
    with torch.no_grad():
        m(**b)  # initialise the LSQ steps
        with record(m) as rec:
            m(**b)
    s = m.bert.encoder.layer[1].attention.self
    x = rec.layers[0]["ffn_out"]  # the input of layer 1
    additive = (1.0 - b["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
    step = lambda aq: aq.step.detach()  # noqa: E731
    with torch.no_grad():
        xq = Q.lsq_quantize(x, step(s.query.act_quant), 4)
        q, k, v = (_heads(F.linear(xq, Q.twn_quantize(lin.weight), lin.bias), 8)
                   for lin in (s.query, s.key, s.value))
        scores = Q.lsq_quantize(q, step(s.q_quant), 4) @ Q.lsq_quantize(k, step(s.k_quant), 4).transpose(2, 3)
        probs = torch.softmax(scores / 8 ** 0.5 + additive, -1)
        ctx = Q.lsq_quantize(probs, step(s.p_quant), 4) @ Q.lsq_quantize(v, step(s.v_quant), 4)
        ctx = ctx.transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(rec.layers[1]["context"], ctx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rec.layers[1]["scores"], scores / 8 ** 0.5, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bi_attention_matches_reference(impl):
    m = tiny(impl)
    quantize_bert(m, QuantBertConfig(weight="bwn", act="sign", attention="bi", centered=True,
                                     weight_per_row=True))
    b = batch()
    with torch.no_grad(), record(m) as rec:
        m(**b)
    s = m.bert.encoder.layer[1].attention.self
    x = rec.layers[0]["ffn_out"]
    allowed = b["attention_mask"][:, None, None, :].bool()
    with torch.no_grad():
        q, k, v = (_heads(F.linear(Q.sign(x), Q.bwn_quantize(lin.weight, True, True), lin.bias), 8)
                   for lin in (s.query, s.key, s.value))
        scores = Q.sign(q) @ Q.sign(k).transpose(2, 3) / 8 ** 0.5
        probs = Q.heaviside(scores) * allowed
        ctx = (probs @ Q.sign(v)).transpose(1, 2).reshape(x.shape)
    got = rec.layers[1]
    torch.testing.assert_close(got["probs"], probs, rtol=0, atol=0)
    torch.testing.assert_close(got["context"], ctx, rtol=0, atol=0)
    assert set(got["probs"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(got["context"], got["context"].round())  # popcount-style integers
    assert got["context"].abs().max() <= b["input_ids"].shape[1]


@pytest.mark.parametrize("qcfg", [
    QuantBertConfig(weight="twn", act="lsq", act_bits=4),
    QuantBertConfig(weight="bwn", act="sign", attention="bi", centered=True),
])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_padding_never_leaks(qcfg, impl):
    """Masked positions contribute 0: changing padded tokens leaves the valid outputs alone."""
    m = quantize_bert(tiny(impl), qcfg)
    b = batch()
    b2 = {k: v.clone() for k, v in b.items()}
    b2["input_ids"][b["attention_mask"] == 0] = 77
    with torch.no_grad():
        m(**b)  # initialise quantizers on the first batch, then compare
        h1 = m(**b, output_hidden_states=True).hidden_states[-1]
        h2 = m(**b2, output_hidden_states=True).hidden_states[-1]
    valid = b["attention_mask"].bool()
    torch.testing.assert_close(h1[valid], h2[valid], rtol=0, atol=1e-6)
    assert (h1[~valid] - h2[~valid]).abs().max() > 1e-3  # the change did reach the padded rows


# ---------------------------------------------------------------- recording

def test_record_plain_teacher_equals_quantized_fp_student():
    teacher = tiny()
    student = quantize_bert(copy.deepcopy(teacher), QuantBertConfig())
    b = batch()
    with torch.no_grad(), record(teacher) as rt:
        out = teacher(**b, output_hidden_states=True, output_attentions=True)
    with torch.no_grad(), record(student) as rs:
        out_s = student(**b, output_attentions=True)
    assert len(rt.layers) == len(rs.layers) == 2
    for lt, ls in zip(rt.layers, rs.layers):
        for key in KEYS:
            torch.testing.assert_close(ls[key], lt[key], rtol=0, atol=1e-5)
        assert torch.equal(lt["mask"], ls["mask"])
    for a, h in zip(rt.hidden_states, out.hidden_states):
        torch.testing.assert_close(a, h, rtol=0, atol=0)
    for a, p in zip(out.attentions, rt.layers):  # HF's own probabilities
        torch.testing.assert_close(p["probs"], a, rtol=0, atol=1e-6)
    for a, p in zip(out_s.attentions, rs.layers):  # HF captures ours too (subclass)
        assert torch.equal(p["probs"], a)
    s = rt.layers[0]
    torch.testing.assert_close(s["scores"], s["q"] @ s["k"].transpose(2, 3) / 8 ** 0.5)
    assert s["q"].shape == (3, 4, 9, 8) and s["scores"].shape == (3, 4, 9, 9)


def test_record_keeps_graph_and_cleans_up():
    m = quantize_bert(tiny(), QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    m.train()
    with record(m) as rec:
        m(**batch())
    loss = sum(layer["scores"].square().mean() + layer["attn_out"].square().mean() for layer in rec.layers)
    loss = loss + rec.embeddings.square().mean()
    loss.backward()
    s = m.bert.encoder.layer[0].attention.self
    assert s.query.weight.grad.abs().sum() > 0 and s.q_quant.step.grad is not None
    assert m.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(not x._forward_hooks for x in m.modules())
    assert all(x._record is None for x in m.modules() if isinstance(x, QuantBertSelfAttention))
    with torch.no_grad(), record(m) as rec2:
        pass
    assert rec2.layers == [{}, {}]  # nothing is recorded outside a forward


@pytest.mark.parametrize("qcfg", [
    QuantBertConfig(weight="twn", act="uniform", act_bits=8),
    QuantBertConfig(weight="bwn", act="lsq", act_bits=2),
    QuantBertConfig(weight="bwn", act="sign", attention="bi", centered=True, weight_per_row=True),
])
def test_one_training_step_updates_latent_weights(qcfg):
    m = quantize_bert(tiny(), qcfg).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    b = batch()
    labels = torch.tensor([0, 1, 1])
    before = m.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    loss = F.cross_entropy(m(**b).logits, labels)
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    assert not torch.equal(before, m.bert.encoder.layer[0].attention.self.query.weight)


def test_state_dict_round_trip():
    qcfg = QuantBertConfig(weight="twn", act="lsq", act_bits=4)
    m = quantize_bert(tiny(seed=0), qcfg)
    b = batch()
    with torch.no_grad():
        m(**b)
        ref = m(**b).logits
    fresh = quantize_bert(tiny(seed=5), QuantBertConfig.from_dict(m.config.binbert_quant))
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(**b).logits, ref, rtol=0, atol=0)


def test_save_pretrained_and_reload(tmp_path):
    """One copy of each shared step: HF's safetensors writer accepts the model; the quantization
    config travels in config.json."""
    import json

    from safetensors.torch import load_file
    m = quantize_bert(tiny(), QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    b = batch()
    with torch.no_grad():
        m(**b)
        ref = m(**b).logits
    m.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["binbert_quant"]
    fresh = quantize_bert(tiny(seed=3), QuantBertConfig.from_dict(saved))
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(fresh(**b).logits, ref, rtol=0, atol=0)


def test_set_act_integer():
    from sw.qbert import set_act_integer
    m = quantize_bert(tiny(), QuantBertConfig(weight="twn", act="lsq", act_bits=4))
    aqs = [x for x in m.modules() if isinstance(x, Q.ActQuantizer)]
    assert len(aqs) == 2 * (1 + 4 + 3) + 1  # per layer: QKV input, q/k/v/probs, O, FFN in, FFN out
    set_act_integer(m)
    assert all(x.rounding == "half_up" for x in aqs) and quant_config_of(m).act_integer
    set_act_integer(m, False)
    assert all(x.rounding == "half_even" for x in aqs) and not m.config.binbert_quant["act_integer"]


# ---------------------------------------------------------------- config validation

def test_from_dict_round_trip():
    cfg = QuantBertConfig(weight="bwn", act="lsq", act_bits=4, attention="bi", centered=True)
    assert QuantBertConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("d,field", [
    ({"weigth": "twn"}, "weigth"),
    ({"weight": "xnor"}, "weight"),
    ({"weight": 1}, "weight"),
    ({"act": "log"}, "act"),
    ({"act": "lsq", "act_bits": 9}, "act_bits"),
    ({"act": "lsq", "act_bits": "4"}, "act_bits"),
    ({"act_bits": True}, "act_bits"),
    ({"attention": "linear"}, "attention"),
    ({"embedding": "yes"}, "embedding"),
    ({"pooler": 0}, "pooler"),
    ({"weight": "twn", "centered": True}, "centered"),
    ({"split": "bert.pooler.dense"}, "split"),
    ({"weight": "twn", "split": ["a"]}, "split"),
    ({"act": "lsq", "act_threshold": True}, "act_threshold"),
    ({"act": "sign", "act_threshold": "yes"}, "act_threshold"),
    ({"weight": "twn", "learned_scale": True}, "learned_scale"),
    ({"weight": "bwn", "learned_scale": True, "split": ["a"]}, "learned_scale"),
    ({"act": "sign", "attention_threshold": True}, "attention_threshold"),
    ({"attention": "bi", "attention_threshold": 1}, "attention_threshold"),
])
def test_from_dict_rejects(d, field):
    with pytest.raises(BinbertError, match=field):
        QuantBertConfig.from_dict(d)


def test_bad_models_rejected():
    with pytest.raises(BinbertError, match="BERT"):
        quantize_bert(nn.Linear(2, 2), QuantBertConfig())
    m = quantize_bert(tiny(), QuantBertConfig())
    with pytest.raises(BinbertError, match="already quantized"):
        quantize_bert(m, QuantBertConfig())
    with pytest.raises(BinbertError, match="QuantBertConfig"):
        quantize_bert(tiny(), {"weight": "twn"})
    with pytest.raises(BinbertError, match="mapping"):
        QuantBertConfig.from_dict(["weight"])


def test_requantize_activations_keeps_the_weights_and_swaps_the_activation_side():
    """TWS W1A8 -> W1A1: a split model keeps its binary terms; the activation quantizers and the
    attention mode are rebuilt where quantize_bert puts them, so the recorded config rebuilds the
    same model (what load_checkpoint does)."""
    from sw.qbert import requantize_activations
    from sw.split import split_model

    m = tiny()
    quantize_bert(m, QuantBertConfig(weight="twn", act="uniform", act_bits=8))
    with torch.no_grad():
        m(**batch())  # calibrates the 8-bit clips
    split_model(m)
    split = quant_config_of(m).split
    weights = {k: v.clone() for k, v in m.state_dict().items() if "_quant." not in k}
    requantize_activations(m, {"act": "sign", "attention": "bi", "act_threshold": True})
    sd = m.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in weights.items())
    assert not any(k.endswith(".clip") for k in sd)  # no 8-bit clip left behind
    cfg = quant_config_of(m)
    assert (cfg.weight, cfg.act, cfg.attention, cfg.act_threshold, cfg.split) == (
        "bwn", "sign", "bi", True, split)
    layer = m.bert.encoder.layer[0]
    att = layer.attention.self
    assert att.mode == "bi" and att.act_quant.cfg.threshold
    assert att.query.act_quant is att.key.act_quant is att.value.act_quant is att.act_quant
    assert layer.intermediate.dense.act_quant.cfg.threshold
    assert layer.output.dense.act_quant.cfg == Q.ActQuantConfig("sign")  # FFN2: plain sign
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("act_quant.beta"):
                p.uniform_(-0.3, 0.3)
    rebuilt = quantize_bert(tiny(seed=1), cfg)
    rebuilt.load_state_dict(m.state_dict())  # strict: the same parameters and buffers
    with torch.no_grad():
        assert torch.equal(rebuilt(**batch(2)).logits, m(**batch(2)).logits)
    for changes, message in (({"weight": "twn"}, r"'weight' is not an activation setting"),
                             ({"act": "lsq", "act_bits": 4}, r"act_threshold=true needs act='sign'")):
        with pytest.raises(BinbertError, match=message):
            requantize_activations(m, changes)
    with pytest.raises(BinbertError, match=r"needs a quantized model"):
        requantize_activations(tiny(), {"act": "sign"})
