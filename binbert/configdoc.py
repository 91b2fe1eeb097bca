"""``binbert config-doc``: docs/config.md, the reference of every key of the training configs
and of the hardware presets, rendered from the schema itself.

The keys, types and defaults are the dataclass fields (sw.config, sw.qbert.QuantBertConfig,
hw.fpga.presets.EncoderPreset); meanings, bounds and the stage types a key acts on are their
``metadata``; allowed values are the constants the validators check against. Editing any of them
without re-running ``binbert config-doc`` (``make config-doc``) fails
tests/binbert/test_configdoc.py, and ``binbert config-doc --check`` says so too.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "config.md"

# One short stage of each type, and the stages an example needs before it to load (a split
# follows a ternary stage, students follow the teacher). render() loads every example.
EXAMPLES = {
    "teacher": "{name: teacher, type: teacher, epochs: 3, learning_rate: 5.0e-5}",
    "ternary": "{name: ternary, type: ternary, width: 0.5, epochs: 6, "
               "quant: {weight: twn, act: uniform, act_bits: 8}}",
    "split": "{name: split, type: split, budget: 0.5}",
    "binary": "{name: binary, type: binary, epochs: 6, learning_rate: 3.0e-5}",
    "bibert": "{name: bibert, type: bibert, epochs: 3, learning_rate: 2.0e-4, loss: ce_dmd, "
              "quant: {act_threshold: true}, threshold_lr: 1.0e-3}",
}
BEFORE = {"teacher": (), "ternary": ("teacher",), "split": ("teacher", "ternary"),
          "binary": ("teacher", "ternary", "split"), "bibert": ("teacher",)}


# ---------------------------------------------------------------------------------------------
# Cells


def _bare(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _type(tp: Any) -> str:
    tp, nullable = _bare(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        name = "string"
    elif dataclasses.is_dataclass(tp) or tp is dict or origin is dict:
        name = "mapping"
    elif origin in (tuple, list):
        name = "list"
    else:
        name = {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]
    return f"{name} or null" if nullable else name


def _value(v: Any) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f"`{v}`" if v else '`""`'
    if isinstance(v, tuple):
        return "`[" + ", ".join(map(str, v)) + "]`"
    return f"`{v}`"


def _flow(d: dict) -> str:
    return "`{" + ", ".join(f"{k}: {_plain(v)}" for k, v in d.items()) + "}`"


def _plain(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _default(f: dataclasses.Field, path: str) -> str:
    if f.default is not dataclasses.MISSING:
        return _value(f.default)
    if f.default_factory is dataclasses.MISSING:
        return "**required**"
    made = f.default_factory()
    if dataclasses.is_dataclass(made):
        return _link(path)
    return "`{}`" if made == {} else _value(made)


def _allowed(tp: Any, f: dataclasses.Field, override=None) -> str:
    tp, nullable = _bare(tp)
    parts = []
    if override is not None:
        parts.append(override)
    elif typing.get_origin(tp) is Literal:
        parts.append(", ".join(_value(a) for a in typing.get_args(tp)))
    elif "choices" in f.metadata:
        parts.append(", ".join(_value(a) for a in f.metadata["choices"]))
    elif tp is bool:
        parts.append("`true`, `false`")
    if "range" in f.metadata:
        parts.append(f.metadata["range"])
    if nullable:
        parts.append("`null`")
    return ", ".join(parts)


def _link(section: str) -> str:
    return f"[`{section}`](#{_anchor(section)})"


def _anchor(path: str) -> str:
    return "".join(c for c in path if c.isalnum() or c in "-_ ").replace(" ", "-").lower()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _notes(items: list[tuple[str, dataclasses.Field]]) -> list[str]:
    return [f"- `{path}`: {f.metadata['note']}" for path, f in items if "note" in f.metadata]


def _key_rows(cls: type, prefix: str, overrides: dict[str, str] | None = None,
              extra=None) -> tuple[list[list[str]], list[tuple[str, dataclasses.Field]]]:
    """One row per field of ``cls`` (key, type, default, allowed, meaning[, extra(f)])."""
    hints = typing.get_type_hints(cls)
    rows, items = [], []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        path = f"{prefix}{f.name}"
        row = [f"`{path}`", _type(hints[f.name]), _default(f, path),
               _allowed(hints[f.name], f, (overrides or {}).get(f.name)), f.metadata["doc"]]
        if extra is not None:
            row.insert(4, extra(f))
        rows.append(row)
        items.append((path, f))
    return rows, items


HEADER = ["key", "type", "default", "allowed", "meaning"]


def _section(title: str, cls: type, prefix: str, intro: str = "",
             overrides: dict[str, str] | None = None, after: list[str] = ()) -> list[str]:
    """A heading, the key table of ``cls``, ``after`` (more tables), then the keys' notes."""
    rows, items = _key_rows(cls, prefix, overrides)
    out = [f"### {title}", ""]
    if intro:
        out += [intro, ""]
    out += _table(HEADER, rows) + [""] + list(after)
    notes = _notes(items)
    return out + (notes + [""] if notes else [])


# ---------------------------------------------------------------------------------------------
# Training configs


def _stage_types_of(f: dataclasses.Field) -> tuple[str, ...]:
    from sw.config import STAGE_TYPES

    return tuple(f.metadata.get("stages", STAGE_TYPES))


def _checked_example(stage_type: str) -> str:
    """The example stage, loaded behind the stages it needs: a stale example fails here."""
    from sw.config import config_from_text

    text = "stages:\n" + "".join(f"  - {EXAMPLES[t]}\n" for t in (*BEFORE[stage_type], stage_type))
    cfg = config_from_text(text, f"binbert.configdoc.EXAMPLES[{stage_type!r}]")
    assert cfg.stages[-1].type == stage_type, stage_type
    return EXAMPLES[stage_type]


def _training() -> list[str]:
    from sw.backbone import MINILM, TINY
    from sw.config import (LOSS_DOCS, STAGE_QUANT, STAGE_TYPE_DOCS, AugmentConfig, Config,
                           DataConfig, DistillConfig, DistillOverride, ModelConfig, StageConfig,
                           TinyModel, TrainConfig)
    from sw.data import TASKS
    from sw.qbert import ACT_KEYS, QuantBertConfig

    out = ["## Training configs", "",
           "`models/*.yaml`, read by `binbert train`, `binbert demo` and `binbert e2e` "
           "(`--config`). Every key is optional except `stages`; `models/tiny-test.yaml` is a "
           "small complete one.", ""]
    rows = [[_link(f.name), f.metadata["doc"]]
            for f in dataclasses.fields(Config)]
    out += _table(["section", "what"], rows) + [""]

    out += _section("model", ModelConfig, "model.",
                    overrides={"backbone": f"`{MINILM}`, `{TINY}`, a directory"})
    out += _section("model.tiny", TinyModel, "model.tiny.")
    tasks = _table(["task", "GLUE folder", "kind"],
                   [[f"`{t}`", s.folder, "regression" if s.regression else
                     f"classification ({s.num_labels} labels)"] for t, s in TASKS.items()])
    out += _section("data", DataConfig, "data.",
                    overrides={"task": ", ".join(_value(t) for t in TASKS),
                               "augment": _link("data.augment")}, after=tasks + [""])
    out += _section("data.augment", AugmentConfig, "data.augment.",
                    "Off unless `data.augment` is given; given, its keys default as below.")
    out += _section("train", TrainConfig, "train.")
    override_keys = ", ".join(f"`{f.name}`" for f in dataclasses.fields(DistillOverride))
    out += _section("distill", DistillConfig, "distill.",
                    f"A stage's own `distill` mapping may set any of {override_keys}; the keys it "
                    f"sets replace these for that stage.")

    # stage keys, with the stage types each acts on
    def acts_on(f):
        on = _stage_types_of(f)
        return "all" if set(on) == set(STAGE_TYPE_DOCS) else ", ".join(on)

    rows, items = _key_rows(StageConfig, "stages[].", extra=acts_on,
                            overrides={"quant": _link("quant"),
                                       "distill": _link("distill") + " keys"})
    out += ["### stages", "",
            "A list of mappings, one per stage, run in order; each writes `OUT/<name>/`. A key "
            "set on a stage type outside its `stage types` is refused, except where the stage "
            "types below say it is ignored.", ""]
    out += _table(HEADER[:4] + ["stage types"] + HEADER[4:], rows) + [""]
    out += _notes(items) + [""]

    out += ["### Stage types", ""]
    quant_field, loss_field = (next(f for f in dataclasses.fields(StageConfig) if f.name == n)
                               for n in ("quant", "loss"))
    for t in STAGE_TYPE_DOCS:
        keys = [f"`{f.name}`" for f in dataclasses.fields(StageConfig) if t in _stage_types_of(f)]
        ignored = [f"`{f.name}`" for f in dataclasses.fields(StageConfig)
                   if t in f.metadata.get("ignored", ())]
        loss = ("— (does not train)" if t in loss_field.metadata.get("ignored", ())
                else f"`{StageConfig(name=t, type=t).resolved_loss}`")
        if t in _stage_types_of(quant_field):
            quant = f"starts from {_flow(STAGE_QUANT.get(t, {}))}"
        else:
            quant = "none of its own (`quant` is refused)"
        out += [f"#### {t}", "", STAGE_TYPE_DOCS[t] + ".", "",
                f"- default loss: {loss}", f"- quantization: {quant}",
                f"- keys: {', '.join(keys)}"]
        if ignored:
            out.append(f"- accepted but ignored: {', '.join(ignored)}")
        if t in ("binary", "bibert"):
            out.append("- with `init: previous` after a split stage, `quant` may set only "
                       + ", ".join(f"`{k}`" for k in ACT_KEYS))
        out += ["", "```yaml", "stages:", f"  - {_checked_example(t)}", "```", ""]

    out += ["### Losses", "", "`stages[].loss`; `ce` is the only loss of a teacher stage.", ""]
    out += _table(["loss", "what"], [[f"`{k}`", v] for k, v in LOSS_DOCS.items()]) + [""]

    out += _section("quant", QuantBertConfig, "quant.",
                    "A stage's `quant` mapping: these keys override the stage type's starting "
                    "quantization (stage types above); the defaults below apply where neither "
                    "sets a key.")
    return out


# ---------------------------------------------------------------------------------------------
# Hardware presets


def _presets() -> list[str]:
    from hw.fpga.presets import ATTENTION, INT_RANGES, EncoderPreset
    from hw.fpga.targets import TARGETS
    from hw.rtl.layernorm import MULTIPLIERS
    from hw.rtl.mvu import BUFFER_STYLES

    # the constants preset_from_text checks these keys against
    choices = {"attention": ATTENTION, "layernorm": MULTIPLIERS, "mvu_buffer": BUFFER_STYLES,
               "target": tuple(TARGETS)}
    overrides = {k: ", ".join(_value(v) for v in vs) for k, vs in choices.items()}
    for k, (lo, hi) in INT_RANGES.items():
        overrides[k] = f">= {lo}" if hi is None else f"[{lo}, {hi}]"
    rows, _ = _key_rows(EncoderPreset, "", overrides)
    return ["## Hardware presets", "",
            "`models/hw/encoder-*.yaml`, read by `binbert bitstream --layer encoder --config` "
            "(`make bitstream LAYER=encoder CONFIG=...`): one flat mapping of single values. "
            "`models/hw/encoder-tiny.yaml` is a complete one.", ""] \
        + _table(HEADER, rows) + [""]


def render() -> str:
    """docs/config.md as the schema describes it now."""
    out = ["# Configuration reference", "",
           "<!-- Generated by `binbert config-doc` (`make config-doc`) from sw/config.py, "
           "sw/qbert.py, sw/data.py and hw/fpga/presets.py: edit those and regenerate. "
           "tests/binbert/test_configdoc.py fails when this file is stale. -->", "",
           "Two kinds of YAML file configure binbert: training configs and hardware presets. "
           "Both refuse an unknown key, a wrong type or a bad value with `FILE:LINE: message`. "
           "A key left out takes its default; `null` is a value only where `allowed` lists it.",
           ""]
    out += _training() + _presets()
    while out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "config-doc", help="write docs/config.md: every training-config and preset key",
        description="Render the configuration reference (every key of the training configs "
                    "and of the hardware presets: type, default, allowed values, meaning, and "
                    "an example per stage type) from the schema. --check compares instead of "
                    "writing.")
    p.add_argument("--out", default=str(_shown(DOC_PATH)),
                   help="the file to write (default docs/config.md)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the file differs from the schema's rendering")
    p.set_defaults(func=cmd_config_doc)


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def cmd_config_doc(args: argparse.Namespace) -> int:
    out = Path(args.out)
    text = render()
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            what = "missing" if current is None else "stale"
            print(f"binbert: config-doc: {out} is {what}: run `binbert config-doc --out {out}` "
                  f"(make config-doc)", file=sys.stderr)
            return 1
        print(f"{out}: up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0
