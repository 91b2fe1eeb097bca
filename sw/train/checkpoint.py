"""Checkpoint directories: atomic save, load (rebuilding pruned, quantized and split models),
the state file that marks a complete one, the pruned structure and the teacher-head maps.

A checkpoint directory holds ``model.safetensors``, ``bert_config.json`` (HF BertConfig),
``structure.json`` (pruned shapes), ``quant.json`` (QuantBertConfig or null), ``config.yaml``
(the resolved run config), ``state.json`` (stage name/type, step, metrics, fingerprint; written
last, so its presence marks a complete directory) and, in ``last/``, ``training.pt``.
Directories are written under a temporary name and swapped in with ``os.replace``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hw.errors import BinbertError
from hw.files import atomic_write_text, cannot_write, disk_full, no_space, writing
from sw import backbone as bb
from sw.config import Config, config_from_text, config_to_yaml
from sw.qmodel import quant_config_of

STATE = "state.json"
MODEL = "model.safetensors"
TRAINING = "training.pt"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON at ``path`` atomically (tmp file + os.replace)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=str))


def _library_write_error(path: Path, exc: Exception) -> BinbertError:
    """safetensors and torch.save report a failed write as their own exception: its errno
    when the message names one ('os error 28'), else a full disk when there is no room left."""
    text = str(exc)
    m = re.search(r"os error (\d+)", text)
    if m:
        return cannot_write(path, OSError(int(m[1]), os.strerror(int(m[1]))))
    m = re.search(r"strerror: (.+)", text)
    if m:
        why = m[1].strip()
    elif disk_full(path.parent):
        why = no_space().strerror
    else:
        why = (text.splitlines() or [type(exc).__name__])[0]
    return BinbertError(f"{path}: cannot write ({why})")


# Model attribute (and structure.json entry): per layer, the teacher head each head of a
# pruned student came from, so distillation can match heads one to one (sw.distill).
HEAD_MAP = "binbert_head_map"


def model_structure(model: nn.Module) -> dict:
    """Shapes that a fresh model of the same BertConfig may lack (pruned heads / neurons)."""
    bert = model.bert
    layers = []
    for layer in bert.encoder.layer:
        s = layer.attention.self
        layers.append({
            "heads": int(s.query.out_features // s.attention_head_size),
            "head_size": int(s.attention_head_size),
            "intermediate": int(layer.intermediate.dense.out_features),
        })
    out = {"layers": layers}
    if getattr(model, HEAD_MAP, None) is not None:
        out["teacher_heads"] = getattr(model, HEAD_MAP)
    return out


def teacher_heads(student: nn.Module, teacher: nn.Module) -> list[list[int]]:
    """For a student freshly pruned from ``teacher``: per layer, the teacher index of each
    student head (found by its query rows, which pruning copies exactly)."""
    out = []
    for i, (ls, lt) in enumerate(zip(student.bert.encoder.layer, teacher.bert.encoder.layer)):
        d = ls.attention.self.attention_head_size
        ws, wt = ls.attention.self.query.weight.detach(), lt.attention.self.query.weight.detach()
        row = []
        for j in range(ws.shape[0] // d):
            match = [h for h in range(wt.shape[0] // d)
                     if torch.equal(ws[j * d:(j + 1) * d], wt[h * d:(h + 1) * d])]
            if not match:
                raise BinbertError(f"layer {i} head {j} of the pruned student is no teacher head")
            row.append(match[0])
        out.append(row)
    return out


def apply_structure(model: nn.Module, structure: dict) -> nn.Module:
    """Resize a freshly built full-precision model to ``structure`` (before quantize_bert)."""
    from sw.prune import keep_units

    layers = model.bert.encoder.layer
    if len(structure["layers"]) != len(layers):
        raise BinbertError(f"checkpoint structure has {len(structure['layers'])} layers, its "
                           f"BertConfig {len(layers)}")
    for layer, spec in zip(layers, structure["layers"]):
        s = layer.attention.self
        if s.attention_head_size != spec["head_size"]:
            # HF derives head_size from hidden/heads; a pruned config cannot say it: rebuild
            # the projections at the recorded head size (values come from the state dict).
            s.attention_head_size = spec["head_size"]
            s.scaling = spec["head_size"] ** -0.5
            hidden = s.query.in_features
            total = spec["head_size"] * (s.query.out_features // spec["head_size"])
            for name in ("query", "key", "value"):
                setattr(s, name, nn.Linear(hidden, total))
            layer.attention.output.dense = nn.Linear(total, layer.attention.output.dense.out_features)
            s.num_attention_heads = total // spec["head_size"]
            s.all_head_size = total
    heads = [torch.arange(spec["heads"]) for spec in structure["layers"]]
    neurons = [torch.arange(spec["intermediate"]) for spec in structure["layers"]]
    cur = model_structure(model)["layers"]
    if any(c["heads"] < spec["heads"] or c["intermediate"] < spec["intermediate"]
           for c, spec in zip(cur, structure["layers"])):
        raise BinbertError("checkpoint structure is wider than its BertConfig")
    if cur != structure["layers"]:
        keep_units(model, heads, neurons)
    if structure.get("teacher_heads") is not None:
        setattr(model, HEAD_MAP, structure["teacher_heads"])
    return model


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict, detached, on the CPU, contiguous (what safetensors stores)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, cfg: Config, state: dict,
                    training: dict | None = None) -> None:
    """Write a complete checkpoint directory at ``path`` atomically (tmp dir + os.replace)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    sd = cpu_state_dict(model)
    # safetensors refuses aliased storage; clone duplicates (none in BERT for classification)
    seen: dict[int, str] = {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            sd[k] = v.clone()
        seen[ptr] = k
    try:
        # a failed write (read-only, full disk) leaves no half-written tmp directory; the
        # checkpoint at ``path`` (or, mid-swap, ``path.old``) stays whole
        with writing(path):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _write_files(tmp, path, sd, model, cfg, state, training)
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_files(tmp: Path, dest: Path, sd: dict, model: nn.Module, cfg: Config, state: dict,
                 training: dict | None) -> None:
    """The files of checkpoint ``dest``, into ``tmp`` (errors name ``dest``'s files)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(sd, str(tmp / MODEL))
    except SafetensorError as exc:
        raise _library_write_error(dest / MODEL, exc) from exc
    hf = model.config.to_dict()
    (tmp / "bert_config.json").write_text(json.dumps(hf, indent=1, default=str))
    (tmp / "structure.json").write_text(json.dumps(model_structure(model), indent=1))
    qc = quant_config_of(model)
    (tmp / "quant.json").write_text(json.dumps(qc.to_dict() if qc is not None else None, indent=1))
    (tmp / "config.yaml").write_text(config_to_yaml(cfg))
    if training is not None:
        try:
            torch.save(training, tmp / TRAINING)
        except RuntimeError as exc:  # torch's stream writer: the I/O error as text
            if "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
                raise
            raise _library_write_error(dest / TRAINING, exc) from exc
    (tmp / STATE).write_text(json.dumps(state, indent=1, default=str))


def resolve_checkpoint(path: Path) -> Path | None:
    """``path`` if complete, else a complete ``path.old`` left by an interrupted swap."""
    path = Path(path)
    for cand in (path, path.with_name(path.name + ".old")):
        if (cand / STATE).is_file() and (cand / MODEL).is_file():
            return cand
    return None


def read_state(path: Path) -> dict:
    try:
        return json.loads((Path(path) / STATE).read_text())
    except FileNotFoundError:
        raise BinbertError(f"{path}: not a binbert checkpoint (no {STATE})") from None
    except json.JSONDecodeError as exc:
        raise BinbertError(f"{path}/{STATE}: corrupt ({exc.msg})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint directory. Returns (model, state dict, Config)."""
    from safetensors.torch import load_file

    from sw.qbert import QuantBertConfig, quantize_bert

    given = Path(path)
    p = resolve_checkpoint(given)
    if p is None:
        if not given.exists():
            raise BinbertError(f"{given}: checkpoint directory does not exist")
        raise BinbertError(f"{given}: not a complete binbert checkpoint (needs {STATE} and {MODEL})")
    state = read_state(p)
    try:
        hf = json.loads((p / "bert_config.json").read_text())
        structure = json.loads((p / "structure.json").read_text())
        qd = json.loads((p / "quant.json").read_text())
        cfg = config_from_text((p / "config.yaml").read_text(), str(p / "config.yaml"))
    except FileNotFoundError as exc:
        raise BinbertError(f"{p}: checkpoint is missing {Path(exc.filename).name}") from None
    except json.JSONDecodeError as exc:
        raise BinbertError(f"{p}: corrupt checkpoint JSON ({exc.msg})") from None
    hf.pop("binbert_quant", None)
    model = bb.model_from_bert_config(hf)
    apply_structure(model, structure)
    if qd is not None:
        quantize_bert(model, QuantBertConfig.from_dict(qd))
    sd = load_file(str(p / MODEL), device="cpu")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}")
        raise BinbertError(f"{p / MODEL}: does not match its config ({what}; "
                           f"{len(missing)} missing, {len(unexpected)} unexpected)")
    model.to(map_location)
    return model, state, cfg


def distill_head_map(student: nn.Module, teacher: nn.Module,
                     fp_teacher: nn.Module | None) -> list[list[int]] | None:
    """Per layer, the ``teacher`` head each student head compares with (sw.distill's
    ``head_map``). Head maps record teacher-stage heads; when the teacher is itself a pruned
    stage, each student head maps to that model's position of the same teacher-stage head."""
    smap = getattr(student, HEAD_MAP, None)
    if teacher is fp_teacher:
        return smap
    tmap = getattr(teacher, HEAD_MAP, None)
    if smap is None or tmap is None:
        # a full-width teacher stage keeps the teacher's head order; a pruned teacher of a
        # full-width student compares head averages (sw.distill without a map)
        return smap
    out = []
    for i, (s_heads, t_heads) in enumerate(zip(smap, tmap)):
        missing = [h for h in s_heads if h not in t_heads]
        if missing:
            raise BinbertError(f"distill: layer {i} student heads {missing} were pruned from the "
                               f"teacher stage's model")
        out.append([t_heads.index(h) for h in s_heads])
    return out
