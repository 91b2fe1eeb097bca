"""sw.train.stage: resume equals an uninterrupted run, the competing start evaluation, phases,
own learning rates, distillation from an earlier stage, fingerprints of augmented stages."""
import dataclasses
import json
import shutil

import pytest
import torch

from hw.errors import BinbertError
from sw.config import config_from_text
from sw.train.checkpoint import load_checkpoint, resolve_checkpoint
from sw.train.trainer import Trainer
from tests.sw.train.common import BIBERT, ROOT, _cfg, _rerun_binary, _sd


def test_resume_after_interruption_equals_uninterrupted(pipeline, tmp_path):
    base_out, _, _ = pipeline
    # 12 ternary steps = two 6-step phases; dev evaluations (with checkpoints) every 4 steps
    # and at phase ends, plus resumable checkpoints every 2 steps (train.checkpoint_every).
    # The first process stops after 3 steps (resumes from step 2: optimizer, scheduler, RNG,
    # data position mid-phase), the second after 7 more (global step 9, resumes from 8 in
    # the second phase).
    cfg = _cfg(ternary=12)
    cfg = dataclasses.replace(cfg, stages=cfg.stages[:2],
                              train=dataclasses.replace(cfg.train, checkpoint_every=2))
    ref_out, cut_out = tmp_path / "ref", tmp_path / "cut"
    for o in (ref_out, cut_out):
        shutil.copytree(base_out / "teacher", o / "teacher")
    Trainer(cfg, ref_out, progress=False).run()
    for stop in (3, 7):
        tr = Trainer(cfg, cut_out, progress=False)
        tr._interrupt_at = stop  # steps run by this process
        with pytest.raises(KeyboardInterrupt):
            tr.run()
        assert resolve_checkpoint(cut_out / "ternary" / "last") is not None
    last = json.loads((cut_out / "ternary" / "last" / "state.json").read_text())
    assert (last["phase"], last["step"]) == (1, 2)
    Trainer(cfg, cut_out, progress=False).run()
    a, sa, _ = load_checkpoint(ref_out / "ternary" / "final")
    b, sb, _ = load_checkpoint(cut_out / "ternary" / "final")
    da, db = a.state_dict(), b.state_dict()
    assert da.keys() == db.keys()
    for k in da:
        assert torch.equal(da[k], db[k]), k
    ha = json.loads((ref_out / "ternary" / "metrics.json").read_text())["history"]
    hb = json.loads((cut_out / "ternary" / "metrics.json").read_text())["history"]
    assert ha == hb


def test_binary_stage_starts_with_a_competing_evaluation_of_the_split_model(pipeline, tmp_path):
    base_out, tr, summary = pipeline
    hist = json.loads((base_out / "binary" / "metrics.json").read_text())["history"]
    evals = [h for h in hist if "dev" in h]
    assert evals[0] == {"step": 0, "phase": "start", "dev": summary["split"]["dev"]}
    eligible = [h["dev"]["main"] for h in evals if h["phase"] in ("start", "prediction")]
    assert summary["binary"]["dev"]["main"] == max(eligible)
    # stages that start from the teacher have nothing to compare against
    assert all(h.get("phase") != "start"
               for h in json.loads((base_out / "ternary" / "metrics.json").read_text())["history"])
    # a fine-tuning that cannot move (lr 1e-12: every evaluation ties with the start) hands on
    # the split model itself
    out, s = _rerun_binary(base_out, tmp_path, learning_rate=1e-12)
    assert s["binary"]["best_step"] == 0 and s["binary"]["dev"] == s["split"]["dev"]
    split, _, _ = load_checkpoint(out / "split" / "final")
    binary, _, _ = load_checkpoint(out / "binary" / "final")
    a, b = _sd(split), _sd(binary)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ce_dmd_warms_up_on_the_task_loss_then_distils(tmp_path):
    """loss ce_dmd: the first intermediate_fraction of the steps train on the labels alone, the
    rest on BiBERT's distillation (DMD + hidden + prediction)."""
    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "{name: bibert, type: bibert, steps: 3}",
        "{name: bibert, type: bibert, steps: 4, loss: ce_dmd, intermediate_fraction: 0.25}")
    cfg = config_from_text(text.replace("threads: 1}", "threads: 1, log_every: 1}"))
    Trainer(cfg, tmp_path, progress=False).run()
    m = json.loads((tmp_path / "bibert" / "metrics.json").read_text())
    assert m["summary"]["phases"] == [{"loss": "ce", "steps": 1}, {"loss": "dmd", "steps": 3}]
    logged = [h for h in m["history"] if "loss" in h]
    assert [h["phase"] for h in logged] == ["ce", "dmd", "dmd", "dmd"]
    assert "dmd" not in logged[0] and all(h["dmd"] > 0 for h in logged[1:])


@pytest.mark.parametrize("quant,lr_key,suffix,count,start", [
    ("act_threshold", "threshold_lr", "act_quant.beta", 2 * 3 + 1, 0.0),  # Q/K/V in, context, FFN1 in; pooler
    ("learned_scale", "scale_lr", "weight_quant.gain", 2 * 6 + 1, 1.0),  # Q, K, V, O, FFN1, FFN2; pooler
    ("attention_threshold", "threshold_lr", "score_threshold", 2, 0.0),  # one per layer, per head
])
def test_own_learning_rates_train_thresholds_and_gains(tmp_path, quant, lr_key, suffix, count, start):
    """quant act_threshold / learned_scale / attention_threshold: the student has per-feature
    thresholds / per-row weight-scale gains / per-head score thresholds; threshold_lr / scale_lr
    give them their own learning rate (the stage's moves them by at most steps x lr under Adam)."""
    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue"))
    moved = {}
    for lr in (None, 0.05):
        extra = "" if lr is None else f", {lr_key}: {lr}"
        cfg = config_from_text(text.replace(
            "{name: bibert, type: bibert, steps: 3}",
            "{name: bibert, type: bibert, steps: 3, quant: {weight: bwn, act: sign, attention: bi, "
            f"weight_per_row: true, {quant}: true}}{extra}}}"))
        Trainer(cfg, tmp_path / str(lr), progress=False).run()
        model, _, _ = load_checkpoint(tmp_path / str(lr) / "bibert" / "final")
        learned = [p for n, p in model.named_parameters() if n.endswith(suffix)]
        assert len(learned) == count
        moved[lr] = max(float((p.detach() - start).abs().max()) for p in learned)
    assert moved[None] <= 3 * 1.0e-3 * 1.01 < 0.01 < moved[0.05]
    with pytest.raises(BinbertError, match=rf"stages\[1\] \(bibert\).{lr_key} needs quant .*{quant}"):
        config_from_text(text.replace("{name: bibert, type: bibert, steps: 3}",
                                      f"{{name: bibert, type: bibert, steps: 3, {lr_key}: 0.01}}"))


def test_stage_distils_from_an_earlier_stage_it_names(tmp_path):
    """teacher: <stage> (BiT's multi-step distillation): the stage learns from that stage's
    frozen model instead of the teacher's. A student that starts as a copy of its teacher stage
    (init: previous, same quantization, no dropout) matches every intermediate state at step 1:
    the loss is exactly 0 there, against the full-precision teacher it is not."""
    base = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "train: {", "train: {log_every: 1, ").replace(
        "{name: bibert, type: bibert, steps: 3}",
        "{name: b1, type: bibert, steps: 2, dropout: 0.0}\n"
        "  - {name: b2, type: bibert, steps: 1, dropout: 0.0, init: previous, loss: intermediate"
        "TEACHER}")
    first = {}
    for teacher in (None, "b1"):
        text = base.replace("TEACHER", "" if teacher is None else f", teacher: {teacher}")
        out = tmp_path / str(teacher)
        tr = Trainer(config_from_text(text), out, progress=False)
        tr.run()
        hist = json.loads((out / "b2" / "metrics.json").read_text())["history"]
        first[teacher] = [h for h in hist if "loss" in h][0]
        assert set(tr.stage_models) == ({"b1"} if teacher else set())
    assert first["b1"]["loss"] == 0.0 and first["b1"]["ffn"] == 0.0
    assert first[None]["loss"] > 0.01
    # the checkpoint knows its teacher: the same directory under another teacher is refused
    with pytest.raises(BinbertError, match=r"b2.*does not match the config \(differs in "
                                           r"stages\[2\]\.teacher\)"):
        Trainer(config_from_text(base.replace("TEACHER", ", teacher: teacher")),
                tmp_path / "None", progress=False).run()


def test_stage_opts_out_of_augmentation(tmp_path):
    """``augment: false``: that stage distils on the original rows, so it is the same stage as
    in a run without data.augment and shares its checkpoint; later stages still read variants."""
    base = (ROOT / "models" / "tiny-test.yaml").read_text().split("  - {name: ternary")[0]
    plain = base + ("  - {name: ternary, type: ternary, width: 0.5, epochs: 1}\n"
                    "  - {name: bibert, type: bibert, epochs: 1, loss: prediction}\n")
    aug = plain.replace("dir: data/glue", f"dir: {ROOT / 'data/glue'}\n  augment: {{copies: 3}}"
                        ).replace("epochs: 1}\n  - {name: bibert", "epochs: 1, augment: false}\n"
                                  "  - {name: bibert")
    plain = plain.replace("dir: data/glue", f"dir: {ROOT / 'data/glue'}")
    tr = Trainer(config_from_text(aug), tmp_path, progress=False)
    s = tr.run()
    assert s["ternary"]["steps"] == 8  # 64 original rows / batch 8
    assert s["bibert"]["steps"] == -(-len(tr.distill_ds()) // 8) > 8
    shared = Trainer(config_from_text(plain), tmp_path, progress=False)
    assert shared._check_ckpt(tmp_path / "ternary" / "final", 1)["complete"]
    # the bibert stage read the variants: not the plain run's stage
    with pytest.raises(BinbertError, match=r"bibert/final: .*differs in data\.augment"):
        shared._check_ckpt(tmp_path / "bibert" / "final", 2)
    # the other stage opting out is another run
    other = aug.replace(", augment: false}", "}").replace("loss: prediction}",
                                                           "loss: prediction, augment: false}")
    with pytest.raises(BinbertError, match=r"bibert/final: .*differs in augmented"):
        Trainer(config_from_text(other), tmp_path, progress=False)._check_ckpt(
            tmp_path / "bibert" / "final", 2)
