"""benchmarks/accuracy.py: a row whose run used an earlier config is flagged, not reported as
the current recipe's number; the tracked rows render the committed reports, and rows whose runs
are gone are kept."""
import dataclasses
import json
import os
import re
import time
from pathlib import Path

import pytest

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


def _variant(name):
    return next(v for v in accuracy.VARIANTS if v[0] == name)


def _finished_run(out: Path, name: str, cfg, metrics: dict) -> None:
    """A benchmark run of ``cfg`` under ``out`` as accuracy.py leaves it: its profiled config
    and every stage's metrics.json (all stages the same ``metrics``)."""
    run = out / "runs" / name
    _write_run(run, cfg)
    (out / "configs").mkdir()
    (out / "configs" / f"{name}.yaml").write_text(config_to_yaml(cfg))
    for s in cfg.stages:
        (run / s.name).mkdir()
        (run / s.name / "metrics.json").write_text(json.dumps(metrics))


def test_aug20_variant_keeps_the_configs_copies_and_shares_the_rest(tmp_path):
    """The 20-variant W1A1 row drops only the profile's copies: everything else (sentences,
    epochs, learning rates) is the profile's, so it differs from bibert-multistep-aug in the
    data section alone and shares that row's teacher and BWN stages."""
    _, cfg_file, over, *_ = _variant("bibert-multistep-aug20")
    prof = accuracy.CPU_LONG_PROFILE
    cfg = load_config(ROOT / "models" / cfg_file)
    aug20 = accuracy.apply_profile(cfg, prof, over)
    aug4 = accuracy.apply_profile(cfg, prof, {})
    assert aug20.data.augment == cfg.data.augment and cfg.data.augment.copies == 20
    assert aug4.data.augment.copies == 4
    assert aug20.stages == aug4.stages and aug20.train == aug4.train
    assert dataclasses.replace(aug20.data, augment=aug4.data.augment) == aug4.data
    # the override does not leak into the profile other variants read
    assert prof["augment"] == {"copies": 4}
    _write_run(tmp_path / "runs" / "bibert-multistep-aug", aug4)
    for stage in ("teacher", "bwn"):
        final = tmp_path / "runs" / "bibert-multistep-aug" / stage / "final"
        final.mkdir(parents=True)
        (final / "state.json").write_text("{}")
    run = tmp_path / "runs" / "bibert-multistep-aug20"
    _write_run(run, aug20)
    accuracy.share_stages(tmp_path, run / "config.yaml", run)
    assert (run / "teacher").is_symlink() and (run / "bwn").is_symlink()
    assert not (run / "bibert").exists()
    # its run is current against its own override, stale against the 4-copy variant's
    assert not accuracy.is_stale(run, cfg_file, over, "bibert", prof)
    assert accuracy.is_stale(run, cfg_file, {}, "bibert", prof)


def test_an_override_naming_no_stage_is_refused():
    cfg = load_config(ROOT / "models" / "minilm-sst2-bibert.yaml")
    with pytest.raises(ValueError, match=r"no stage named \['binary'\].*bibert"):
        accuracy.apply_profile(cfg, accuracy.CPU_PROFILE, {"binary": {"loss": "ce"}})


def test_every_variant_override_names_a_stage_of_its_config():
    for name, cfg_file, over, stage, *_ in accuracy.VARIANTS:
        cfg = accuracy.apply_profile(load_config(ROOT / "models" / cfg_file),
                                     accuracy.CPU_LONG_PROFILE, over)
        assert stage in [s.name for s in cfg.stages], name


@pytest.mark.parametrize("profile", ["cpu", "cpu-long"])
def test_the_tracked_rows_render_the_report(profile, tmp_path):
    """benchmarks/accuracy*.json is the table's data: with no runs at all, the report rendered
    from it alone is the committed report, line for line (but the runs-directory sentence)."""
    stored = accuracy.load_results(profile)
    assert stored, accuracy.results_path(profile)
    rows = accuracy.collect(tmp_path, accuracy.PROFILES[profile][0], stored)
    assert all(r.get("carried") for r in rows if r["done"])
    assert not any(r["stale"] for r in rows if r["done"]), "a recipe changed after its row"
    got = accuracy.render_report(tmp_path, rows, profile, accuracy._dev_n()).splitlines()
    want = accuracy.report_path(profile).read_text().splitlines()
    assert "rows whose runs are no longer there" in got[2]
    assert [l for i, l in enumerate(got) if i != 2] == [l for i, l in enumerate(want) if i != 2]


def test_a_carried_row_is_stale_once_its_recipe_changes(tmp_path):
    stored = accuracy.load_results("cpu-long")
    row = dict(stored["bibert-multistep-aug"], recipe="0" * 16)
    rows = accuracy.collect(tmp_path, accuracy.CPU_LONG_PROFILE, {"bibert-multistep-aug": row})
    got = {r["variant"]: r for r in rows}
    assert got["bibert-multistep-aug"]["stale"] and got["bibert-multistep-aug"]["done"]
    assert not got["bibert-rsign"]["done"]  # not stored: not run
    text = accuracy.render_report(tmp_path, rows, "cpu-long", 1821)
    assert "older config: re-run" in text
    assert "bibert-multistep-aug (" not in text.split("Targets")[-1]  # a stale row meets nothing


def test_a_fresh_run_replaces_its_stored_row_and_the_rest_are_kept(tmp_path, monkeypatch):
    """A run under out/ wins over the stored row; saving writes both back, and the stored rows
    keep the machine they were measured on."""
    monkeypatch.setattr(accuracy, "results_path", lambda p: tmp_path / "res.json")
    # a machine none of the stored rows ran on, whatever machine runs this test
    monkeypatch.setattr(accuracy, "device", lambda: "Test CPU, 2 cores, 1 thread per run")
    src = accuracy.report_path("cpu-long").with_suffix(".json")
    (tmp_path / "res.json").write_text(src.read_text())
    stored = accuracy.load_results("cpu-long")
    name, cfg_file, over, stage, *_ = _variant("bibert-multistep-aug20")
    cfg = accuracy.apply_profile(load_config(ROOT / "models" / cfg_file), accuracy.CPU_LONG_PROFILE,
                                 over)
    _finished_run(tmp_path, name, cfg,
                  {"summary": {"dev": {"acc": 0.85}, "wall_s": 60.0, "steps": 10, "best_step": 5},
                   "history": [{"step": 5, "phase": "prediction", "dev": {"acc": 0.85}}]})
    rows = accuracy.collect(tmp_path, accuracy.CPU_LONG_PROFILE, stored)
    got = {r["variant"]: r for r in rows}
    assert got[name]["done"] and not got[name].get("carried") and got[name]["acc"] == 0.85
    assert got[name]["device"] == "Test CPU, 2 cores, 1 thread per run"
    assert got["bwn-a8"]["carried"] and got["bwn-a8"]["device"].startswith("AMD EPYC")
    assert accuracy.device_line(rows).startswith("Devices: ")
    accuracy.save_results("cpu-long", rows)
    again = accuracy.load_results("cpu-long")
    assert set(again) == set(stored) | {name} and again[name]["acc"] == 0.85
    assert again["bwn-a8"] == stored["bwn-a8"]


def test_a_stale_run_stays_stale_once_only_its_stored_row_is_left(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy, "results_path", lambda p: tmp_path / "res.json")
    name, cfg_file, over, stage, *_ = _variant("bibert-multistep-aug")
    cfg = accuracy.apply_profile(load_config(ROOT / "models" / cfg_file), accuracy.CPU_LONG_PROFILE,
                                 {"bibert": {"loss": "ce"}})  # an older recipe
    out = tmp_path / "out"
    _finished_run(out, name, cfg, {"summary": {"dev": {"acc": 0.8}, "wall_s": 1.0}, "history": []})
    rows = accuracy.collect(out, accuracy.CPU_LONG_PROFILE)
    assert {r["variant"]: r["stale"] for r in rows}[name]
    accuracy.save_results("cpu-long", rows)
    carried = accuracy.collect(tmp_path / "gone", accuracy.CPU_LONG_PROFILE,
                               accuracy.load_results("cpu-long"))
    row = {r["variant"]: r for r in carried}[name]
    assert row["carried"] and row["stale"]


def test_a_corrupt_results_file_names_itself(tmp_path, monkeypatch):
    f = tmp_path / "accuracy-x.json"
    monkeypatch.setattr(accuracy, "results_path", lambda p: f)
    for text in ("{not json", '{"variant": "fp"}', '[{"done": true}]'):
        f.write_text(text)
        with pytest.raises(SystemExit, match="accuracy-x.json: not a list of result rows"):
            accuracy.load_results("cpu")


def test_readme_summary_matches_the_tracked_rows():
    """README's 'Where it stands' table quotes benchmark rows: each figure must be the stored
    row's, so the summary cannot drift from the measured table."""
    stored = accuracy.load_results("cpu-long")
    fp = stored["fp"]["acc"] * 100
    readme = (ROOT / "README.md").read_text().split("## Where it stands", 1)[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([\w-]+)`:[^|]*\|[^|]*\| ([\d.]+) \| ([\d.]+) \| −([\d.]+) \| (.*) \|$",
                      readme, re.M)
    assert {r[0] for r in rows} == {"tws-a8", "tws-a4", "bwn-a8", "bibert-multistep-aug20"}
    allowed = {v: pts for v, pts, _ in accuracy.TARGETS}
    for name, acc, integer, below, verdict in rows:
        row = stored[name]
        assert acc == f"{row['acc'] * 100:.2f}", name
        assert integer == f"{row['integer'] * 100:.2f}", name
        assert below == f"{fp - row['acc'] * 100:.2f}", name
        if name == "bwn-a8":  # the TWS-over-BWN target, as the report's targets() words it
            d = 100 * (stored["tws-a8"]["acc"] - row["acc"])
            assert verdict == f"TWS beats it: {'met' if d > 0 else 'not met'} ({d:+.2f})", name
        else:  # the report's own thresholds, not a copy of them
            met = fp - row["acc"] * 100 <= allowed[name]
            assert re.fullmatch(rf"≥ FP − {allowed[name]:g}: (\*\*)?{'met' if met else 'not met'}"
                                r"(\*\*)?", verdict), name
    assert f"full precision {fp:.2f} %" in readme
