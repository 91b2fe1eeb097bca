"""binbert.configdoc: docs/config.md is the schema's rendering, names every key, and the schema's
doc metadata (bounds, stage types, allowed values) says what the loaders enforce."""
import dataclasses
import re
import typing

import pytest
import yaml

from binbert import configdoc
from binbert.cli import main
from hw.errors import BinbertError
from hw.fpga import presets
from sw import config as sc
from sw.data import TASKS
from sw.qbert import QuantBertConfig

STALE = "docs/config.md is stale: run `make config-doc` (binbert config-doc)"

# keys a probe must set beside the probed one for the config to be valid at all
COMPANIONS = {
    "stages[].threshold_lr": {"quant": {"act": "sign", "act_threshold": True}},
    "stages[].scale_lr": {"quant": {"learned_scale": True}},
    "model.tiny.hidden_size": {"model.tiny.num_heads": 1},
}
# the stages a probed stage follows (a binary stage right after the teacher binarises the
# teacher's weights, so it may set any quant key)
BEFORE = {"teacher": (), "ternary": ("teacher",), "split": ("teacher", "ternary"),
          "binary": ("teacher",), "bibert": ("teacher",)}
# a value each stage key takes on the stage types it acts on (its effect, not its default)
STAGE_SAMPLES = {
    "epochs": 2.0, "steps": 5, "learning_rate": 1e-4, "loss": "ce", "intermediate_fraction": 0.3,
    "width": 0.5, "quant": {"act_integer": True}, "budget": 0.5, "budget_mb": 10.0,
    "eval_every": 3, "distill": {"pred": 0.5}, "dropout": 0.1, "init": "previous",
    "augment": False, "threshold_lr": 1e-3, "scale_lr": 1e-3, "teacher": "teacher", "ema": 0.99,
}


@pytest.fixture(scope="module")
def rendered():
    return configdoc.render()


def test_doc_is_current(rendered):
    assert configdoc.DOC_PATH.read_text(encoding="utf-8") == rendered, STALE


def _schema_keys():
    """Every documented key path: the training config's sections, quant, the preset."""
    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            path = f"{prefix}{f.name}"
            yield path, f
            tp, _ = configdoc._bare(hints[f.name])
            if typing.get_origin(tp) is tuple:
                tp = typing.get_args(tp)[0]
                path += "[]"
            if dataclasses.is_dataclass(tp) and tp is not sc.DistillOverride:
                yield from walk(tp, path + ".")
    yield from walk(sc.Config, "")
    yield from ((f"quant.{f.name}", f) for f in dataclasses.fields(QuantBertConfig))
    yield from ((f.name, f) for f in dataclasses.fields(presets.EncoderPreset)
                if not f.metadata.get("internal"))


def test_every_key_appears_with_a_doc(rendered):
    keys = list(_schema_keys())
    assert len(keys) > 80
    for path, f in keys:
        assert f.metadata.get("doc"), f"{path}: no doc metadata"
        assert re.search(rf"^\| \[?`{re.escape(path)}`", rendered, re.M), \
            f"{path} missing from docs/config.md"
    # a stage's distill overrides are the global keys, listed by name
    over = [f.name for f in dataclasses.fields(sc.DistillOverride)]
    assert over == [f.name for f in dataclasses.fields(sc.DistillConfig)]
    assert ", ".join(f"`{k}`" for k in over) in rendered
    for name in sc.STAGE_TYPES:
        assert f"#### {name}\n" in rendered
    for loss in sc.LOSSES:
        assert f"| `{loss}` |" in rendered


def test_constants_match_the_schema():
    hints = {cls: typing.get_type_hints(cls) for cls in (sc.DataConfig, sc.StageConfig)}
    assert typing.get_args(hints[sc.DataConfig]["task"]) == sc.TASKS == tuple(TASKS)
    assert typing.get_args(hints[sc.StageConfig]["type"]) == sc.STAGE_TYPES \
        == tuple(sc.STAGE_TYPE_DOCS)
    loss, _ = configdoc._bare(hints[sc.StageConfig]["loss"])
    assert typing.get_args(loss) == sc.LOSSES == tuple(sc.LOSS_DOCS)


# ---------------------------------------------------------------------------------------------
# the metadata against the loaders


def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value


def _stages_for(stage_type: str, stage: dict) -> list:
    return [{"name": t, "type": t} for t in BEFORE[stage_type]] + [stage]


def _config(path: str, value, stage_type: str | None = None) -> dict:
    """The smallest config that sets ``path`` (``stages[].k`` on a ``stage_type`` stage, or
    ``quant.k`` in a ternary stage's quant) to ``value``, with its companions."""
    extra = COMPANIONS.get(path, {})
    if path.startswith("stages[]."):
        stage_type = stage_type or _field(path).metadata.get("stages", sc.STAGE_TYPES)[0]
        stage = {"name": stage_type, "type": stage_type, **extra, path.split(".", 1)[1]: value}
        return {"stages": _stages_for(stage_type, stage)}
    if path.startswith("quant."):
        quant = {"act": "uniform", path.split(".", 1)[1]: value}
        return {"stages": _stages_for("ternary", {"name": "ternary", "type": "ternary",
                                                  "quant": quant})}
    cfg = {"stages": [{"name": "teacher", "type": "teacher"}]}
    for k, v in extra.items():
        _set(cfg, k, v)
    _set(cfg, path, value)
    return cfg


def _field(path: str) -> dataclasses.Field:
    return dict(_schema_keys())[path]


def _loads(cfg: dict) -> bool:
    try:
        sc.config_from_text(yaml.safe_dump(cfg), "probe.yaml")
        return True
    except BinbertError:
        return False


def test_stage_types_are_where_the_loader_accepts_a_key():
    fields = {f.name: f for f in dataclasses.fields(sc.StageConfig)}
    assert set(STAGE_SAMPLES) == set(fields) - {"name", "type"}
    for key, sample in STAGE_SAMPLES.items():
        meta = fields[key].metadata
        acts_on = set(meta.get("stages", sc.STAGE_TYPES))
        ignored = set(meta.get("ignored", ()))
        assert not acts_on & ignored, key
        accepted = {t for t in sc.STAGE_TYPES if _loads(_config(f"stages[].{key}", sample, t))}
        assert accepted == acts_on | ignored, key


def _probes(bounds: str, integer: bool):
    """(value, accepted) pairs either side of each bound of a range like '> 0' or '[0, 1)'."""
    step = 1 if integer else 1e-3
    m = re.fullmatch(r"(>=?) (-?[\d.]+)", bounds)
    if m:
        lo = (int if integer else float)(m[2])
        return [(lo, m[1] == ">="), (lo - step if m[1] == ">=" else lo + step, m[1] == ">")]
    m = re.fullmatch(r"([\[(])(-?[\d.]+), (-?[\d.]+)([\])])", bounds)
    assert m, f"unparsed range {bounds!r}"
    num = int if integer else float
    lo, hi = num(m[2]), num(m[3])
    lo_in, hi_in = m[1] == "[", m[4] == "]"
    return [(lo, lo_in), (lo - step if lo_in else lo + step, not lo_in),
            (hi, hi_in), (hi + step if hi_in else hi - step, not hi_in)]


def test_ranges_are_what_the_loader_enforces():
    checked = 0
    for path, f in _schema_keys():
        if "range" not in f.metadata or "." not in path:
            continue  # preset keys take their bounds from presets.INT_RANGES itself
        cls_hints = typing.get_type_hints(QuantBertConfig if path.startswith("quant.") else
                                          _owner(path))
        tp, _ = configdoc._bare(cls_hints[f.name])
        for value, ok in _probes(f.metadata["range"], tp is int):
            assert _loads(_config(path, value)) == ok, (path, value, ok)
        checked += 1
    assert checked > 30


def _owner(path: str) -> type:
    cls = sc.Config
    for part in path.removesuffix("." + path.rsplit(".", 1)[1]).split("."):
        tp, _ = configdoc._bare(typing.get_type_hints(cls)[part.removesuffix("[]")])
        cls = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
    return cls


def test_quant_choices_are_accepted():
    for f in dataclasses.fields(QuantBertConfig):
        for v in f.metadata.get("choices", ()):
            QuantBertConfig.from_dict({f.name: v})
        if "choices" in f.metadata:
            with pytest.raises(BinbertError):
                QuantBertConfig.from_dict({f.name: "nonesuch"})


def test_preset_allowed_values_are_what_the_preset_loader_accepts(rendered):
    base = yaml.safe_load((presets.PRESET_DIR / "encoder-tiny.yaml").read_text())
    companions = {"bi": {"activation_bits": 1}}  # Bi-Attention is the W1A1 layer
    checked = set()
    for row in rendered.split("## Hardware presets", 1)[1].splitlines():
        m = re.fullmatch(r"\| `(\w+)` \| string \| [^|]+ \| ((?:`[\w-]+`(?:, )?)+) \|.*", row)
        if not m:
            continue
        key = m[1]
        for v in re.findall(r"`([\w-]+)`", m[2]):
            presets.preset_from_text(yaml.safe_dump({**base, key: v, **companions.get(v, {})}))
        with pytest.raises(BinbertError, match=key):
            presets.preset_from_text(yaml.safe_dump({**base, key: "nonesuch"}))
        checked.add(key)
    assert checked == {"attention", "layernorm", "mvu_buffer", "target"}


# ---------------------------------------------------------------------------------------------
# the command


def test_config_doc_writes_and_checks(tmp_path, capsys, rendered):
    out = tmp_path / "config.md"
    assert main(["config-doc", "--check", "--out", str(out)]) == 1
    assert f"{out} is missing" in capsys.readouterr().err
    assert main(["config-doc", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == rendered
    assert main(["config-doc", "--check", "--out", str(out)]) == 0
    capsys.readouterr()
    stale = rendered.replace("`0.1`", "`0.2`", 1)  # a default edited without regenerating
    assert stale != rendered
    out.write_text(stale, encoding="utf-8")
    assert main(["config-doc", "--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out} is stale" in err and "binbert config-doc" in err


def test_readme_train_example_loads():
    readme = (configdoc.ROOT / "README.md").read_text(encoding="utf-8")
    train = readme.split("**Train**", 1)[1].split("\n**", 1)[0]
    assert "docs/config.md" in train
    example = train.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert sc.config_from_text(example, "README.md").stages
