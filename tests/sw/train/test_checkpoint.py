"""sw.train.checkpoint: checkpoints rebuild their models, refuse a config or structure that does
not match, recover an interrupted swap; the head maps of pruned students and teachers."""
import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hw.errors import BinbertError
from sw.train.checkpoint import TRAINING, load_checkpoint, save_checkpoint
from sw.train.trainer import Trainer, evaluate
from tests.sw.train.common import _cfg


def test_checkpoints_rebuild_the_model(pipeline):
    out, tr, summary = pipeline
    q = {}
    for name in ("teacher", "ternary", "split", "binary"):
        model, state, cfg = load_checkpoint(out / name / "final")
        q[name] = json.loads((out / name / "final" / "quant.json").read_text())
        got = evaluate(model, tr.dev_ds, "sst2")
        assert got == summary[name]["dev"], name
    assert q["teacher"] is None
    assert q["ternary"]["weight"] == "twn" and q["ternary"]["act"] == "lsq"
    assert q["split"]["weight"] == "bwn" and q["split"]["split"]
    assert q["binary"] == q["split"]
    s = json.loads((out / "ternary" / "final" / "structure.json").read_text())
    t = json.loads((out / "teacher" / "final" / "structure.json").read_text())
    assert [l["heads"] * 2 for l in s["layers"]] == [l["heads"] for l in t["layers"]]
    assert [l["intermediate"] * 2 for l in s["layers"]] == [l["intermediate"] for l in t["layers"]]
    # the pruned student remembers which teacher head each of its heads came from, through
    # quantization, splitting and reloading (distillation matches heads one to one)
    n_t = t["layers"][0]["heads"]
    for name in ("ternary", "split", "binary"):
        st = json.loads((out / name / "final" / "structure.json").read_text())
        assert [len(h) for h in st["teacher_heads"]] == [l["heads"] for l in s["layers"]]
        assert all(0 <= i < n_t and len(set(h)) == len(h) for h in st["teacher_heads"] for i in h)
    assert "teacher_heads" not in t


def test_checkpoint_config_mismatch(pipeline, tmp_path):
    base_out, _, _ = pipeline
    out = tmp_path / "o"
    shutil.copytree(base_out / "teacher", out / "teacher")
    cfg = _cfg()
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=8))
    with pytest.raises(BinbertError, match=r"teacher/final: checkpoint does not match the config "
                                           r"\(differs in train.seed\)"):
        Trainer(other, out, progress=False).run()
    # a checkpoint whose weights do not fit its recorded structure
    bad = tmp_path / "bad"
    shutil.copytree(base_out / "ternary" / "final", bad)
    (bad / "quant.json").write_text(json.dumps(None))
    with pytest.raises(BinbertError, match="does not match its config"):
        load_checkpoint(bad)
    with pytest.raises(BinbertError, match="not a complete binbert checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(BinbertError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")


def test_interrupted_directory_swap_is_recovered(pipeline, tmp_path):
    base_out, tr, summary = pipeline
    d = tmp_path / "teacher"
    shutil.copytree(base_out / "teacher" / "final", d.with_name("teacher.old"))
    (tmp_path / "teacher.tmp").mkdir()  # a half-written new version
    model, state, _ = load_checkpoint(d)
    assert state["stage"] == "teacher"


def test_a_failed_checkpoint_write_leaves_the_one_before_whole(pipeline, tmp_path, monkeypatch):
    """A full disk or a read-only file system while saving: a one-line error naming the file,
    no half-written directory left, and the checkpoint saved before still loads."""
    import safetensors.torch
    from safetensors import SafetensorError

    base_out, _, _ = pipeline
    model, state, cfg = load_checkpoint(base_out / "teacher" / "final")
    ck = tmp_path / "last"
    save_checkpoint(ck, model, cfg, state, {"step": 1})

    def full(*args, **kwargs):  # what safetensors raises on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    def partial(obj, f):  # torch.save on a full disk: part of the file, no errno
        Path(f).write_bytes(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    cases = [
        ((safetensors.torch, "save_file", full), ck / "model.safetensors", "No space left on device"),
        ((torch, "save", partial), ck / TRAINING, "No space left on device"),
        ((os, "mkdir", read_only), ck, "Read-only file system"),
    ]
    for (where, name, fake), path, why in cases:
        with monkeypatch.context() as m:
            m.setattr(where, name, fake)
            m.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=0))
            with pytest.raises(BinbertError) as err:
                save_checkpoint(ck, model, cfg, {**state, "step": 2}, {"step": 2})
        assert str(err.value) == f"{path}: cannot write ({why})"
        assert [p.name for p in tmp_path.iterdir()] == ["last"]
        _, got, _ = load_checkpoint(ck)
        assert got == state
        assert torch.load(ck / TRAINING, weights_only=False) == {"step": 1}


def test_distill_head_map_follows_a_pruned_teacher_stage():
    from sw.train.checkpoint import HEAD_MAP, distill_head_map

    fp, t, s = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
    setattr(s, HEAD_MAP, [[3, 1], [0, 2]])
    assert distill_head_map(s, fp, fp) == [[3, 1], [0, 2]]  # the teacher stage itself
    assert distill_head_map(s, t, fp) == [[3, 1], [0, 2]]  # a full-width stage: same heads
    setattr(t, HEAD_MAP, [[1, 3], [2, 0]])  # the same heads, pruned in another order
    assert distill_head_map(s, t, fp) == [[1, 0], [1, 0]]
    setattr(t, HEAD_MAP, [[1, 3], [2, 1]])
    with pytest.raises(BinbertError, match=r"distill: layer 1 student heads \[0\] were pruned "
                                           r"from the teacher stage's model"):
        distill_head_map(s, t, fp)
