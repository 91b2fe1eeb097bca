"""sw.export: quantized model -> integer ops -> ROM files + manifest (docs/arithmetic.md §10-§19)."""
from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from tests.sw.chain_models import VARIANTS, batch, tiny_quant
from hw.golden import arith
from hw.golden.linear import BinaryLinear
from hw.golden.requant import Lut
from hw.golden.softmax import Softmax
from hw.errors import BinbertError
from sw.export import ExportOptions, act_of, build_params, export_model, weight_terms
from sw.qbert import QuantBertConfig, quantize_bert


@pytest.fixture(scope="module")
def models():
    return {v: tiny_quant(v) for v in VARIANTS}


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    out = {}
    for v in ("split", "bi"):
        d = tmp_path_factory.mktemp(f"export_{v}")
        export_model(models[v], d)
        out[v] = d
    return out


def _hex_words(path, width):
    lines = path.read_text().splitlines()
    if path.suffix == ".mem":
        assert lines[0] == f"// width={width} depth={len(lines) - 1}"
        lines = lines[1:]
    assert all(len(s) == -(-width // 4) for s in lines)
    return [int(s, 16) for s in lines]


def _bin_words(path, width):
    nb = -(-width // 8)
    raw = path.read_bytes()
    return [int.from_bytes(raw[i:i + nb], "little") for i in range(0, len(raw), nb)]


@pytest.mark.parametrize("variant", ["split", "bi"])
def test_manifest_lists_every_file_with_its_hash(exported, variant):
    d = exported[variant]
    m = json.loads((d / "manifest.json").read_text())
    assert m["format"] == "binbert-export" and m["version"] == 2
    listed = {f["path"] for r in m["roms"].values() for f in r["files"].values()}
    on_disk = {p.name for p in d.iterdir()} - {"manifest.json"}
    assert listed == on_disk
    for rec in m["roms"].values():
        for f in rec["files"].values():
            blob = (d / f["path"]).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == f["sha256"] and len(blob) == f["bytes"]


@pytest.mark.parametrize("variant", ["split", "bi"])
def test_three_formats_hold_the_same_words(exported, variant):
    d = exported[variant]
    m = json.loads((d / "manifest.json").read_text())
    for name, rec in m["roms"].items():
        w = rec["width"]
        hx = _hex_words(d / rec["files"]["hex"]["path"], w)
        mem = _hex_words(d / rec["files"]["mem"]["path"], w)
        bn = _bin_words(d / rec["files"]["bin"]["path"], w)
        assert hx == mem == bn and len(hx) == rec["depth"], name
        assert all(0 <= x < (1 << w) for x in hx), name


def test_hw_rom_reader_reads_every_export_file(exported):
    """The validated ROM reader (hw.golden.memfile.read_memfile) accepts all three formats and agrees."""
    from hw.golden.memfile import read_memfile

    d = exported["split"]
    m = json.loads((d / "manifest.json").read_text())
    for name in ("layers.0.query.weights.t0", "layers.1.ln1.gamma", "layers.0.attention.probs.table"):
        rec = m["roms"][name]
        words = [read_memfile(d / rec["files"][f]["path"], rec["width"], rec["depth"]) for f in ("hex", "mem", "bin")]
        assert words[0] == words[1] == words[2] == _bin_words(d / rec["files"]["bin"]["path"], rec["width"])


def test_weight_roms_are_the_sign_bits_of_each_split_half(models, exported):
    model = models["split"]
    d = exported["split"]
    m = json.loads((d / "manifest.json").read_text())
    q = model.bert.encoder.layer[1].attention.self.query
    for t, (w, wq) in enumerate(((q.weight1, q.weight_quant1), (q.weight2, q.weight_quant2))):
        rec = m["roms"][f"layers.1.query.weights.t{t}"]
        words = _hex_words(d / rec["files"]["hex"]["path"], rec["width"])
        bits, _ = wq.codes(w.detach())
        want = [sum(int(b) << k for k, b in enumerate(row)) for row in bits.tolist()]  # LSB first (§2)
        assert words == want


def test_ternary_layer_is_two_exact_binary_terms(models):
    model = models["ternary"]
    p = build_params(model)
    lin = model.bert.encoder.layer[0].intermediate.dense
    codes, alpha = lin.weight_quant.codes(lin.weight.detach())
    op = p.layers[0].ffn_in
    pm = [arith.bits_to_pm1(arith.unpack_bits(op.weights[t], op.k)).astype(np.int64) for t in range(2)]
    assert np.array_equal(pm[0] + pm[1], 2 * codes.numpy().astype(np.int64))  # t = (b1 + b2) / 2
    assert np.array_equal(op.out.index.mult[0], op.out.index.mult[1])  # alpha / 2 each


@pytest.mark.parametrize("variant", ["split", "binary", "uniform8_relu"])
def test_requantizers_fold_steps_and_scales(models, variant):
    """M_t / 2^S == s_x·α_t / s_q within the fixed-point precision, B == β / s_q (§8)."""
    model = models[variant]
    p = build_params(model)
    att = model.bert.encoder.layer[0].attention.self
    op = p.layers[0].key.out
    s_x = act_of(att.key.act_quant, "x").step
    s_k = act_of(att.k_quant, "k").step
    mods = [(att.key.weight1, att.key.weight_quant1), (att.key.weight2, att.key.weight_quant2)] \
        if hasattr(att.key, "weight1") else [(att.key.weight, att.key.weight_quant)]
    for t, (w, wq) in enumerate(mods):
        alpha = float(wq.codes(w.detach())[1].reshape(-1)[0])
        real = s_x * alpha / s_k
        got = op.mult[t] / 2.0**op.shift
        assert np.allclose(got, real, rtol=2.0 ** -(op.m_bits - 1), atol=2.0 ** -op.shift)
    bias = (att.key.bias1 + att.key.bias2 if hasattr(att.key, "bias1") else att.key.bias).detach().double().numpy()
    assert np.all(np.abs(op.bias / 2.0**op.shift - bias / s_k) <= 2.0 ** -op.shift)
    assert (op.lo, op.hi) == (act_of(att.k_quant, "k").lo, act_of(att.k_quant, "k").hi)


def test_ops_chosen_per_config(models):
    assert isinstance(build_params(models["split"]).layers[0].ffn_in.out, Lut)
    relu = build_params(models["uniform8_relu"]).layers[0].ffn_in.out
    assert not isinstance(relu, Lut) and relu.lo == 0
    bi = build_params(models["bi"])
    assert type(bi.layers[0].attention.probs).__name__ == "Heaviside"
    assert bi.layers[0].ffn_in.out.out_bits == 1  # gelu(x) >= 0 <=> x >= 0: a threshold, no ROM
    sm = build_params(models["split"]).layers[0].attention.probs
    assert isinstance(sm, Softmax) and sm.hi == 7  # LSQ 4-bit probability codes
    # TWS W1A1: both binary terms of every (pruned) matrix on one-bit inputs, Bi-Attention
    sb = build_params(models["split_bi"]).layers[0]
    assert type(sb.attention.probs).__name__ == "Heaviside" and sb.qkv_in.out_bits == 1
    for op in (sb.query, sb.key, sb.value, sb.attn_out, sb.ffn_in, sb.ffn_out):
        assert len(op.weights) == 2 and op.in_bits == 1
    assert sb.query.n == sb.attn_out.k == 16  # half of the 32 Q/K/V features
    fp = build_params(models["fp_pooler_emb"])
    assert fp.pooler_in is None and not isinstance(fp.pooler, BinaryLinear) and fp.embedding.word_table is not None


def test_learned_thresholds_fold_into_the_requantizer_bias(models):
    """RSign thresholds: the golden requantizers' bits equal the fake-quant codes [x >= beta] on
    every residual value and context count, and differ from the plain sign (they are used)."""
    model = models["bi_rsign"]
    params = build_params(model)
    frac, res = params.res_frac, params.res_bits
    r = np.arange(-(1 << (res - 1)), 1 << (res - 1), 7)  # residual codes across the whole range
    max_len = params.layers[0].attention.max_len
    counts = np.arange(-max_len, max_len + 1)
    cases = [(params.pooler_in, model.bert.pooler.dense.act_quant, r, r * 2.0**-frac)]
    for ops, layer in zip(params.layers, model.bert.encoder.layer):
        cases += [(ops.qkv_in, layer.attention.self.act_quant, r, r * 2.0**-frac),
                  (ops.ffn_in_q, layer.intermediate.dense.act_quant, r, r * 2.0**-frac),
                  (ops.attention.context, layer.attention.output.dense.act_quant, counts, counts)]
    for op, q, acc, real in cases:
        n = q.beta.shape[0]
        assert op.rows == n and op.is_threshold
        grid = np.repeat(acc[:, None], n, axis=1)
        want = q.codes(torch.tensor(np.repeat(real[:, None], n, axis=1))).numpy()
        assert np.array_equal(op.compute(grid[None]), want)
        assert not np.array_equal(want, (grid >= 0).astype(want.dtype))


@pytest.mark.parametrize("variant,fn", [("split", "gelu"), ("fp_pooler_emb", "gelu_tanh")])
def test_gelu_lut_follows_the_activation(models, variant, fn):
    """The requantize-then-ROM GELU equals code(gelu(x)) except next to a rounding boundary (§12)."""
    from sw.export import act_function, weight_terms

    model = models[variant]
    layer = model.bert.encoder.layer[0]
    op = build_params(model).layers[0].ffn_in
    s_x = act_of(layer.intermediate.dense.act_quant, "x").step
    o = act_of(layer.output.dense.act_quant, "o")
    _, alphas = weight_terms(layer.intermediate.dense, "ffn")
    bias = layer.intermediate.dense
    bias = (bias.bias1 + bias.bias2 if hasattr(bias, "bias1") else bias.bias).detach().double().numpy()
    rng = np.random.default_rng(0)
    accs = rng.integers(-40, 41, (op.terms, 400, op.n))
    x = s_x * sum(alphas[t] * accs[t] for t in range(op.terms)) + bias
    want = np.clip(np.floor(act_function(fn)(x) / o.step + 0.5), o.lo, o.hi)
    got = op.out.compute(accs)
    assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 0.02
    assert got.min() < 0 < got.max() or o.lo == 0


@pytest.mark.parametrize("qkw,match", [
    (dict(weight="bwn", act="fp"), "full-precision activations"),
    (dict(weight="fp", act="lsq", act_bits=4), "full-precision weights"),
    (dict(weight="bwn", act="sign", attention="softmax"), "p_quant"),
])
def test_refuses_what_the_contract_cannot_represent(qkw, match):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    cfg._attn_implementation = "eager"
    m = BertForSequenceClassification(cfg).eval()
    quantize_bert(m, QuantBertConfig(**qkw))
    with torch.no_grad():
        m(**batch(0, b=2, t=8, vocab=50))
    with pytest.raises(BinbertError, match=match):
        build_params(m)


def test_refuses_uninitialised_quantizer_and_unknown_activation():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    cfg._attn_implementation = "eager"
    m = BertForSequenceClassification(cfg).eval()
    quantize_bert(m, QuantBertConfig(weight="bwn", act="lsq", act_bits=4))
    with pytest.raises(BinbertError, match="never initialised"):
        build_params(m)
    with torch.no_grad():
        m(**batch(0, b=2, t=8, vocab=50))
    m.config.hidden_act = "silu"
    with pytest.raises(BinbertError, match="hidden_act='silu' unsupported"):
        build_params(m)


def test_refuses_unquantized_model_and_bad_options():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    with pytest.raises(BinbertError, match="not quantized"):
        build_params(BertForSequenceClassification(cfg))
    with pytest.raises(BinbertError, match="res_frac"):
        ExportOptions(res_bits=8, res_frac=8)
    with pytest.raises(BinbertError, match="lut_bits"):
        ExportOptions(lut_bits=20)


def test_export_is_deterministic(models, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    export_model(models["binary"], a)
    export_model(models["binary"], b)
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()


def test_learned_weight_gains_fold_into_alpha(models):
    """learned_scale: each row's exported alpha is gain * mean|w| (the fake-quant scale), so the
    golden model computes the gains; with them reset to 1 it computes other logits."""
    model = models["bi_gain"]
    ids, am, tt = (batch(9, b=8, t=12)[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids"))
    for name, lin in (("ffn_in", model.bert.encoder.layer[1].intermediate.dense),
                      ("query", model.bert.encoder.layer[0].attention.self.query)):
        _, (alpha,) = weight_terms(lin, name)
        want = lin.weight_quant.gain.detach().double() * lin.weight.detach().double().abs().mean(1)
        assert np.allclose(alpha, want.numpy(), rtol=1e-6)
        assert not np.allclose(lin.weight_quant.gain.detach().numpy(), 1.0)
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in plain.named_parameters():
            if n.endswith("weight_quant.gain"):
                p.fill_(1.0)
    assert not np.array_equal(build_params(model).compute(ids, am, tt), build_params(plain).compute(ids, am, tt))


def test_learned_attention_thresholds_become_integer_score_thresholds(models):
    """attention_threshold: T_h = floor(tau_h * sqrt(d)) on the integer score (§14); the golden
    keep-masks equal the fake-quant [S / sqrt(d) > tau_h] on every score value, and the golden
    model computes the thresholds (reset to 0, other logits)."""
    model = models["bi_athr"]
    params = build_params(model)
    for ops, layer in zip(params.layers, model.bert.encoder.layer):
        att = layer.attention.self
        tau = att.score_threshold.detach()
        t = ops.attention.thresholds
        assert t is not None and t.shape == tau.shape and len(set(t.tolist())) > 1
        d = ops.attention.head_dim
        s = np.arange(-d, d + 1)
        fake = (torch.tensor(s, dtype=torch.float32)[None] * att.scaling - tau[:, None]) > 0
        assert np.array_equal(s[None] > t[:, None], fake.numpy())
    ids, am, tt = (batch(9, b=8, t=12)[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids"))
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in plain.named_parameters():
            if n.endswith("score_threshold"):
                p.zero_()
    assert not np.array_equal(build_params(model).compute(ids, am, tt), build_params(plain).compute(ids, am, tt))


def test_load_export_path_errors(tmp_path):
    from sw.export import load_export

    with pytest.raises(BinbertError, match="no such checkpoint or export directory"):
        load_export(tmp_path / "missing")


def test_a_full_precision_checkpoint_names_its_path_and_stage(tmp_path, monkeypatch):
    """What sim --ckpt and bitstream --export read: load_export of a teacher checkpoint."""
    from pathlib import Path

    from sw import backbone as bb
    from sw.config import load_config
    from sw.export import load_export
    from sw.train import save_checkpoint

    cfg = load_config(Path(__file__).resolve().parents[2] / "models/tiny-test.yaml")
    ckpt = tmp_path / "teacher"
    save_checkpoint(ckpt, bb.build_model(cfg.model, cfg.data.task), cfg,
                    {"stage": "teacher", "complete": True})
    monkeypatch.setenv("BINBERT_SIM_BUILD", str(tmp_path / "build"))
    with pytest.raises(BinbertError, match=rf"^{ckpt} \(stage 'teacher'\): model is not quantized"):
        load_export(ckpt)


def test_load_export_exports_a_checkpoint_once_into_its_cache(tmp_path, monkeypatch):
    """A checkpoint directory is exported on the fly into the cache and reused; a damaged cached
    export is exported again; an export directory is read as it is."""
    from pathlib import Path

    from hw.golden.export_format import load_params
    from sw.backbone import minilm_path
    from sw.config import load_config
    from sw.export import export_cache, load_export
    from sw.train import save_checkpoint

    root = Path(__file__).resolve().parents[2]
    vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
    cfg = load_config(root / "models/tiny-test.yaml")
    ckpt = tmp_path / "binary"
    save_checkpoint(ckpt, tiny_quant("split", vocab=vocab, max_pos=cfg.model.tiny.max_position_embeddings),
                    cfg, {"stage": "binary", "complete": True})
    monkeypatch.setenv("BINBERT_SIM_BUILD", str(tmp_path / "build"))
    assert export_cache() == tmp_path / "build" / "exports"
    params, meta, backbone = load_export(ckpt)
    (out,) = export_cache().iterdir()
    assert out.name.startswith("binary-") and backbone == cfg.model.backbone
    assert meta["task"] == cfg.data.task and meta["checkpoint"] == str(ckpt)
    ref, _ = load_params(out)
    ids, am, tt = (batch(3, b=2, t=6)[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids"))
    assert np.array_equal(params.compute(ids, am, tt), ref.compute(ids, am, tt))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    load_export(ckpt)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # reused, not exported again
    (out / "manifest.json").write_text("{")
    load_export(ckpt)
    assert load_params(out)[0].num_labels == params.num_labels  # damaged: exported again
    again, emeta, ebackbone = load_export(out)  # an export directory
    assert emeta["checkpoint"] == str(ckpt) and ebackbone == cfg.model.backbone
    assert load_export(ckpt, cache=tmp_path / "other")[0].num_labels == params.num_labels
    assert len(list((tmp_path / "other").iterdir())) == 1


def test_load_export_does_not_reuse_the_cached_export_of_other_weights(tmp_path, monkeypatch):
    """The cache key is the checkpoint's path, sizes and times: weights replaced under the same
    size and time (cp -p of another run) used to reuse the old export; the recorded checkpoint
    digest makes it stale, so it is exported again."""
    import os
    import shutil
    from pathlib import Path

    from sw.backbone import minilm_path
    from sw.config import load_config
    from sw.export import checkpoint_digest, export_cache, load_export
    from sw.train import save_checkpoint
    from sw.train.checkpoint import MODEL

    root = Path(__file__).resolve().parents[2]
    vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
    cfg = load_config(root / "models/tiny-test.yaml")
    ckpt, other = tmp_path / "binary", tmp_path / "other"
    for path, seed in ((ckpt, 0), (other, 1)):
        save_checkpoint(path, tiny_quant("split", seed=seed, vocab=vocab,
                                         max_pos=cfg.model.tiny.max_position_embeddings),
                        cfg, {"stage": "binary", "complete": True})
    monkeypatch.setenv("BINBERT_SIM_BUILD", str(tmp_path / "build"))
    first, meta, _ = load_export(ckpt)
    assert meta["checkpoint_sha256"] == checkpoint_digest(ckpt)
    st = (ckpt / MODEL).stat()
    assert (other / MODEL).stat().st_size == st.st_size
    shutil.copyfile(other / MODEL, ckpt / MODEL)
    os.utime(ckpt / MODEL, ns=(st.st_atime_ns, st.st_mtime_ns))
    params, meta, _ = load_export(ckpt)
    assert meta["checkpoint_sha256"] == checkpoint_digest(other)
    assert len(list(export_cache().iterdir())) == 1
    ids, am, tt = (batch(3, b=2, t=6)[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids"))
    assert not np.array_equal(params.compute(ids, am, tt), first.compute(ids, am, tt))
