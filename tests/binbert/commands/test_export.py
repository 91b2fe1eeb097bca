"""``binbert export`` and ``binbert eval-integer`` end to end on a checkpoint directory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.sw.chain_models import tiny_quant
from binbert.cli import main

ROOT = Path(__file__).resolve().parents[3]
DATA = str(ROOT / "data/glue")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint directory (sw.train.save_checkpoint) of a split tiny model on SST-2 (MiniLM vocab)."""
    from sw.backbone import minilm_path
    from sw.config import load_config
    from sw.train import save_checkpoint

    vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
    cfg = load_config(ROOT / "models/tiny-test.yaml")
    model = tiny_quant("split", vocab=vocab, max_pos=cfg.model.tiny.max_position_embeddings)
    path = tmp_path_factory.mktemp("ckpt") / "binary"
    save_checkpoint(path, model, cfg, {"stage": "binary", "complete": True})
    return path


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    return out


def test_export_command_writes_what_the_checkpoint_folds_to(ckpt, exported):
    from sw.export import build_params
    from hw.golden.export_format import load_params
    from sw.train import load_checkpoint

    params, meta = load_params(exported)
    assert meta["stage"] == "binary" and meta["task"] == "sst2" and meta["checkpoint"] == str(ckpt)
    model, _, _ = load_checkpoint(ckpt)
    direct = build_params(model.eval())
    ids = np.random.default_rng(0).integers(0, 1000, (4, 20))
    assert np.array_equal(params.compute(ids), direct.compute(ids))


def test_eval_integer_reports_all_three_paths(ckpt, exported, capsys, tmp_path):
    rc, out, err = _run(capsys, "eval-integer", "--ckpt", ckpt, "--export", exported, "--data", DATA,
                        "--limit", 40, "--batch-size", 16, "--json", tmp_path / "r.json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep == json.loads((tmp_path / "r.json").read_text())
    assert rep["examples"] == 40 and rep["task"] == "sst2"
    for k in ("fake_quant", "golden", "intsim"):
        assert 0.0 <= rep[k]["acc"] <= 1.0 and rep[k]["main"] == rep[k]["acc"]
    assert rep["golden_vs_intsim"]["agreement"] == 1.0 and rep["golden_vs_intsim"]["max_abs_logit_diff"] == 0
    assert rep["golden"] == rep["intsim"]
    assert 0.0 <= rep["golden_vs_fake_quant"]["agreement"] <= 1.0


def test_eval_dash_dash_integer_is_eval_integer(ckpt, exported, capsys):
    rc, out, err = _run(capsys, "eval-integer", "--ckpt", ckpt, "--export", exported, "--data", DATA,
                        "--limit", 16, "--batch-size", 16)
    assert rc == 0, err
    rc2, out2, err2 = _run(capsys, "eval", "--integer", "--ckpt", ckpt, "--export", exported,
                           "--data", DATA, "--limit", 16, "--batch-size", 16)
    assert rc2 == 0, err2
    a, b = json.loads(out), json.loads(out2)
    a.pop("seconds"), b.pop("seconds")  # wall times differ between runs; everything else must not
    assert a == b


def test_eval_integer_without_export_dir_exports_on_the_fly(ckpt, exported, capsys):
    base = ["eval-integer", "--ckpt", ckpt, "--data", DATA, "--limit", 16, "--no-intsim"]
    rc, out, _ = _run(capsys, *base)
    rc2, out2, _ = _run(capsys, *base, "--export", exported)
    assert rc == rc2 == 0
    a, b = json.loads(out), json.loads(out2)
    assert "intsim" not in a and a["golden"] == b["golden"]
    assert a["golden_vs_fake_quant"] == b["golden_vs_fake_quant"]


def _fails(errno_):
    """A fake of ``os.fsync`` / ``os.mkdir`` / ``Path.write_bytes`` failing with ``errno_``
    (run as root here: chmod cannot make a directory read-only, nor a disk full)."""
    import os

    def fake(path=None, *args, **kwargs):
        raise OSError(errno_, os.strerror(errno_))
    return fake


def test_read_only_or_full_outputs_are_one_line_and_leave_nothing_half_written(
        ckpt, exported, tmp_path, capsys, monkeypatch):
    import errno
    import os

    before = sorted(p.name for p in tmp_path.iterdir())
    for where, name, code, why in ((os, "mkdir", errno.EROFS, "Read-only file system"),
                                   (Path, "write_bytes", errno.ENOSPC, "No space left on device")):
        out = tmp_path / "x"
        with monkeypatch.context() as m:
            m.setattr(where, name, _fails(code))
            rc, _, err = _run(capsys, "export", ckpt, "--out", out)
        assert (rc, err.strip()) == (2, f"binbert: error: {out}: cannot write ({why})")
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no export, no temporary
    # eval-integer --json: the report is printed, the file keeps what it held
    report = tmp_path / "r.json"
    report.write_text("old\n")
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _fails(errno.ENOSPC))
        rc, out, err = _run(capsys, "eval-integer", "--ckpt", ckpt, "--export", exported,
                            "--data", DATA, "--limit", 8, "--no-intsim", "--json", report)
    assert rc == 2 and json.loads(out)["examples"] == 8
    assert err.strip().splitlines()[-1] == (f"binbert: error: {report}: cannot write (No space "
                                            f"left on device)")
    assert report.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["r.json"])


@pytest.mark.parametrize("argv,match", [
    (["export", "{tmp}/missing", "--out", "{tmp}/x"], "does not exist"),
    (["export", "{ckpt}", "--out", "{tmp}/x", "--res-bits", "8", "--res-frac", "8"], "res_frac=8"),
    (["export", "{ckpt}", "--out", "{tmp}/x", "--lut-bits", "1"], "lut_bits"),
    (["eval-integer", "--ckpt", "{ckpt}", "--limit", "0"], "--limit must be a positive"),
    (["eval-integer", "--ckpt", "{ckpt}", "--export", "{tmp}/none", "--data", DATA], "does not exist"),
])
def test_cli_errors_are_one_line(ckpt, tmp_path, capsys, argv, match):
    argv = [a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("binbert: error:") and match in lines[0]


def test_a_full_precision_checkpoint_is_refused_naming_path_and_stage(tmp_path, capsys):
    """The teacher stage has nothing binary to export: every command that exports a checkpoint
    says which checkpoint and which stage."""
    from sw import backbone as bb
    from sw.config import load_config
    from sw.train import save_checkpoint

    cfg = load_config(ROOT / "models/tiny-test.yaml")
    teacher = tmp_path / "teacher"
    save_checkpoint(teacher, bb.build_model(cfg.model, cfg.data.task), cfg,
                    {"stage": "teacher", "complete": True})
    for argv in (["export", teacher, "--out", tmp_path / "x"],
                 ["eval-integer", "--ckpt", teacher, "--data", DATA, "--limit", 4]):
        rc, _, err = _run(capsys, *argv)
        assert rc == 2
        assert err.strip() == (f"binbert: error: {teacher} (stage 'teacher'): model is not "
                               f"quantized (quantize_bert): nothing to export to binary hardware")


def test_eval_integer_refuses_the_export_of_another_checkpoint(ckpt, exported, tmp_path, capsys):
    """Another model's export used to be scored (agreement 0.0) without a word: now one line
    naming both directories."""
    from sw.backbone import minilm_path
    from sw.config import load_config
    from sw.train import save_checkpoint

    cfg = load_config(ROOT / "models/tiny-test.yaml")
    vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
    other = tmp_path / "other"
    save_checkpoint(other, tiny_quant("split", seed=1, vocab=vocab, max_pos=cfg.model.tiny.max_position_embeddings),
                    cfg, {"stage": "binary", "complete": True})
    assert json.loads((exported / "manifest.json").read_text())["meta"]["checkpoint_sha256"]
    rc, out, err = _run(capsys, "eval-integer", "--ckpt", other, "--export", exported, "--data", DATA,
                        "--limit", 8, "--no-intsim")
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith("binbert: error:")
    assert str(other) in lines[0] and str(exported) in lines[0] and "another checkpoint" in lines[0]
