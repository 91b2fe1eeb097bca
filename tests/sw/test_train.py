"""sw.train on tiny random BERTs (MiniLM vocabulary): every stage, checkpoints, resume, DDP."""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from hw.errors import BinbertError
from sw.config import config_from_text, load_config
from sw.train import Dist, Trainer, evaluate, load_checkpoint, predict, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "models" / "tiny-test.yaml"


def _cfg(**stage_steps):
    cfg = load_config(TINY)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(ROOT / "data/glue")))
    if stage_steps:
        cfg = dataclasses.replace(cfg, stages=tuple(
            dataclasses.replace(s, steps=stage_steps.get(s.name, s.steps)) for s in cfg.stages))
    return cfg


def _sd(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    tr = Trainer(_cfg(), out, progress=False)
    summary = tr.run()
    return out, tr, summary


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


def _rerun_binary(base_out: Path, tmp_path: Path, **binary_changes):
    """The pipeline's binary stage again, with ``binary_changes``, from copies of its earlier
    stages. Returns (output directory, summary)."""
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, stages=tuple(
        dataclasses.replace(s, **binary_changes) if s.name == "binary" else s
        for s in cfg.stages))
    out = tmp_path / "o"
    for name in ("teacher", "ternary", "split"):
        shutil.copytree(base_out / name, out / name)
    return out, Trainer(cfg, out, progress=False).run()


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


BIBERT = """
model: {backbone: tiny, tiny: {hidden_size: 32, num_layers: 2, num_heads: 4,
        intermediate_size: 64, max_position_embeddings: 64}}
data: {task: TASK, dir: DATA, max_seq_len: 24, train_limit: 48, eval_limit: 24}
train: {batch_size: 8, seed: 3, eval_every: 3, learning_rate: 1.0e-3, threads: 1}
stages:
  - {name: teacher, type: teacher, steps: 3}
  - {name: bibert, type: bibert, steps: 3}
"""


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
    from sw.train import set_dropout
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


def test_distill_head_map_follows_a_pruned_teacher_stage():
    from sw.train import HEAD_MAP, distill_head_map

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


def test_ddp_code_path_gloo_world_1(pipeline, tmp_path, monkeypatch):
    """torch.distributed initialised (gloo, one rank): DDP wrapper and collectives run."""
    base_out, _, _ = pipeline
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, stages=cfg.stages[:2])
    shutil.copytree(base_out / "teacher", tmp_path / "teacher")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        s = Trainer(cfg, tmp_path, progress=False, dist=Dist(rank=0, world=1)).run()
    finally:
        torch.distributed.destroy_process_group()
    ref = json.loads((base_out / "ternary" / "final" / "state.json").read_text())["summary"]
    # same data order, seeds and maths as the single-process run
    assert s["ternary"]["dev"] == ref["dev"]
    a, _, _ = load_checkpoint(tmp_path / "ternary" / "final")
    b, _, _ = load_checkpoint(base_out / "ternary" / "final")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


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


def _dev(cfg):
    from sw import backbone as bb
    from sw.data import Encoded, load_split

    return Encoded(load_split(cfg.data.dir, "sst2", "dev", cfg.data.eval_limit),
                   bb.load_tokenizer(cfg.model.backbone), cfg.data.max_seq_len, False)


def _ddp_worker(rank, world, port, cfg_text, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from sw.train import init_distributed

    dist = init_distributed()
    try:
        Trainer(config_from_text(cfg_text), out, progress=False, dist=dist).run()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~70 s on a loaded 2-core machine; test_ddp_code_path_gloo_world_1 covers DDP
def test_ddp_two_ranks_gloo(tmp_path):
    """torchrun-style environment, two CPU ranks: sharded epochs, rank-0 checkpoints."""
    import torch.multiprocessing as mp

    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "  - {name: bibert, type: bibert, steps: 3}\n", "").replace(
        "{name: teacher, type: teacher, steps: 3}", "{name: teacher, type: teacher, epochs: 1}")
    port = 29700 + os.getpid() % 200
    mp.spawn(_ddp_worker, args=(2, port, text, str(tmp_path)), nprocs=2, join=True)
    state = json.loads((tmp_path / "teacher" / "final" / "state.json").read_text())
    # one epoch of 48 training rows over 2 ranks at batch 8: 3 steps (6 in one process)
    assert state["complete"] and state["summary"]["steps"] == 3
    hist = json.loads((tmp_path / "teacher" / "metrics.json").read_text())["history"]
    assert hist[-1]["step"] == 3
    model, _, _ = load_checkpoint(tmp_path / "teacher" / "final")
    assert model.config.num_labels == 2


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


def test_ema_averages_floating_state_with_tf_warmup():
    """_Ema: decay min(d, (1 + t) / (10 + t)) on floating tensors; other buffers are copied."""
    from sw.train import _Ema

    live = torch.nn.Linear(2, 1)
    live.register_buffer("flag", torch.tensor(False))
    with torch.no_grad():
        live.weight.fill_(0.0)
    ema = _Ema(live, 0.5)
    expect = 0.0
    for t, w in enumerate((1.0, 3.0, -2.0), start=1):
        with torch.no_grad():
            live.weight.fill_(w)
        live.flag.fill_(t % 2 == 1)
        ema.update(live)
        d = min(0.5, (1 + t) / (10 + t))
        expect = d * expect + (1 - d) * w
        assert float(ema.model.weight[0, 0]) == pytest.approx(expect)
        assert bool(ema.model.flag) == (t % 2 == 1)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert ema.updates == 3


def test_stage_ema_is_what_is_evaluated_handed_on_and_resumed(tmp_path):
    """A stage's ``ema``: the weight average is evaluated and becomes final (select: last here);
    a tiny decay follows the live weights; an interrupted run resumes the average exactly."""
    base = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "eval_every: 3,", "eval_every: 3, select: last, checkpoint_every: 2,").replace(
        "{name: bibert, type: bibert, steps: 3}", "{name: bibert, type: bibert, steps: 6EMA}")
    finals = {}
    for name, ema in (("live", ""), ("tiny", ", ema: 1.0e-9"), ("avg", ", ema: 0.9")):
        out = tmp_path / name
        if name != "live":
            shutil.copytree(tmp_path / "live" / "teacher", out / "teacher")
        tr = Trainer(config_from_text(base.replace("EMA", ema)), out, progress=False)
        s = tr.run()
        finals[name], _, _ = load_checkpoint(out / "bibert" / "final")
        assert evaluate(finals[name], tr.dev_ds, "sst2") == s["bibert"]["dev"]
    sd = {k: v.state_dict() for k, v in finals.items()}
    keys = [k for k, v in sd["live"].items() if v.is_floating_point()]
    for k in keys:
        torch.testing.assert_close(sd["tiny"][k], sd["live"][k], rtol=0, atol=1e-6)
    assert max(float((sd["avg"][k] - sd["live"][k]).abs().max()) for k in keys) > 1e-4
    # interrupted after 3 steps (resumes from the step-2 checkpoint), then run to the end
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "live" / "teacher", cut / "teacher")
    cfg = config_from_text(base.replace("EMA", ", ema: 0.9"))
    tr = Trainer(cfg, cut, progress=False)
    tr._interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        tr.run()
    Trainer(cfg, cut, progress=False).run()
    resumed, _, _ = load_checkpoint(cut / "bibert" / "final")
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, sd["avg"][k]), k
    for bad in ("1.0", "0", "-0.5"):
        with pytest.raises(BinbertError, match=r"stages\[1\] \(bibert\).ema is a decay in \(0, 1\)"):
            config_from_text(base.replace("EMA", f", ema: {bad}"))
    tiny = (ROOT / "models" / "tiny-test.yaml").read_text()
    assert tiny.count("{name: split, type: split}") == 1
    with pytest.raises(BinbertError, match=r"stages\[2\] \(split\).ema: a split stage does not train"):
        config_from_text(tiny.replace("{name: split, type: split}",
                                      "{name: split, type: split, ema: 0.9}"))
