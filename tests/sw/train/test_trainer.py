"""sw.train.trainer on tiny random BERTs (MiniLM vocabulary): every stage, the students each
stage builds (pruned, split, adaptive, continued, dropout), augmented distillation data."""
import dataclasses
import json
import shutil

import pytest
import torch

from hw.errors import BinbertError
from sw.config import config_from_text, load_config
from sw.train.checkpoint import load_checkpoint, resolve_checkpoint
from sw.train.trainer import Trainer, evaluate
from tests.sw.train.common import BIBERT, ROOT, TINY, _cfg, _dev, _rerun_binary


def test_every_stage_runs_and_checkpoints(pipeline):
    out, tr, summary = pipeline
    for name in ("teacher", "ternary", "split", "binary"):
        d = out / name
        assert resolve_checkpoint(d / "final") == d / "final"
        assert not (d / "last").exists()  # resumable state is dropped once final exists
        for f in ("model.safetensors", "bert_config.json", "structure.json", "quant.json",
                  "config.yaml", "state.json"):
            assert (d / "final" / f).is_file(), (name, f)
        assert (d / "metrics.json").is_file() and (d / "curve.png").stat().st_size > 0
        state = json.loads((d / "final" / "state.json").read_text())
        assert state["stage"] == name and state["complete"]
    assert (out / "summary.json").is_file() and (out / "curve.png").is_file()
    hist = json.loads((out / "ternary" / "metrics.json").read_text())["history"]
    assert {h["phase"] for h in hist} == {"intermediate", "prediction"}
    assert any("emb" in h for h in hist) and any("pred" in h for h in hist)


def test_split_stage_preserves_the_ternary_function(pipeline):
    out, tr, summary = pipeline
    ternary, _, _ = load_checkpoint(out / "ternary" / "final")
    split, _, _ = load_checkpoint(out / "split" / "final")
    batch = tr.dev_ds.collate(list(range(len(tr.dev_ds))))
    batch.pop("labels")
    with torch.no_grad():
        a = ternary.eval()(**batch).logits
        b = split.eval()(**batch).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_stages_option(pipeline, tmp_path):
    base_out, _, _ = pipeline
    cfg = _cfg()
    out = tmp_path / "o"
    with pytest.raises(BinbertError, match="stage 'teacher' has no checkpoint .* run it first"):
        Trainer(cfg, out, stages=["ternary"], progress=False).run()
    shutil.copytree(base_out / "teacher", out / "teacher")
    s = Trainer(cfg, out, stages=["ternary"], progress=False).run()
    assert set(s) == {"teacher", "ternary", "_wall_s"}
    assert not (out / "split").exists()
    with pytest.raises(BinbertError, match="no stage named 'tern'"):
        Trainer(cfg, out, stages=["tern"], progress=False)


def test_binary_stage_after_split_may_switch_to_integer_rounding(pipeline, tmp_path):
    base_out, _, _ = pipeline
    out, _ = _rerun_binary(base_out, tmp_path, quant={"act_integer": True})
    q = {n: json.loads((out / n / "final" / "quant.json").read_text())
         for n in ("split", "binary")}
    # the checkpoint records the rounding it was trained with; the format stays the split one
    assert q["binary"] == {**q["split"], "act_integer": True} and not q["split"]["act_integer"]
    model, _, _ = load_checkpoint(out / "binary" / "final")
    acts = [m for m in model.modules() if type(m).__name__ == "ActQuantizer"]
    assert acts and all(m.integer for m in acts)


@pytest.mark.parametrize("task", ["mrpc", "stsb"])
def test_bibert_and_pair_tasks(tmp_path, task):
    cfg = config_from_text(BIBERT.replace("TASK", task).replace("DATA", str(ROOT / "data/glue")))
    s = Trainer(cfg, tmp_path, progress=False).run()
    q = json.loads((tmp_path / "bibert" / "final" / "quant.json").read_text())
    assert (q["weight"], q["act"], q["attention"]) == ("bwn", "sign", "bi")
    hist = json.loads((tmp_path / "bibert" / "metrics.json").read_text())["history"]
    assert any("dmd" in h and h["dmd"] > 0 for h in hist)
    main = {"mrpc": "acc", "stsb": "pearson"}[task]
    assert s["bibert"]["dev"]["main"] == s["bibert"]["dev"][main]


def test_stage_dropout_reaches_the_student_only(tmp_path):
    """A stage's dropout sets every dropout of its student (and its checkpoint), not the
    teacher's: the binarised BiBERT student trains without dropout (models/minilm-sst2-bibert)."""
    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "{name: bibert, type: bibert, steps: 3}", "{name: bibert, type: bibert, steps: 3, dropout: 0.0}")
    cfg = config_from_text(text)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.run()
    drops = lambda m: {float(d.p) for d in m.modules() if isinstance(d, torch.nn.Dropout)}
    assert drops(tr.teacher) == {0.1}
    student, _, _ = load_checkpoint(tmp_path / "bibert" / "final")
    assert drops(student) == {0.0}
    assert student.config.hidden_dropout_prob == student.config.attention_probs_dropout_prob == 0.0
    # the student's training forward is deterministic (no dropout masks)
    batch = next(iter(torch.utils.data.DataLoader(tr.train_ds, batch_size=4,
                                                  collate_fn=tr.train_ds.collate)))
    student.train()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(student(**inputs).logits, student(**inputs).logits)


def test_set_dropout_rejects_bad_rates():
    from sw.train.trainer import set_dropout
    from sw.backbone import build_model
    from sw.config import ModelConfig

    m = build_model(ModelConfig(backbone="tiny"), "sst2")
    for bad in (1.0, -0.5, "0.1", True):
        with pytest.raises(BinbertError, match=r"dropout=.* must be a number in \[0, 1\)"):
            set_dropout(m, bad)


def test_bwn_direct_binary_stage(tmp_path):
    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "{name: bibert, type: bibert, steps: 3}",
        "{name: bwn, type: binary, steps: 2, loss: joint, quant: {act: lsq, act_bits: 4}}")
    Trainer(config_from_text(text), tmp_path, progress=False).run()
    q = json.loads((tmp_path / "bwn" / "final" / "quant.json").read_text())
    assert (q["weight"], q["act"], q["act_bits"], q["split"]) == ("bwn", "lsq", 4, [])
    hist = json.loads((tmp_path / "bwn" / "metrics.json").read_text())["history"]
    assert {h["phase"] for h in hist} == {"joint"}


def test_init_previous_starts_from_the_previous_students_weights(tmp_path):
    """init: previous (multi-step binarisation): the W1A1 student starts from the trained BWN
    W1A8 model's latent weights, not the teacher's; a pruned model cannot seed it."""
    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "{name: bibert, type: bibert, steps: 3}",
        "{name: bwn, type: binary, steps: 3, quant: {weight: bwn, act: uniform, act_bits: 8}}\n"
        "  - {name: bibert, type: bibert, steps: 1, init: previous}")
    tr = Trainer(config_from_text(text), tmp_path, progress=False)
    tr.run()
    tr.run()  # loads every stage
    bwn, _, _ = load_checkpoint(tmp_path / "bwn" / "final")
    student = tr._init_student(tr.cfg.stage("bibert"), bwn)
    got, want, teacher = student.state_dict(), bwn.state_dict(), tr.teacher.state_dict()
    w = "bert.encoder.layer.1.output.dense.weight"
    assert torch.equal(got[w], want[w]) and not torch.equal(got[w], teacher[w])
    assert all(torch.equal(got[k], want[k]) for k in teacher)
    # activation quantizer state is not carried over: sign activations have none, and the
    # BWN model's 8-bit clips stay behind
    assert not any("act_quant" in k for k in got)
    pruned = text.replace("type: binary, steps: 3, quant: {weight: bwn, act: uniform, act_bits: 8}",
                          "type: ternary, width: 0.5, steps: 3").replace("name: bwn", "name: tern")
    with pytest.raises(BinbertError, match=r"stage 'bibert': init: previous needs the previous "
                                           r"stage's model to have the teacher's parameters, but "
                                           r"bert\.encoder\.layer\.0\.attention\.self\.query\.weight is "
                                           r"shape \(16, 32\) there"):
        Trainer(config_from_text(pruned), tmp_path / "pruned", progress=False).run()


@pytest.mark.parametrize("budget", [0.0, 0.5, 1.0])
def test_adaptive_split_stage(pipeline, tmp_path, budget):
    """Adaptive splitting reuses the ternary stage; budget 0.0 is all binary, 1.0 affords every
    split, and the knapsack then takes every matrix whose sensitivity is positive."""
    base_out, _, summary = pipeline
    cfg = _cfg()
    st = list(cfg.stages[:3])
    st[2] = dataclasses.replace(st[2], budget=budget)
    cfg = dataclasses.replace(cfg, stages=tuple(st))
    for name in ("teacher", "ternary"):
        shutil.copytree(base_out / name, tmp_path / name)
    s = Trainer(cfg, tmp_path, progress=False).run()
    plan = s["split"]["plan"]
    n = len(plan["candidates"])
    useful = [z for z, u in zip(plan["candidates"], plan["sensitivity"]) if u > 0]
    if budget == 0.0:
        assert plan["selected"] == []
    if budget == 1.0:
        assert plan["selected"] == useful
    assert set(plan["selected"]) <= set(useful) and n == 12
    assert plan["cost"] <= plan["budget"]
    full = summary["split"]["size_mb"]  # plain TWS: everything split
    assert s["split"]["size_mb"] <= full + 1e-9
    q = json.loads((tmp_path / "split" / "final" / "quant.json").read_text())
    assert set(plan["selected"]) <= set(q["split"])
    assert "bert.embeddings.word_embeddings" in q["split"]  # outside Z: always split
    model, _, _ = load_checkpoint(tmp_path / "split" / "final")
    assert evaluate(model, _dev(cfg), "sst2") == s["split"]["dev"]


def test_augmented_distillation_data(tmp_path):
    """data.augment: the distillation stages train on the 64 training rows plus their variants
    (epochs count over both), the teacher and the ground-truth CE phase on the rows alone."""
    text = (ROOT / "models" / "tiny-test.yaml").read_text().replace(
        "dir: data/glue", f"dir: {ROOT / 'data/glue'}\n  augment: {{copies: 3}}").replace(
        "{name: teacher, type: teacher, steps: 6}", "{name: teacher, type: teacher, epochs: 1}")
    text = text.split("  - {name: ternary")[0] + (
        "  - {name: ternary, type: ternary, width: 0.5, epochs: 1}\n"
        "  - {name: bibert, type: bibert, epochs: 1, loss: ce_dmd}\n")
    tr = Trainer(config_from_text(text), tmp_path, progress=False)
    s = tr.run()
    n_aug = len(tr.distill_ds())
    assert 64 + 150 <= n_aug <= 64 * 4 and len(tr.train_ds) == 64
    assert tr.distill_ds().input_ids[:64] == tr.train_ds.input_ids  # originals first
    assert s["teacher"]["steps"] == 8  # 64 rows / batch 8
    assert s["ternary"]["steps"] == -(-n_aug // 8)
    # ce_dmd: one epoch over the augmented data, its CE half drawn from the original rows
    assert s["bibert"]["steps"] == -(-n_aug // 8)
    # the run resumes: same augmented data from the saved teacher (a pure function of it)
    tr2 = Trainer(config_from_text(text), tmp_path, progress=False)
    tr2.run()
    assert tr2.distill_ds().input_ids == tr.distill_ds().input_ids
    # the teacher never reads augmented rows: a run without data.augment reuses it, but not the
    # distilled stages
    plain = Trainer(config_from_text(text.replace("\n  augment: {copies: 3}", "")), tmp_path,
                    progress=False)
    assert plain._check_ckpt(tmp_path / "teacher" / "final", 0)["complete"]
    with pytest.raises(BinbertError, match=r"ternary/final: .*differs in data\.augment"):
        plain.run()


def test_augment_config_errors(tmp_path):
    base = (ROOT / "models" / "tiny-test.yaml").read_text()
    for bad, msg in (("{copies: 0}", "data.augment.copies must be > 0"),
                     ("{prob: 1.5}", r"data.augment.prob must be in \(0, 1\]"),
                     ("{copis: 2}", "unknown key 'copis' in data.augment .*did you mean 'copies'")):
        f = tmp_path / "c.yaml"
        f.write_text(base.replace("dir: data/glue", f"dir: data/glue\n  augment: {bad}"))
        with pytest.raises(BinbertError, match=rf"c.yaml:\d+: {msg}"):
            load_config(f)
    # a stage's augment flag: needs data.augment, and a stage that reads augmented rows
    for old, new, msg in (
            ("{name: binary, type: binary, steps: 6}",
             "{name: binary, type: binary, steps: 6, augment: true}",
             r"stages\[3\] \(binary\).augment: true needs data.augment"),
            ("{name: teacher, type: teacher, steps: 6}",
             "{name: teacher, type: teacher, steps: 6, augment: false}",
             r"stages\[0\] \(teacher\).augment: only distilling stages"),
            ("{name: binary, type: binary, steps: 6}",
             "{name: binary, type: binary, steps: 6, augment: 1}",
             r"augment")):
        f = tmp_path / "c.yaml"
        f.write_text(base.replace(old, new))
        with pytest.raises(BinbertError, match=rf"c.yaml:\d+: .*{msg}"):
            load_config(f)


def test_init_previous_continues_a_split_model_with_new_activations(pipeline, tmp_path):
    """TWS W1A8 -> W1A1 (models/minilm-sst2-tws-a1.yaml): the teacher cannot seed a pruned split
    model, so the W1A1 stage starts from the split binary model's terms, with sign activations,
    learned thresholds and Bi-Attention; its checkpoint reloads as it was trained."""
    base_out, _, _ = pipeline
    for name in ("teacher", "ternary", "split", "binary"):
        shutil.copytree(base_out / name, tmp_path / name)
    text = TINY.read_text().replace("dir: data/glue", f"dir: {ROOT / 'data/glue'}") + (
        "  - {name: w1a1, type: bibert, steps: 3, loss: prediction, init: previous,\n"
        "     threshold_lr: 0.05, quant: {act: sign, attention: bi, act_threshold: true}}\n")
    tr = Trainer(config_from_text(text), tmp_path, progress=False)
    tr.run()  # the copied stages load (their fingerprints match), only w1a1 trains
    binary, _, _ = load_checkpoint(tmp_path / "binary" / "final")
    start = tr._init_student(tr.cfg.stage("w1a1"), binary).state_dict()
    want = binary.state_dict()
    assert all(torch.equal(start[k], want[k]) for k in want if "_quant." not in k)
    q = json.loads((tmp_path / "w1a1" / "final" / "quant.json").read_text())
    assert (q["act"], q["attention"], q["act_threshold"]) == ("sign", "bi", True)
    assert q["split"] == list(binary.binbert_quant.split) and q["split"]
    trained, _, _ = load_checkpoint(tmp_path / "w1a1" / "final")
    assert trained.state_dict().keys() == start.keys()
    hist = json.loads((tmp_path / "w1a1" / "metrics.json").read_text())["history"]
    assert max(h["step"] for h in hist) == 3 and any(h.get("pred", 0) > 0 for h in hist)
    ev = evaluate(trained, tr.dev_ds, "sst2", 32, torch.device("cpu"))
    assert ev["acc"] == pytest.approx(tr.summary["w1a1"]["dev"]["acc"])
