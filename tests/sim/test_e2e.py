"""sim.e2e (`binbert sim --layer model`): every layer of an export in RTL, chained, against the
golden model; bad input is a one-line BinbertError before any build.

The chain runs a tiny 2-layer BiBERT export (tests/sw/chain_models.py, the MiniLM vocabulary so
real SST-2 dev sentences tokenize) on Icarus, whose builds of such small layers take seconds;
the trained demo model runs through `make e2e` (Verilator, minutes).
"""
from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from hw.errors import BinbertError
from sim import e2e
from sim.runner import SimulationError
from binbert.cli import main

SEED = int(os.environ.get("BINBERT_SIM_SEED", "20240611"))


@pytest.fixture(scope="module")
def export2(tmp_path_factory):
    """A 2-layer quantized BERT (BiBERT W1A1) with the MiniLM vocabulary, exported."""
    from tests.sw.chain_models import exported_tiny

    return exported_tiny(tmp_path_factory, "bi", vocab=30522, hidden=16, layers=2, heads=2, inter=32,
                         max_pos=16)


def _cli_error(argv, capsys) -> str:
    assert main(["sim", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("binbert: error: ") and len(err.splitlines()) == 1
    return err


# ------------------------------------------------------------------ bad input, before any build

def test_needs_ckpt(capsys):
    assert "--layer model needs --ckpt" in _cli_error(["--layer", "model", "--sim", "icarus"], capsys)


def test_model_only_flags(capsys):
    assert "--json applies to --layer model only" in _cli_error(
        ["--layer", "encoder", "--sim", "icarus", "--json", "x.json"], capsys)


def test_too_many_sentences(export2, capsys, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "build_block", _no_build)
    err = _cli_error(["--layer", "model", "--sim", "icarus", "--ckpt", str(export2), "--sentences", "100000"], capsys)
    assert "--sentences 100000: the sst2 dev set has only" in err


def test_seq_len_beyond_model(export2, capsys, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "build_block", _no_build)
    err = _cli_error(["--layer", "model", "--sim", "icarus", "--ckpt", str(export2), "--seq-len", "17"], capsys)
    assert "seq_len 17: longer than the model's maximum of 16 tokens" in err
    # the single-layer path refuses it the same way instead of clipping it
    err = _cli_error(["--layer", "encoder", "--sim", "icarus", "--ckpt", str(export2), "--seq-len", "17"], capsys)
    assert "seq_len 17: longer than the model's maximum of 16 tokens" in err


def test_sentences_that_do_not_fit(export2, capsys, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "build_block", _no_build)
    # 3 tokens hold only [CLS] x [SEP]: fewer one-word sentences than asked for
    err = _cli_error(["--layer", "model", "--sim", "icarus", "--ckpt", str(export2), "--seq-len", "3",
                      "--sentences", "500"], capsys)
    assert "--sentences 500: only" in err and "fit 3 tokens" in err


def test_manifest_mismatch(export2, tmp_path, capsys, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "build_block", _no_build)
    bad = tmp_path / "export"
    shutil.copytree(export2, bad)
    m = json.loads((bad / "manifest.json").read_text())
    name = sorted(m["roms"])[0]
    m["roms"][name]["depth"] += 1  # the manifest no longer describes its ROM files
    (bad / "manifest.json").write_text(json.dumps(m))
    err = _cli_error(["--layer", "model", "--sim", "icarus", "--ckpt", str(bad)], capsys)
    assert "manifest.json" in err and name in err


def _mrpc_export(tmp_path_factory, max_pos: int):
    """A tiny 2-layer BiBERT export (MiniLM vocabulary) for MRPC, whose sentence pairs are all
    longer than the 16 tokens that fit SST-2 sentences."""
    from sw.export import export_model
    from tests.sw.chain_models import tiny_quant

    out = tmp_path_factory.mktemp(f"export-mrpc-{max_pos}")
    model = tiny_quant("bi", vocab=30522, hidden=16, layers=2, heads=2, inter=32, max_pos=max_pos)
    export_model(model, out, meta={"backbone": "minilm", "task": "mrpc"})
    return out


@pytest.fixture(scope="module")
def mrpc64(tmp_path_factory):
    return _mrpc_export(tmp_path_factory, 64)


def test_the_default_seq_len_fits_the_tasks_sentences(mrpc64, export2):
    # SST-2 keeps 16 tokens; MRPC gets the shortest length that fits the sentences asked for
    assert e2e.prepare(export2, sentences=2)["seq_len"] == 16
    prep = e2e.prepare(mrpc64, sentences=2)
    seq_len, valid = prep["seq_len"], prep["sentences"]["valid"]
    assert 16 < seq_len <= 64 and len(valid) == 2 and valid.sum(axis=1).max() == seq_len
    with pytest.raises(BinbertError, match=rf"fit {seq_len - 1} tokens .*\(--seq-len {seq_len} would fit 2\)$"):
        e2e.prepare(mrpc64, sentences=2, seq_len=seq_len - 1)


def test_no_sentence_fits_says_which_seq_len_would(mrpc64, tmp_path_factory, capsys, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "build_block", _no_build)
    err = _cli_error(["--layer", "model", "--sim", "icarus", "--ckpt", str(mrpc64), "--seq-len", "16",
                      "--sentences", "2"], capsys)
    m = re.search(r"only 0 of the \d+ mrpc dev sentences fit 16 tokens .*\(--seq-len (\d+) would fit 2\)$", err)
    assert m, err
    assert e2e.prepare(mrpc64, sentences=2, seq_len=int(m.group(1)))["seq_len"] == int(m.group(1))
    # a position table too short for any pair: the default stops at it, the error says so
    err = _cli_error(["--layer", "model", "--sim", "icarus", "--ckpt", str(_mrpc_export(tmp_path_factory, 16))],
                     capsys)
    assert re.search(r"fit 16 tokens of this model's vocabulary \(\d+ fit its position table of 16 tokens\)$",
                     err), err


def _no_build(*a, **k):
    raise AssertionError("bad input must fail before any build")


# ------------------------------------------------------------------ pieces

def test_head_is_the_golden_tail(export2):
    from sim.layers import dev_sentences
    from sw.export import load_export

    params, meta, backbone = load_export(export2)
    d = dev_sentences(params, meta, backbone, seq_len=16, count=5, exact=True)
    states = params.hidden_states(d["ids"], d["valid"], d["types"])
    assert np.array_equal(params.head(states[-1]), params.compute(d["ids"], d["valid"], d["types"]))
    assert len(d["labels"]) == 5 and d["valid"][:, 0].all() and list(d["index"]) == sorted(d["index"])


def test_first_mismatch():
    a = np.zeros((2, 3, 4), dtype=np.int64)
    b = a.copy()
    assert e2e.first_mismatch(a, b) is None
    b[1, 2, 3] = 5
    b[1, 0, 1] = -1
    assert e2e.first_mismatch(a, b) == (1, 0, 1)


# ------------------------------------------------------------------ the chain on Icarus

def test_chain_on_icarus(export2, tmp_path):
    out = tmp_path / "e2e.json"
    s = e2e.run_model(export2, sim="icarus", sentences=3, seed=SEED, json_path=out)
    assert s["status"] == "pass" and json.loads(out.read_text())["status"] == "pass"
    assert [row["layer"] for row in s["layers"]] == [0, 1]
    for row in s["layers"]:
        assert row["bit_exact"] and row["beats_out"] == row["beats_in"]
        # measured on the sentences themselves (back to back)
        assert row["cycles_per_sequence"] <= 1.10 * row["cycles_per_sequence_model"]
    assert s["logits_equal"] and s["predictions_equal"]
    assert [p["rtl"] for p in s["predictions"]] == [p["golden"] for p in s["predictions"]]
    assert s["accuracy_rtl"] == pytest.approx(np.mean([p["rtl"] == p["label"] for p in s["predictions"]]))
    with np.load(s["hidden_states"]) as f:  # the RTL's hidden states, kept next to the summary
        assert sorted(f.files) == ["layer0", "layer1"] and f["layer1"].shape == (3, 16, 16)


def test_chain_names_the_first_difference(export2, tmp_path, monkeypatch):
    """A golden hidden state that the RTL cannot match: the run stops at that layer, naming the
    sentence, token and feature, and the summary says so."""
    real = e2e.prepare

    def tampered(*a, **k):
        prep = real(*a, **k)
        prep["states"][1][2, 1, 5] += 1   # layer 0's output, sentence 2, token 1, feature 5
        return prep

    monkeypatch.setattr(e2e, "prepare", tampered)
    out = tmp_path / "e2e.json"
    with pytest.raises(e2e.ModelMismatch, match=r"layer 0: sentence 2 \(dev #\d+\) token 1 feature 5: RTL -?\d+ "
                                                  r"!= golden -?\d+ \(1 elements differ\)"):
        e2e.run_model(export2, sim="icarus", sentences=3, seed=SEED, json_path=out)
    s = json.loads(out.read_text())
    assert s["status"] == "fail" and "layer 0: sentence 2" in s["error"]
    assert issubclass(e2e.ModelMismatch, SimulationError)


def test_cli_model_failure_exits_1(export2, monkeypatch, capsys):
    def broken(*a, **k):
        raise e2e.ModelMismatch("layer 1: sentence 0 (dev #3) token 2 feature 7: RTL 5 != golden 4")

    monkeypatch.setattr(e2e, "run_model", broken)
    assert main(["sim", "--layer", "model", "--sim", "icarus", "--ckpt", str(export2)]) == 1
    assert "FAIL: layer 1: sentence 0 (dev #3) token 2" in capsys.readouterr().out


def test_bad_counts():
    with pytest.raises(BinbertError, match="--jobs 0: must be >= 1"):
        e2e.check_model_args("x", sentences=1, seq_len=4, jobs=0)
    with pytest.raises(BinbertError, match="--sentences 0: must be >= 1"):
        e2e.check_model_args("x", sentences=0, seq_len=4, jobs=1)
