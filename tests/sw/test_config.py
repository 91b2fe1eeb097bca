"""sw.config: shipped configs load, every kind of bad input names FILE:LINE."""
from pathlib import Path

import pytest

from hw.errors import BinbertError
from sw.config import config_from_text, config_to_yaml, load_config

MODELS = Path(__file__).resolve().parents[2] / "models"

BASE = """\
model:
  backbone: tiny
train:
  batch_size: 8
  learning_rate: 1.0e-4
stages:
  - name: teacher
    type: teacher
    epochs: 1
  - name: ternary
    type: ternary
    width: 0.5
    quant: {act: lsq, act_bits: 4}
  - name: split
    type: split
  - name: binary
    type: binary
"""


def _refused(text: str, match: str) -> None:
    """config_from_text refuses ``text`` (read as x.yaml) with a message matching ``match``."""
    with pytest.raises(BinbertError, match=match):
        config_from_text(text, "x.yaml")


def _line_of(text: str, needle: str) -> int:
    """Line of the last occurrence (the duplicate, for duplicate keys)."""
    return [i + 1 for i, l in enumerate(text.splitlines()) if needle in l][-1]


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.stages[0].type == "teacher"
    # round trip through the resolved YAML that checkpoints store
    assert config_from_text(config_to_yaml(cfg)) == cfg


def test_base_parses():
    cfg = config_from_text(BASE, "x.yaml")
    assert [s.type for s in cfg.stages] == ["teacher", "ternary", "split", "binary"]
    assert cfg.train.learning_rate == 1e-4 and cfg.stage("ternary").quant["act"] == "lsq"
    assert cfg.stage("ternary").resolved_loss == "two_stage"


def test_float_without_dot_accepted():
    # PyYAML reads 5e-5 as a string; floats fields accept it
    cfg = config_from_text(BASE.replace("1.0e-4", "5e-5"), "x.yaml")
    assert cfg.train.learning_rate == 5e-5


@pytest.mark.parametrize("old,new,needle,message", [
    ("  learning_rate: 1.0e-4", "  lerning_rate: 1.0e-4", "lerning_rate",
     "unknown key 'lerning_rate' in train (did you mean 'learning_rate'?)"),
    ("  batch_size: 8", "  batch_size: eight", "batch_size",
     "train.batch_size must be an integer, not 'eight'"),
    ("  batch_size: 8", "  batch_size: true", "batch_size", "train.batch_size must be an integer"),
    ("    type: ternary", "    type: ternery", "ternery",
     "stages[1].type: 'ternery' is not one of"),
    ("    width: 0.5", "    width: 1.5", "width: 1.5", "width must be in (0, 1]"),
    ("    width: 0.5", "    width: 0.5\n    width: 0.5", "width", "duplicate key 'width'"),
    ("  backbone: tiny", "  backbone: [tiny]", "backbone", "model.backbone must be a string"),
    ("  batch_size: 8", "  batch_size: 0", "batch_size", "train.batch_size must be > 0"),
    ("    quant: {act: lsq, act_bits: 4}", "    quant: {act: lsq, act_bits: 12}", "act_bits",
     "stages[1] (ternary).quant: act_bits=12 out of range"),
    ("    quant: {act: lsq, act_bits: 4}", "    quant: {actt: lsq}", "actt",
     "unknown quantization key 'actt'"),
    ("  - name: split\n    type: split\n", "", "type: binary",
     "a binary stage after a ternary stage needs a split stage"),
])
def test_errors_name_file_and_line(old, new, needle, message):
    text = BASE.replace(old, new)
    assert text != BASE
    with pytest.raises(BinbertError) as exc:
        config_from_text(text, "models/x.yaml")
    line = _line_of(text, needle)
    msg = str(exc.value)
    assert msg.startswith(f"models/x.yaml:{line}: "), msg
    assert message in msg


def test_structural_errors():
    _refused("stages:\n  - {name: s, type: split}\n",
             r"x.yaml:2: stages\[0\] \(s\): a split stage must follow a ternary stage")
    _refused("stages:\n  - name: b\n    type: bibert\n", r"x.yaml:3: .*first stage must be type 'teacher'")
    _refused("model: {backbone: tiny}\n",
             r"x.yaml:1: missing required key 'stages'|x.yaml:1: config: missing required key 'stages'")
    _refused("stages:\n  - {name: t, type: teacher}\n  - {name: t, type: bibert}\n",
             r"x.yaml:3: .*duplicate stage name 't'")
    _refused("stages:\n  - {name: t, type: teacher\n", r"x.yaml:3: YAML syntax error: expected ','")
    _refused("- 1\n", r"x.yaml:1: a config must be a mapping")


def test_missing_file(tmp_path):
    with pytest.raises(BinbertError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_with_stages():
    cfg = config_from_text(BASE, "x.yaml")
    assert [s.name for s in cfg.with_stages(["teacher", "binary"]).stages] == ["teacher", "binary"]
    with pytest.raises(BinbertError, match="no stage named 'bin'"):
        cfg.with_stages(["bin"])


def test_stage_distill_override():
    text = BASE.replace("    quant: {act: lsq, act_bits: 4}",
                        "    quant: {act: lsq, act_bits: 4}\n    distill: {pred: 4.0, temperature: 2}")
    cfg = config_from_text(text, "x.yaml")
    d = cfg.stage_distill(cfg.stage("ternary"))
    assert (d.pred, d.temperature, d.emb) == (4.0, 2.0, cfg.distill.emb)
    assert cfg.stage_distill(cfg.stage("binary")) == cfg.distill
    bad = text.replace("pred: 4.0", "pred: -1")
    _refused(bad, rf"x.yaml:{_line_of(bad, 'pred: -1')}: .*distill.pred "
                  r"must be >= 0")
    bad = text.replace("pred: 4.0", "prd: 1")
    _refused(bad, r"unknown key 'prd' in stages\[1\].distill "
                  r"\(did you mean 'pred'\?\)")


def test_stage_dropout():
    text = BASE.replace("    type: binary\n", "    type: binary\n    dropout: 0.0\n")
    cfg = config_from_text(text, "x.yaml")
    assert cfg.stage("binary").dropout == 0.0 and cfg.stage("ternary").dropout is None
    for bad, message in (("dropout: 1.0", r"stages\[3\] \(binary\).dropout must be in \[0, 1\)"),
                         ("dropout: -0.1", r".*dropout must be in \[0, 1\), not -0.1")):
        t = text.replace("dropout: 0.0", bad)
        _refused(t, rf"x.yaml:{_line_of(t, 'dropout')}: {message}")
    t = BASE.replace("    type: split\n", "    type: split\n    dropout: 0.0\n")
    _refused(t, rf"x.yaml:{_line_of(t, 'dropout')}: .*a split stage "
                r"does not train")


def test_stage_init_previous():
    text = ("stages:\n  - {name: teacher, type: teacher}\n  - {name: bwn, type: binary}\n"
            "  - {name: bibert, type: bibert, init: previous}\n")
    assert config_from_text(text, "x.yaml").stage("bibert").init == "previous"
    assert config_from_text(text, "x.yaml").stage("bwn").init is None  # = the teacher's weights
    for bad, message in (
            (text.replace("type: binary}", "type: ternary, init: previous}"),
             r"x.yaml:3: stages\[1\] \(bwn\).init: 'previous' applies to binary and bibert "
             r"stages only"),
            (BASE.replace("    type: binary\n", "    type: binary\n    init: previous\n"),
             rf"x.yaml:{_line_of(BASE, 'type: binary') + 1}: stages\[3\] \(binary\).init: "
             r"'previous' needs a training stage before it \(a binary stage after a split already "
             r"starts from the split model\)"),
            (text.replace("init: previous", "init: prev"),
             r"x.yaml:4: stages\[2\].init: 'prev' is not one of 'teacher', 'previous' \(did you "
             r"mean 'previous'\?\)")):
        _refused(bad, message)


def test_init_previous_after_a_split_changes_only_activations():
    """A stage that continues a split model (TWS W1A8 -> W1A1) keeps its binary weight terms:
    activation keys are accepted, a weight key is refused with its line."""
    text = BASE + ("  - name: w1a1\n    type: bibert\n    init: previous\n"
                   "    quant: {act: sign, attention: bi, act_threshold: true}\n")
    assert config_from_text(text, "x.yaml").stage("w1a1").quant["act_threshold"] is True
    bad = text.replace("act_threshold: true}", "act_threshold: true, centered: true}")
    _refused(bad, rf"x.yaml:{_line_of(bad, 'centered')}: stages\[4\] "
                  r"\(w1a1\).quant.centered: a stage that continues a "
                  r"split model keeps its binary weight terms; only act, "
                  r"act_bits, attention, act_integer, act_threshold, "
                  r"attention_threshold can change")


def test_binary_stage_after_split_takes_only_act_integer():
    text = BASE.replace("    type: binary\n", "    type: binary\n    quant: {act_integer: true}\n")
    assert config_from_text(text, "x.yaml").stage("binary").quant == {"act_integer": True}
    bad = BASE.replace("    type: binary\n", "    type: binary\n    quant: {act_bits: 8}\n")
    _refused(bad, rf"x.yaml:{_line_of(bad, 'act_bits: 8')}: stages\[3\] "
                  r"\(binary\): a binary stage after a split keeps the "
                  r"split model's quantization \(only act_integer")


def test_bibert_stage_defaults_to_centred_per_row_binarisation():
    """BiBERT's official code centres every weight row before its sign, with per-row scales."""
    from sw.config import stage_quant_dict

    cfg = config_from_text("stages:\n  - {name: t, type: teacher}\n  - {name: b, type: bibert}\n")
    q = stage_quant_dict(cfg.stage("b"))
    assert (q["weight"], q["act"], q["attention"]) == ("bwn", "sign", "bi")
    assert q["weight_per_row"] is True and q["centered"] is True


def test_stage_teacher_names_an_earlier_distilling_stage():
    """teacher: <stage> (BiT's multi-step distillation) names an earlier stage; a stage that
    learns from no teacher (the teacher stage, a split, a task-loss-only stage) takes none."""
    text = ("stages:\n  - {name: teacher, type: teacher}\n  - {name: bwn, type: binary}\n"
            "  - {name: bibert, type: bibert, init: previous, teacher: bwn}\n")
    cfg = config_from_text(text, "x.yaml")
    assert cfg.stage("bibert").teacher == "bwn" and cfg.stage("bwn").teacher is None
    for bad, message in (
            (text.replace("teacher: bwn", "teacher: bibert"),
             r"x.yaml:4: stages\[2\] \(bibert\).teacher: 'bibert' is not an earlier stage "
             r"\(earlier: teacher, bwn\)"),
            (text.replace("teacher: bwn", "teacher: bwm"),
             r"x.yaml:4: .*'bwm' is not an earlier stage"),
            (text.replace("teacher: bwn", "teacher: bwn, loss: ce"),
             r"x.yaml:4: stages\[2\] \(bibert\).teacher: only distilling stages have a teacher "
             r"\(this one is a bibert stage with loss 'ce'\)"),
            (BASE.replace("    type: split\n", "    type: split\n    teacher: ternary\n"),
             rf"x.yaml:{_line_of(BASE, 'type: split') + 1}: stages\[2\] \(split\).teacher: only "
             r"distilling stages have a teacher")):
        _refused(bad, message)
