"""benchmarks/accuracy.py: a row whose run used an earlier config is flagged, not reported as
the current recipe's number."""
import dataclasses
import json
import os
import time
from pathlib import Path

from benchmarks import accuracy
from sw.config import config_to_yaml, load_config

ROOT = Path(__file__).resolve().parents[2]


def _write_run(run: Path, cfg) -> None:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(cfg))


def test_run_with_the_current_config_is_not_stale(tmp_path):
    cfg_file = "minilm-sst2-bibert.yaml"
    cfg = accuracy.apply_profile(load_config(ROOT / "models" / cfg_file), accuracy.CPU_PROFILE, {})
    _write_run(tmp_path / "run", cfg)
    assert not accuracy.is_stale(tmp_path / "run", cfg_file, {}, "bibert", accuracy.CPU_PROFILE)
    # the same run read against another profile or another stage override is stale
    assert accuracy.is_stale(tmp_path / "run", cfg_file, {}, "bibert", None)
    assert accuracy.is_stale(tmp_path / "run", cfg_file, {"bibert": {"loss": "ce"}}, "bibert",
                             accuracy.CPU_PROFILE)
    # a change after the reported stage does not matter
    assert not accuracy.is_stale(tmp_path / "run", cfg_file, {"bibert": {"loss": "ce"}},
                                 "teacher", accuracy.CPU_PROFILE)


def test_run_with_an_older_recipe_is_stale(tmp_path):
    cfg_file = "minilm-sst2-bibert.yaml"
    cfg = accuracy.apply_profile(load_config(ROOT / "models" / cfg_file), accuracy.CPU_PROFILE, {})
    old = dataclasses.replace(cfg, stages=tuple(
        dataclasses.replace(s, dropout=None, quant={k: v for k, v in s.quant.items()
                                                    if k != "centered"})
        for s in cfg.stages))
    _write_run(tmp_path / "run", old)
    assert accuracy.is_stale(tmp_path / "run", cfg_file, {}, "bibert", accuracy.CPU_PROFILE)
    assert not accuracy.is_stale(tmp_path / "missing", cfg_file, {}, "bibert",
                                 accuracy.CPU_PROFILE)


def test_long_profile_reaches_every_training_stage():
    """cpu-long: all training sentences, and its epochs / learning rates land on the stages they
    name (by stage name first, then by type: the BWN baseline is a 'binary'-type stage named
    'bwn')."""
    prof = accuracy.CPU_LONG_PROFILE
    tws = accuracy.apply_profile(load_config(ROOT / "models" / "minilm-sst2-tws-a8.yaml"), prof, {})
    assert tws.data.train_limit is None and tws.data.max_seq_len == 48
    got = {s.name: (s.epochs, s.learning_rate) for s in tws.stages if s.trains}
    # the binary stage keeps the config's learning rate
    assert got == {"teacher": (2.0, 1e-4), "ternary": (6.0, 1e-4), "binary": (3.0, 3e-5)}
    bwn = accuracy.apply_profile(load_config(ROOT / "models" / "minilm-sst2-bwn-a8.yaml"), prof, {})
    assert {s.name: (s.epochs, s.learning_rate) for s in bwn.stages} == {
        "teacher": (2.0, 1e-4), "bwn": (9.0, 1e-4)}


def test_each_profile_writes_its_own_table():
    paths = {p: accuracy.report_path(p) for p in accuracy.PROFILES}
    assert paths["cpu"].name == "accuracy.md"
    assert len(set(paths.values())) == len(paths)


def test_targets_block_reads_the_rows():
    rows = [{"variant": "fp", "done": True, "acc": 0.8863},
            {"variant": "tws-a8", "done": True, "acc": 0.8770},
            {"variant": "tws-a4", "done": True, "acc": 0.8633},
            {"variant": "bwn-a8", "done": True, "acc": 0.8800},
            {"variant": "bibert", "done": True, "acc": 0.50, "stale": True}]
    text = "\n".join(accuracy.targets(rows))
    assert "tws-a8: 87.70 = FP -0.93 pt against >= FP -1: met" in text
    assert "tws-a4: 86.33 = FP -2.30 pt against >= FP -1.5: not met" in text
    split = "\n".join(accuracy.targets(rows + [{"variant": "tws-a4-split", "done": True,
                                                "acc": 0.8737}]))
    assert "tws-a4-split (before the binary fine-tuning): 87.37 = FP -1.26 pt against >= FP " \
           "-1.5: met" in split
    assert "best step 0" not in split
    kept = "\n".join(accuracy.targets(rows[:2] + [{**rows[2], "acc": 0.8737, "kept_start": True}]))
    assert "tws-a4: 87.37 = FP -1.26 pt against >= FP -1.5: met; no evaluation of the " \
           "fine-tuning beat its starting model, so the checkpoint is that model (best step 0)" \
        in kept
    assert "bibert" not in text  # a stale run is no evidence either way
    assert "87.70 vs 88.00 (-0.30 pt): TWS does not win" in text
    assert accuracy.targets(rows[1:]) == []


def test_integer_results_join_the_rows_and_the_targets(tmp_path):
    """--integer: a stage's integer.json (binbert eval-integer --json) counts only while it is
    newer than the stage's checkpoint, and adds its own target line."""
    stage = tmp_path / "binary"
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "state.json").write_text("{}")
    assert accuracy.integer_result(stage) == {}
    (stage / accuracy.INTEGER).write_text(json.dumps(
        {"golden": {"acc": 0.8741}, "golden_vs_fake_quant": {"agreement": 0.99}}))
    assert accuracy.integer_result(stage) == {"integer": 0.8741, "agreement": 0.99}
    os.utime(stage / "final" / "state.json", (time.time() + 10, time.time() + 10))
    assert accuracy.integer_result(stage) == {}  # the checkpoint was retrained since
    rows = [{"variant": "fp", "done": True, "acc": 0.8863},
            {"variant": "tws-a8", "done": True, "acc": 0.8770, "integer": 0.8741}]
    text = "\n".join(accuracy.targets(rows))
    assert "tws-a8, integer golden model (what the silicon computes): 87.41 = FP -1.22 pt: " \
           "not met" in text


def test_tuned_best_reads_the_competing_phase_of_the_history():
    hist = [{"step": 0, "phase": "start", "dev": {"acc": 0.8737}},
            {"step": 20, "phase": "intermediate", "loss": 1.0},
            {"step": 217, "phase": "intermediate", "dev": {"acc": 0.8726}},
            {"step": 543, "phase": "prediction", "dev": {"acc": 0.8649}},
            {"step": 651, "phase": "prediction", "dev": {"acc": 0.8671}}]
    assert accuracy.tuned_best(hist) == 0.8671  # not the start, not the intermediate phase
    assert accuracy.tuned_best(hist[:1]) is None
    assert accuracy.tuned_best([{"step": 0, "dev": {"acc": 0.5}}]) is None  # a split stage


def test_augmented_variant_shares_the_bwn_stage(tmp_path):
    """The augmented W1A1 row: the profile's copies and epochs land on the stage that reads the
    variants only, and its BWN stage (augment: false) is the bwn-a8 row's, so it is shared."""
    prof = accuracy.CPU_LONG_PROFILE
    aug = accuracy.apply_profile(
        load_config(ROOT / "models" / "minilm-sst2-bibert-multistep-aug.yaml"), prof, {})
    assert aug.data.augment.copies == 4 and aug.data.augment.prob == 0.4
    assert {s.name: s.epochs for s in aug.stages} == {"teacher": 2.0, "bwn": 9.0, "bibert": 3.0}
    bwn = accuracy.apply_profile(load_config(ROOT / "models" / "minilm-sst2-bwn-a8.yaml"), prof, {})
    _write_run(tmp_path / "runs" / "bwn-a8", bwn)
    for stage in ("teacher", "bwn"):
        (tmp_path / "runs" / "bwn-a8" / stage / "final").mkdir(parents=True)
        (tmp_path / "runs" / "bwn-a8" / stage / "final" / "state.json").write_text("{}")
    run = tmp_path / "runs" / "bibert-multistep-aug"
    _write_run(run, aug)
    accuracy.share_stages(tmp_path, run / "config.yaml", run)
    assert (run / "teacher").is_symlink() and (run / "bwn").is_symlink()
    # the same variant with the BWN stage reading the variants too shares only the teacher
    own = dataclasses.replace(aug, stages=tuple(dataclasses.replace(s, augment=None)
                                                for s in aug.stages))
    run2 = tmp_path / "runs" / "own-bwn"
    _write_run(run2, own)
    accuracy.share_stages(tmp_path, run2 / "config.yaml", run2)
    assert (run2 / "teacher").is_symlink() and not (run2 / "bwn").exists()
