"""`binbert train` / `binbert eval` through the real CLI entry point."""
import errno
import json
import os
from pathlib import Path

import pytest

from binbert.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "models" / "tiny-test.yaml")
DATA = str(ROOT / "data" / "glue")


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--config", TINY, "--data", DATA, "--out", str(out), "--max-steps", "2",
               "--no-progress"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert set(printed) == set(summary)
    for stage in ("teacher", "ternary", "split", "binary"):
        assert summary[stage]["dev"] == printed[stage]
        assert summary[stage].get("steps", 0) <= 2
    rc = main(["eval", "--ckpt", str(out / "binary" / "final"), "--data", DATA])
    assert rc == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["stage"] == "binary" and ev["task"] == "sst2" and ev["examples"] == 32
    assert {k: ev[k] for k in summary["binary"]["dev"]} == summary["binary"]["dev"]
    # re-running is a resume: everything is complete, nothing trains again
    rc = main(["train", "--config", TINY, "--data", DATA, "--out", str(out), "--max-steps", "2",
               "--no-progress", "--stages", "teacher,split"])
    assert rc == 0


@pytest.mark.parametrize("argv,message", [
    (["train", "--config", "models/none.yaml"], "models/none.yaml: config file not found"),
    (["train", "--config", TINY, "--max-steps", "0"], "--max-steps must be a positive integer"),
    (["train", "--config", TINY, "--stages", "teacher,bogus"], "no stage named 'bogus'"),
    (["train", "--config", TINY, "--data", "/nonexistent/glue"],
     "data directory /nonexistent/glue does not exist"),
    (["eval", "--ckpt", "/nonexistent/ckpt"], "/nonexistent/ckpt: checkpoint directory does not "
                                              "exist"),
])
def test_errors_are_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("binbert: error: ") and message in err and "\n" not in err


def _train(out, capsys):
    rc = main(["train", "--config", TINY, "--data", DATA, "--out", str(out), "--max-steps", "2",
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return rc, err


def test_a_second_training_into_the_same_out_is_refused(tmp_path, capsys):
    from tests.sw.train.common import lock_held_elsewhere

    out = tmp_path / "run"
    with lock_held_elsewhere(out) as holder:
        rc, err = _train(out, capsys)
    assert rc == 2
    assert err.startswith(f"binbert: error: {out}: another binbert train is writing into it "
                          f"(pid {holder.pid} on ")
    assert err.endswith(f"; lock {out / 'train.lock'})")


def test_a_read_only_or_full_out_is_one_line_and_leaves_no_partial_files(tmp_path, capsys,
                                                                          monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    real_mkdir = os.mkdir
    ro = tmp_path / "ro"

    def mkdir(path, *args, **kwargs):  # a read-only mount at ro/
        if Path(path).is_relative_to(ro):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "mkdir", mkdir)
        rc, err = _train(ro / "run", capsys)
    assert (rc, err) == (2, f"binbert: error: {ro / 'run'}: cannot write (Read-only file system)")
    assert not ro.exists()

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    out = tmp_path / "full"
    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full)
        rc, err = _train(out, capsys)
    assert rc == 2 and err.startswith(f"binbert: error: {out / 'teacher'}/")
    assert err.endswith("/model.safetensors: cannot write (No space left on device)")
    left = [p.relative_to(out) for p in out.rglob("*")]
    assert left == [Path("teacher")]  # no half-written checkpoint, no lock


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A tiny-test teacher checkpoint (untrained: the row counts are what is checked)."""
    from dataclasses import replace

    from sw import backbone as bb
    from sw.config import load_config
    from sw.train import save_checkpoint

    cfg = load_config(TINY)
    cfg = replace(cfg, data=replace(cfg.data, dir=DATA))  # as `train --data DATA` saves it
    path = tmp_path_factory.mktemp("ckpt") / "teacher"
    save_checkpoint(path, bb.build_model(cfg.model, cfg.data.task), cfg,
                    {"stage": "teacher", "complete": True})
    return path, cfg


def _eval(capsys, *argv):
    assert main(["eval", *map(str, argv)]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_eval_scores_the_given_file_whole_and_honours_limit(teacher_ckpt, tmp_path, capsys):
    from sw.data import read_examples

    ckpt, cfg = teacher_ckpt
    dev = Path(DATA) / "SST-2" / "dev.tsv"
    total = len(read_examples(dev, "sst2"))
    other = tmp_path / "SST-2"
    other.mkdir()
    lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    (other / "dev.tsv").write_text("".join(lines[:101]), encoding="utf-8")  # header + 100 rows
    # the config's own dev set: its eval_limit, the rows training evaluated
    ev, err = _eval(capsys, "--ckpt", ckpt, "--data", DATA)
    assert ev["examples"] == cfg.data.eval_limit
    assert f"{dev}: {cfg.data.eval_limit} of {total} rows (data.eval_limit=" in err
    # another file: all of it
    ev, err = _eval(capsys, "--ckpt", ckpt, "--data", tmp_path)
    assert ev["examples"] == 100 and f"{other / 'dev.tsv'}: 100 of 100 rows (the whole file" in err
    # --limit without --integer, on either
    ev, err = _eval(capsys, "--ckpt", ckpt, "--limit", 7)
    assert ev["examples"] == 7 and f"7 of {total} rows (--limit 7)" in err
    ev, _ = _eval(capsys, "--ckpt", ckpt, "--data", tmp_path, "--limit", 40)
    assert ev["examples"] == 40
    assert main(["eval", "--ckpt", str(ckpt), "--limit", "0"]) == 2
    assert "--limit must be a positive integer, not 0" in capsys.readouterr().err
    # and how many of them were cut at the config's max_seq_len
    assert "eval: dev: " in err and f"cut at data.max_seq_len={cfg.data.max_seq_len} tokens" in err


def _tiny_config(tmp_path, **data) -> str:
    import yaml

    cfg = yaml.safe_load(Path(TINY).read_text())
    cfg["data"].update(data, dir=DATA)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_max_seq_len_beyond_the_position_table_stops_before_training(tmp_path, capsys):
    import yaml

    table = yaml.safe_load(Path(TINY).read_text())["model"]["tiny"]["max_position_embeddings"]
    config = _tiny_config(tmp_path, max_seq_len=table + 36, task="mrpc")
    rc = main(["train", "--config", config, "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"binbert: error: data.max_seq_len={table + 36} is longer than the model's "
                   f"position table of {table} tokens (model.tiny.max_position_embeddings): "
                   f"lower data.max_seq_len or raise that")
    assert not (tmp_path / "o" / "teacher" / "final").exists()


def test_training_log_reports_the_truncated_examples_per_split(tmp_path, capsys):
    from sw import backbone as bb
    from sw.config import load_config
    from sw.data import TRUNCATION_WARN, load_split

    cfg = load_config(TINY)
    d = cfg.data
    tok = bb.load_tokenizer(cfg.model.backbone)
    rc = main(["train", "--config", TINY, "--data", DATA, "--out", str(tmp_path / "o"),
               "--max-steps", "1", "--stages", "teacher", "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    for split, limit, seed in (("train", d.train_limit, cfg.train.seed), ("dev", d.eval_limit, None)):
        rows = load_split(DATA, d.task, split, limit, seed)
        cut = sum(len(tok(e.text_a, e.text_b)["input_ids"]) > d.max_seq_len for e in rows)
        line = next(ln for ln in err.splitlines() if ln.startswith(f"[data] {split}: "))
        assert line.startswith(f"[data] {split}: {cut} of {len(rows)} examples "
                               f"({cut / len(rows):.1%}) cut at data.max_seq_len={d.max_seq_len}")
        assert ("warning: more than 5% cut" in line) == (cut / len(rows) > TRUNCATION_WARN)
