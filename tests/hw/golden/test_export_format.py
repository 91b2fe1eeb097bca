"""hw.golden.export_format: the golden integer encoder read from an export directory alone.

Round trip (export -> load == in-memory ops), golden vs the float fake-quant model layer by
layer within the §17 rounding budget, real SST-2 sentences (golden == PyTorch integer-sim), and
every kind of bad export / bad input failing with a one-line BinbertError before any compute.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.sw.chain_models import batch, tiny_quant
from hw.errors import BinbertError
from sw.export import build_params, export_model
from hw.golden.export_format import load_params, run, save_params
from sw.intsim import IntSim

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def split_export(tmp_path_factory):
    model = tiny_quant("split")
    d = tmp_path_factory.mktemp("golden_split")
    export_model(model, d)
    return model, d


def _np(b):
    return b["input_ids"].numpy(), b["attention_mask"].numpy(), b["token_type_ids"].numpy()


@pytest.mark.parametrize("variant", ["split", "bi", "bi_rsign", "bi_gain", "bi_athr", "ternary", "uniform8_relu", "fp_pooler_emb",
                                     "pruned", "split_bi"])
def test_round_trip_and_torch_path_are_bit_exact(variant, tmp_path):
    model = tiny_quant(variant)
    export_model(model, tmp_path)
    loaded, meta = load_params(tmp_path)
    direct = build_params(model)
    ids, am, tt = _np(batch(3, b=10, t=14))
    golden = run(loaded, ids, am, tt, batch_size=4)
    assert np.array_equal(golden, direct.compute(ids, am, tt))
    assert np.array_equal(golden, IntSim(direct).logits(ids, am, tt).numpy())
    assert meta["num_labels"] == 2 and meta["quant"]["act"] == model.binbert_quant.act


def test_golden_follows_the_fake_quant_model(split_export):
    """Embedding output within the LayerNorm rounding budget; later layers within a few LSBs for
    almost every element (the rest are quantizer codes flipped by that rounding)."""
    model, d = split_export
    params, _ = load_params(d)
    b = batch(5, b=16, t=16)
    with torch.no_grad():
        out = model(**b, output_hidden_states=True)
    states = params.hidden_states(*_np(b))
    mask = b["attention_mask"].numpy().astype(bool)
    lsb = 2.0 ** -params.res_frac
    err0 = np.abs(states[0] * lsb - out.hidden_states[0].numpy())[mask]
    assert err0.max() <= 2 * lsb  # output rounding + statistics, §17
    for g, f in zip(states[1:], out.hidden_states[1:]):
        err = np.abs(g * lsb - f.numpy())[mask]
        assert np.median(err) <= 2 * lsb and np.quantile(err, 0.99) <= 16 * lsb
    logits = run(params, *_np(b)) / 2.0**params.logit_frac
    assert np.corrcoef(logits.ravel(), out.logits.numpy().ravel())[0, 1] > 0.95


def _sst2_dev(n):
    with open(ROOT / "data/glue/SST-2/dev.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[0] for r in rows[1:n + 1]]


def test_real_sst2_sentences_golden_equals_pytorch_integer_path(tmp_path):
    from sw.backbone import load_tokenizer
    from sw.intsim import integer_semantics

    tok = load_tokenizer("minilm")
    enc = tok(_sst2_dev(48), padding=True, truncation=True, max_length=48, return_tensors="pt")
    model = tiny_quant("split", vocab=tok.vocab_size, max_pos=64)
    export_model(model, tmp_path)
    params, _ = load_params(tmp_path)
    golden = run(params, enc["input_ids"].numpy(), enc["attention_mask"].numpy(), enc["token_type_ids"].numpy())
    with integer_semantics(model) as sim, torch.no_grad():
        sim_logits = sim.logits(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).numpy()
        fq = model(**enc).logits.numpy()  # the model's forward now follows the integer semantics
    assert np.array_equal(golden, sim_logits)
    assert np.array_equal(golden.argmax(1), fq.argmax(1))
    assert np.allclose(fq, golden / 2.0**params.logit_frac, atol=1e-6)


# ---------------------------------------------------------------- bad exports / bad input

@pytest.fixture
def broken(split_export, tmp_path):
    _, d = split_export
    dst = tmp_path / "exp"
    shutil.copytree(d, dst)
    return dst


def _manifest(d):
    return json.loads((d / "manifest.json").read_text())


def _save(d, m):
    (d / "manifest.json").write_text(json.dumps(m))


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_truncated_rom_file(broken):
    f = broken / "layers.0.query.weights.t1.bin"
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(BinbertError, match=r"layers\.0\.query\.weights\.t1\.bin: .*truncated") as e:
        load_params(broken)
    _one_line(e)


def test_corrupted_rom_file_same_size(broken):
    f = broken / "layers.1.ln2.gamma.hex"
    text = f.read_text()
    i = text.index("\n") - 1
    f.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1:])
    with pytest.raises(BinbertError, match=r"layers\.1\.ln2\.gamma\.hex: sha256 differs") as e:
        load_params(broken)
    _one_line(e)


def test_missing_rom_file(broken):
    (broken / "embedding.position.mem").unlink()
    with pytest.raises(BinbertError, match=r"embedding\.position\.mem: ROM file missing"):
        load_params(broken)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["roms"]["layers.0.ffn_in.weights.t0"].__setitem__("depth", 7), r"roms\.layers\.0\.ffn_in\.weights\.t0"),
    (lambda m: m["roms"]["classifier.weight"].__setitem__("shape", [3, 32]), r"roms\.classifier\.weight: shape"),
    (lambda m: m["roms"]["classifier.weight"].__setitem__("width", 9), r"classifier\.weight\..*expected"),
    (lambda m: m["roms"].__setitem__("extra", m["roms"]["classifier.weight"]), r"roms\.extra is listed but no op uses it"),
    (lambda m: m["model"]["fields"].__setitem__("pooler_in", {"rom": "nope"}), r"model\.pooler_in names ROM 'nope'"),
    (lambda m: m.__setitem__("version", 1), r"field 'version'"),
    (lambda m: m["model"]["fields"]["layers"][0]["fields"].__setitem__("bogus", 1), r"unknown field 'bogus'"),
    (lambda m: m["model"]["fields"]["layers"][1]["fields"]["ln1"]["fields"].__setitem__("out_bits", 40),
     r"model\.layers\.1\.ln1: LayerNorm\.out_bits=40"),
])
def test_manifest_that_does_not_match_the_files(broken, edit, match):
    m = _manifest(broken)
    edit(m)
    _save(broken, m)
    with pytest.raises(BinbertError, match=match) as e:
        load_params(broken)
    _one_line(e)


def test_unsupported_activation_bits(broken):
    m = _manifest(broken)
    m["model"]["fields"]["layers"][0]["fields"]["attn_out"]["fields"]["in_bits"] = 9
    _save(broken, m)
    with pytest.raises(BinbertError, match=r"model\.layers\.0\.attn_out: BinaryLinear\.in_bits=9 out of range"):
        load_params(broken)


def test_manifest_not_json_or_absent(broken, tmp_path):
    (broken / "manifest.json").write_text("{")
    with pytest.raises(BinbertError, match="manifest.json: not valid JSON"):
        load_params(broken)
    with pytest.raises(BinbertError, match="does not exist"):
        load_params(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BinbertError, match="manifest.json: missing"):
        load_params(tmp_path / "empty")


def test_a_failed_export_leaves_the_directory_as_it_was(split_export, tmp_path, monkeypatch):
    """A full disk after a few ROM files, or a read-only file system: one line naming the
    directory, no partial files, and the export already there is untouched (it still loads)."""
    _, d = split_export
    params, meta = load_params(d)
    old = tmp_path / "old"
    shutil.copytree(d, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    real = Path.write_bytes
    written = []

    def full(self, data):
        if len(written) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(self)
        return real(self, data)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    for (where, name, fake), why in (((Path, "write_bytes", full), "No space left on device"),
                                     ((os, "mkdir", read_only), "Read-only file system")):
        for out in (tmp_path / "new", old):
            written.clear()
            with monkeypatch.context() as m:
                m.setattr(where, name, fake)
                with pytest.raises(BinbertError) as e:
                    save_params(params, out, meta)
            assert _one_line(e) == f"{out}: cannot write ({why})"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
        assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    save_params(params, old, meta)  # and a whole one over it: the same files
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_sequence_longer_than_the_maximum(split_export):
    _, d = split_export
    params, _ = load_params(d)
    ids = np.ones((1, params.max_len + 1), dtype=np.int64)
    with pytest.raises(BinbertError, match=f"sequence length {params.max_len + 1} exceeds"):
        run(params, ids)
    with pytest.raises(BinbertError, match="exceeds"):
        IntSim(params).logits(ids)


def test_token_ids_outside_the_vocabulary(split_export):
    _, d = split_export
    params, _ = load_params(d)
    with pytest.raises(BinbertError, match="input_ids outside"):
        params.compute(np.array([[1, params.embedding.vocab]]))


def test_linear_whose_k_does_not_match_its_input_names_the_layer(broken):
    """A query whose k is not the hidden width it reads is refused on load, naming the layer
    (unchecked, it would load and fail on the first sentence as an anonymous BinaryLinear)."""
    m = _manifest(broken)
    q = m["model"]["fields"]["layers"][1]["fields"]["query"]["fields"]
    hidden = q["k"]
    q["k"] = hidden + 8  # still one packed word: only the layer check can notice
    _save(broken, m)
    with pytest.raises(BinbertError, match=rf"EncoderParams\.layers\[1\]\.query: k={hidden + 8} "
                                           rf"does not match the hidden={hidden} features") as e:
        load_params(broken)
    _one_line(e)


# ---------------------------------------------------------------- the manifest's own digest

def test_an_edited_requantizer_shift_is_refused_as_a_hand_edit(broken):
    """A shift still valid for its op loads and computes other logits unless the model fields
    are covered by a digest: refused naming the manifest."""
    m = _manifest(broken)
    m["model"]["fields"]["layers"][0]["fields"]["qkv_in"]["fields"]["shift"] += 1
    _save(broken, m)
    with pytest.raises(BinbertError, match=r"manifest\.json: the model fields do not match their digest "
                                           r"\(edited by hand\?\): re-export") as e:
        load_params(broken)
    assert str(broken / "manifest.json") in _one_line(e)


def test_an_edited_rom_record_is_refused_as_a_hand_edit(broken):
    m = _manifest(broken)
    rec = m["roms"]["classifier.out.bias"]
    rec["signed"] = not rec["signed"]  # the same files and hashes, other values
    _save(broken, m)
    with pytest.raises(BinbertError, match=r"do not match their digest") as e:
        load_params(broken)
    _one_line(e)


def test_an_export_written_without_a_digest_still_loads(broken):
    old = ROOT / "tests/data/export-bi-tiny"
    assert "model_sha256" not in _manifest(old)
    params, _ = load_params(old)
    assert params.layers
    m = _manifest(broken)
    assert "model_sha256" in m
    del m["model_sha256"]
    _save(broken, m)
    assert load_params(broken)[0].num_labels == 2
