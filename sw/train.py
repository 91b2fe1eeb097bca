"""Training stages, loop, checkpoints: teacher -> ternary (0.5x) -> split -> binary, or BiBERT.

Output layout of ``binbert train --out OUT``::

    OUT/<stage>/final/   the stage's result (its best dev checkpoint, or the last one with
                         train.select: last); the next stage starts from it
    OUT/<stage>/best/    best dev checkpoint while the stage runs (renamed to final at the end);
                         a stage that continues a trained student (binary after a split,
                         ``init: previous``) evaluates it first, and that evaluation competes
    OUT/<stage>/last/    resumable state (model + optimizer + scheduler + step + RNG), removed
                         once final exists (with a stage's ``ema``, the live weights; the
                         average, which best/ and final/ hold, is in its training.pt)
    OUT/<stage>/metrics.json, OUT/<stage>/curve.png, OUT/summary.json, OUT/curve.png

A checkpoint directory holds ``model.safetensors``, ``bert_config.json`` (HF BertConfig),
``structure.json`` (pruned shapes), ``quant.json`` (QuantBertConfig or null), ``config.yaml``
(the resolved run config), ``state.json`` (stage name/type, step, metrics, fingerprint; written
last, so its presence marks a complete directory) and, in ``last/``, ``training.pt``.
Directories are written under a temporary name and swapped in with ``os.replace``.

Stages (BinaryBERT, Bai et al. 2021; BiBERT, Qin et al. 2022):

* ``teacher``: full-precision fine-tuning with the task loss.
* ``ternary``: a copy of the teacher, pruned to ``width`` (DynaBERT importance, sw.prune), TWN
  weights and quantized activations (sw.qbert), two-stage distillation from the teacher.
* ``split``: ternary weight splitting (sw.split; with ``budget``, adaptive splitting via
  sw.adaptive). No training; the optimizer and scheduler of the next stage start fresh, as the
  architecture changed (BinaryBERT §5.3).
* ``binary``: fine-tunes the split model with distillation; directly after the teacher it is
  the BWN baseline (a teacher copy binarised directly).
* ``bibert``: W1A1 with Bi-Attention from the teacher, direction-matching distillation.

Single process on CPU by default; under ``torchrun`` (``WORLD_SIZE`` set) it uses
torch.distributed: DistributedSampler order, a DDP-wrapped student, rank-0 logging/checkpoints.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hw.errors import BinbertError
from sw import backbone as bb
from sw.config import (Config, StageConfig, config_from_text, config_to_dict, config_to_yaml,
                       stage_quant_dict)
from sw.data import Encoded, epoch_batches, load_split, loader, task_spec
from sw.distill import distill_loss
from sw.metrics import task_metrics

STATE = "state.json"
MODEL = "model.safetensors"
TRAINING = "training.pt"



# ---------------------------------------------------------------------------------------------
# distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1 or torch.distributed.is_initialized()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()


def init_distributed() -> Dist:
    """torch.distributed from torchrun's environment (WORLD_SIZE set), else single process."""
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local, device=device)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=str))
    os.replace(tmp, path)


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


def quant_config(model: nn.Module):
    from sw.qbert import quant_config_of

    return quant_config_of(model)


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, cfg: Config, state: dict,
                    training: dict | None = None) -> None:
    """Write a complete checkpoint directory at ``path`` atomically (tmp dir + os.replace)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sd = _state_dict(model)
    # safetensors refuses aliased storage; clone duplicates (none in BERT for classification)
    seen: dict[int, str] = {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            sd[k] = v.clone()
        seen[ptr] = k
    save_file(sd, str(tmp / MODEL))
    hf = model.config.to_dict()
    (tmp / "bert_config.json").write_text(json.dumps(hf, indent=1, default=str))
    (tmp / "structure.json").write_text(json.dumps(model_structure(model), indent=1))
    qc = quant_config(model)
    (tmp / "quant.json").write_text(json.dumps(qc.to_dict() if qc is not None else None, indent=1))
    (tmp / "config.yaml").write_text(config_to_yaml(cfg))
    if training is not None:
        torch.save(training, tmp / TRAINING)
    (tmp / STATE).write_text(json.dumps(state, indent=1, default=str))
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


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


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict(model: nn.Module, ds: Encoded, batch_size: int, device=None) -> np.ndarray:
    was = model.training
    model.eval()
    out = []
    device = device or next(model.parameters()).device
    try:
        for batch in loader(ds, epoch_batches(len(ds), batch_size, 0, 0, shuffle=False)):
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            logits = model(**batch).logits
            out.append(logits.float().cpu())
    finally:
        model.train(was)
    logits = torch.cat(out)
    return logits[:, 0].numpy() if logits.shape[1] == 1 else logits.argmax(-1).numpy()


def evaluate(model: nn.Module, ds: Encoded, task: str, batch_size: int = 128,
             device=None) -> dict[str, float]:
    pred = predict(model, ds, batch_size, device)
    return task_metrics(task, pred, ds.labels.numpy())


# ---------------------------------------------------------------------------------------------
# the trainer


def _fingerprint(cfg: Config, upto: int, max_steps: int | None) -> dict:
    """What determines the result of stages[0..upto]: compared with a checkpoint's."""
    d = config_to_dict(cfg)
    d["data"].pop("dir", None)
    for k in ("log_every", "threads", "eval_batch_size", "checkpoint_every"):
        d["train"].pop(k, None)
    d["stages"] = d["stages"][: upto + 1]
    # augmented rows only feed distilling stages that read them: a teacher, or a stage with
    # ``augment: false``, trained without them is the same stage, shareable between runs with and
    # without data.augment (the flag itself is recorded as what it does, not as written)
    used = [s.augmented(cfg.data) for s in cfg.stages[: upto + 1]]
    for s in d["stages"]:
        s.pop("augment", None)
    if not any(used):
        d["data"].pop("augment", None)
    elif used != [s.resolved_loss != "ce" for s in cfg.stages[: upto + 1]]:
        d["augmented"] = used  # only where a stage opts out: older fingerprints stay valid
    d["max_steps"] = max_steps
    return d


def _init_from(model: nn.Module, prev: nn.Module, teacher: nn.Module, stage: str) -> None:
    """Start ``model`` from ``prev``'s latent weights (``init: previous``): every parameter the
    teacher has must come from ``prev`` with the same shape. Activation quantizer state (clips,
    steps) is not carried over (an A8 clip is no A1 or A4 step): it initialises on the first batch
    as usual."""
    src, dst = prev.state_dict(), model.state_dict()
    keys = [k for k in teacher.state_dict() if k in dst]
    for k in keys:
        if k not in src or src[k].shape != dst[k].shape:
            have = "missing" if k not in src else f"shape {tuple(src[k].shape)}"
            raise BinbertError(f"stage {stage!r}: init: previous needs the previous stage's model "
                               f"to have the teacher's parameters, but {k} is {have} there "
                               f"(want {tuple(dst[k].shape)}: a pruned or split model cannot seed it)")
    model.load_state_dict({k: src[k] for k in keys}, strict=False)


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    return d


def stage_fingerprint(cfg: Config, upto: int, max_steps: int | None = None) -> dict:
    """What a checkpoint of stage ``upto`` must have been trained with to be that stage of
    ``cfg`` (unset keys left out, so adding an optional config key orphans no checkpoint)."""
    return _drop_none(_fingerprint(cfg, upto, max_steps))


def _diff(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{where}.{k}".lstrip(".")
            d = _diff(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return ""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where} (length)"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return ""
    return "" if a == b else where.lstrip(".")


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _lr_lambda(total: int, warmup: float) -> Callable[[int], float]:
    w = int(total * warmup)

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / (w + 1)
        return max(0.0, (total - step) / max(1, total - w))
    return f


@dataclass
class Phase:
    loss: str  # ce | intermediate | prediction | joint | dmd
    steps: int


def _size_mb(model: nn.Module) -> float | None:
    """Model size in MB under sw.cost's default accounting (None if it cannot count it)."""
    try:
        from sw.cost import model_size_mb
        return round(float(model_size_mb(model)), 4)
    except (ImportError, BinbertError):
        return None


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set every dropout of ``model`` (hidden, attention, classifier) to ``p``, in its HF config
    too, so a checkpoint of it (resume, final) rebuilds with the same rate."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise BinbertError(f"dropout={p!r} must be a number in [0, 1)")
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = float(p)
    cfg = model.config
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = float(p)
    if getattr(cfg, "classifier_dropout", None) is not None:
        cfg.classifier_dropout = float(p)
    return model


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


def _trainable(model: nn.Module) -> nn.Module:
    for p in model.parameters():  # copies of the (frozen) teacher
        p.requires_grad_(True)
    return model


class Trainer:
    """Runs the stages of a config into ``out``; re-running resumes where it stopped."""

    def __init__(self, cfg: Config, out: str | Path, data_dir: str | None = None,
                 max_steps: int | None = None, stages: list[str] | None = None,
                 progress: bool = True, dist: Dist | None = None, verbose: bool | None = None):
        self.cfg = cfg if data_dir is None else replace(cfg, data=replace(cfg.data, dir=data_dir))
        self.out = Path(out)
        self.max_steps = max_steps
        self.only = stages
        if stages:
            for n in stages:
                cfg.stage(n)
        self.progress = progress  # tqdm bars
        self.verbose = progress if verbose is None else verbose  # one-line stage/eval logs
        self.dist = dist or init_distributed()
        self.device = self.dist.device
        self._interrupt_at: int | None = None  # tests: raise KeyboardInterrupt after N steps
        self._steps_done = 0
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        self.spec = task_spec(self.cfg.data.task)
        self.tokenizer = bb.load_tokenizer(self.cfg.model.backbone)
        d = self.cfg.data
        self.train_examples = load_split(d.dir, d.task, "train", d.train_limit,
                                         self.cfg.train.seed)
        self.train_ds = Encoded(self.train_examples, self.tokenizer, d.max_seq_len,
                                self.spec.regression)
        self._distill_ds: Encoded | None = None
        self.dev_ds = Encoded(load_split(d.dir, d.task, "dev", d.eval_limit), self.tokenizer,
                              d.max_seq_len, self.spec.regression)
        self.teacher: nn.Module | None = None
        # frozen models of the stages that a later stage names as its ``teacher``
        self.stage_models: dict[str, nn.Module] = {}
        self.summary: dict[str, Any] = {}

    # -- helpers ----------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        if self.dist.main and self.verbose:
            from tqdm import tqdm
            tqdm.write(msg, file=sys.stderr)

    def stage_dir(self, stage: StageConfig) -> Path:
        return self.out / stage.name

    def distill_ds(self) -> Encoded:
        """What the distillation losses train on: the training rows, plus (``data.augment``)
        their augmented variants, whose neighbour words come from the teacher's input word
        embeddings. Built once, after the teacher stage; a pure function of config and teacher."""
        aug = self.cfg.data.augment
        if aug is None:
            return self.train_ds
        if self._distill_ds is None:
            from sw.augment import augment, neighbour_table

            if self.teacher is None:
                raise BinbertError("data.augment: the augmented data needs the teacher's word "
                                   "embeddings: the config needs a teacher stage first")
            emb = self.teacher.get_input_embeddings().weight
            table = neighbour_table(self.tokenizer.get_vocab(), emb, aug.candidates)
            extra = augment(self.train_examples, table, aug, self.cfg.train.seed)
            d = self.cfg.data
            self._distill_ds = Encoded(self.train_examples + extra, self.tokenizer,
                                       d.max_seq_len, self.spec.regression)
            self.log(f"[data] augmented: {len(self.train_examples)} training rows + "
                     f"{len(extra)} variants")
        return self._distill_ds

    def distill_teacher(self, stage: StageConfig) -> nn.Module:
        """The model a distilling stage learns from: its ``teacher`` stage's, else the teacher."""
        if stage.teacher is None:
            return self.teacher
        return self.stage_models[stage.teacher]

    def phase_ds(self, stage: StageConfig, loss: str) -> Encoded:
        # the ground-truth task loss never reads an augmented row (its label is a guess)
        if loss == "ce" or not stage.augmented(self.cfg.data):
            return self.train_ds
        return self.distill_ds()

    def batches_per_epoch(self, ds: Encoded | None = None) -> int:
        n = math.ceil(len(ds if ds is not None else self.train_ds) / self.dist.world)
        return math.ceil(n / self.cfg.train.batch_size)

    def stage_steps(self, stage: StageConfig) -> int:
        # epochs of a distilling stage count over the distillation data
        ds = self.phase_ds(stage, stage.resolved_loss)
        n = stage.steps if stage.steps is not None else max(
            1, math.ceil(stage.epochs * self.batches_per_epoch(ds)))
        return min(n, self.max_steps) if self.max_steps else n

    def phases(self, stage: StageConfig) -> list[Phase]:
        total = self.stage_steps(stage)
        loss = stage.resolved_loss
        first, second = {"two_stage": ("intermediate", "prediction"),
                         "ce_dmd": ("ce", "dmd")}.get(loss, (None, None))
        if first is None:
            return [Phase(loss, total)]
        n1 = int(round(total * stage.intermediate_fraction))
        return [p for p in (Phase(first, n1), Phase(second, total - n1)) if p.steps]

    def _check_ckpt(self, path: Path, idx: int) -> dict:
        state = read_state(path)
        want = stage_fingerprint(self.cfg, idx, self.max_steps)
        have = _drop_none(state.get("fingerprint") or {})
        if have != want:
            where = _diff(have, want)
            raise BinbertError(f"{path}: checkpoint does not match the config (differs in "
                               f"{where or 'fingerprint'}); use another --out or delete it")
        return state

    def _quant_cfg(self, stage: StageConfig):
        from sw.qbert import QuantBertConfig

        return QuantBertConfig.from_dict(stage_quant_dict(stage))

    def importance_batches(self, n: int = 4) -> list[dict]:
        bs = epoch_batches(len(self.train_ds), self.cfg.train.batch_size, self.cfg.train.seed,
                           10_000)[:n]
        return [{k: v.to(self.device) for k, v in b.items()} for b in loader(self.train_ds, bs)]

    # -- stage model construction -------------------------------------------------------------

    def _init_student(self, stage: StageConfig, prev: nn.Module | None) -> nn.Module:
        model = self._build_student(stage, prev)
        if stage.dropout is not None:
            set_dropout(model, stage.dropout)
        return model

    def _build_student(self, stage: StageConfig, prev: nn.Module | None) -> nn.Module:
        from sw.qbert import quantize_bert

        if stage.type == "teacher":
            return bb.build_model(self.cfg.model, self.cfg.data.task, seed=self.cfg.train.seed)
        if self.teacher is None:
            raise BinbertError(f"stage {stage.name!r} distils from the teacher: the config needs a "
                               f"teacher stage first")
        if stage.type == "split":
            model = _trainable(copy.deepcopy(prev))
            if stage.budget is None and stage.budget_mb is None:
                from sw.split import split_model
                split_model(model)
            else:
                model = self._adaptive_split(model, stage)
            return model
        if _starts_from_split(stage, prev):
            model = _trainable(copy.deepcopy(prev))
            if "act_integer" in stage.quant:
                from sw.qbert import set_act_integer
                set_act_integer(model, stage.quant["act_integer"])
            return model
        if stage.init == "previous" and _is_split(prev):
            # the teacher cannot seed a split (pruned) model: keep its binary terms, swap the
            # activation side (e.g. TWS W1A8 -> W1A1 with Bi-Attention)
            from sw.qbert import ACT_KEYS, requantize_activations
            q = stage_quant_dict(stage)
            model = _trainable(copy.deepcopy(prev))
            return requantize_activations(model, {k: q[k] for k in ACT_KEYS if k in q})
        model = _trainable(copy.deepcopy(self.teacher))
        if stage.type == "ternary" and stage.width < 1.0:
            from sw.prune import prune_to_width
            prune_to_width(model, stage.width, self.importance_batches())
            setattr(model, HEAD_MAP, teacher_heads(model, self.teacher))
        quantize_bert(model, self._quant_cfg(stage))
        if stage.init == "previous":
            _init_from(model, prev, self.teacher, stage.name)
        return model

    def _adaptive_split(self, model: nn.Module, stage: StageConfig) -> nn.Module:
        """BinaryBERT adaptive splitting (sw.adaptive): knapsack over measured sensitivities.

        ``budget`` is the share of the extra size that full splitting would add: 0 keeps every
        Transformer matrix binary (the half-size model), 1 affords splitting all of them (the
        knapsack still leaves out matrices whose sensitivity is not positive).
        ``budget_mb`` is an absolute model size instead. Ternary layers outside the
        Transformer matrices (word embedding, pooler) are always split, as in full TWS.
        Sensitivities use training batches (the dev set stays unseen).
        """
        from sw.adaptive import adaptive_split, plan, sensitivity, splittable
        from sw.cost import COUNT_ALL, ParamsCost

        names = set(splittable(model))
        always = [n for n, m in model.named_modules()
                  if n not in names and getattr(getattr(m, "weight_quant", None), "cfg", None)
                  is not None and m.weight_quant.cfg.method == "twn"]
        batches = self.importance_batches()
        u = sensitivity(model, batches, keep_ternary=always)
        if stage.budget_mb is not None:
            p = plan(model, budget_mb=stage.budget_mb, sensitivities=u, always_split=always)
        else:
            cost = ParamsCost(fp_bits=COUNT_ALL.fp_bits, count_scales=COUNT_ALL.count_scales)
            full = plan(model, budget_mb=1e12, sensitivities=u, always_split=always)
            # costs are whole bits: half a bit of slack absorbs float rounding at budget 1.0
            cap = full.base_cost + stage.budget * sum(full.costs) + 0.5
            p = plan(model, budget=cap, cost_fn=cost, sensitivities=u, always_split=always)
        self._plan = p.to_dict()
        self.log(f"[{stage.name}] adaptive split: {len(p.selected)}/{len(p.candidates)} matrices "
                 f"split, {p.cost / 8 / COUNT_ALL.unit_bytes:.3f} MB")
        return adaptive_split(model, p)

    # -- one stage ----------------------------------------------------------------------------

    def run(self) -> dict:
        """Run (or load, when complete) every stage up to the last one asked for."""
        names = [s.name for s in self.cfg.stages]
        upto = max(names.index(n) for n in self.only) if self.only else len(names) - 1
        prev: nn.Module | None = None
        teaches = {s.teacher for s in self.cfg.stages if s.teacher is not None}
        t_all = time.time()
        for idx, stage in enumerate(self.cfg.stages[: upto + 1]):
            sdir = self.stage_dir(stage)
            final = resolve_checkpoint(sdir / "final")
            if final is not None:
                state = self._check_ckpt(final, idx)
                model, _, _ = load_checkpoint(final, self.device)
                self.summary[stage.name] = state.get("summary", {})
                self.log(f"[{stage.name}] complete: {final}")
            elif self.only is not None and stage.name not in self.only:
                raise BinbertError(f"stage {stage.name!r} has no checkpoint in {sdir / 'final'}: "
                                   f"run it first (--stages {stage.name})")
            else:
                model = self.run_stage(idx, stage, prev)
            if stage.type == "teacher" or stage.name in teaches:
                model.eval()
                for p in model.parameters():  # later stages copy it through _trainable
                    p.requires_grad_(False)
            if stage.type == "teacher":
                self.teacher = model
            if stage.name in teaches:
                self.stage_models[stage.name] = model
            prev = model
        self.summary["_wall_s"] = round(time.time() - t_all, 1)
        if self.dist.main:
            _write_json(self.out / "summary.json", self.summary)
            plot_curves(self.out, names)
        return self.summary

    def run_stage(self, idx: int, stage: StageConfig, prev: nn.Module | None) -> nn.Module:
        sdir = self.stage_dir(stage)
        if self.dist.main:
            sdir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        if not stage.trains:
            model = self._init_student(stage, prev)
            metrics = evaluate(model, self.dev_ds, self.cfg.data.task,
                               self.cfg.train.eval_batch_size, self.device)
            summary = {"dev": metrics, "steps": 0, "wall_s": round(time.time() - t0, 1)}
            if stage.budget is not None or stage.budget_mb is not None:
                summary["plan"] = self._plan
            summary["size_mb"] = _size_mb(model)
            self._finish(idx, stage, model, summary, history=[{"step": 0, "dev": metrics}])
            return model

        phases = self.phases(stage)
        last = resolve_checkpoint(sdir / "last")
        resume = None
        if last is not None:
            self._check_ckpt(last, idx)
            model, state, _ = load_checkpoint(last, self.device)
            resume = torch.load(last / TRAINING, map_location="cpu", weights_only=False)
            self.log(f"[{stage.name}] resuming from {last} at phase {state['phase']} "
                     f"step {state['step']}")
        else:
            seed_everything(self.cfg.train.seed + idx)
            model = self._init_student(stage, prev).to(self.device)
        run = _StageRun(self, idx, stage, model, phases, resume,
                        start_competes=_continues_trained(stage, prev))
        run.train()
        model = run.eval_model
        summary = {"dev": run.best_metrics if self.cfg.train.select == "best" else run.last_metrics,
                   "best_step": run.best_step, "steps": sum(p.steps for p in phases),
                   "phases": [p.__dict__ for p in phases], "size_mb": _size_mb(model),
                   "wall_s": round(run.wall + time.time() - run.t_start, 1)}
        self._finish(idx, stage, model, summary, run.history, run)
        return self._load_final(stage, model)

    def _load_final(self, stage: StageConfig, model: nn.Module) -> nn.Module:
        self.dist.barrier()
        final = resolve_checkpoint(self.stage_dir(stage) / "final")
        m, _, _ = load_checkpoint(final, self.device)
        return m

    def _finish(self, idx: int, stage: StageConfig, model: nn.Module, summary: dict,
                history: list, run: "_StageRun | None" = None) -> None:
        sdir = self.stage_dir(stage)
        self.summary[stage.name] = summary
        if self.dist.main:
            state = self._state(idx, stage, phase=None, step=None, summary=summary)
            best = resolve_checkpoint(sdir / "best")
            if run is not None and self.cfg.train.select == "best" and best is not None:
                bstate = read_state(best)
                bstate.update(complete=True, summary=summary)
                _write_json(best / STATE, bstate)
                shutil.rmtree(sdir / "final", ignore_errors=True)
                os.replace(best, sdir / "final")
            else:
                save_checkpoint(sdir / "final", model, self.cfg, state)
            _write_json(sdir / "metrics.json", {"stage": stage.name, "type": stage.type,
                                                "summary": summary, "history": history})
            plot_curves(self.out, [stage.name], sdir / "curve.png")
            shutil.rmtree(sdir / "last", ignore_errors=True)
            shutil.rmtree(sdir / "last.old", ignore_errors=True)
            self.log(f"[{stage.name}] done: dev {summary.get('dev')}")
        self.dist.barrier()

    def _state(self, idx: int, stage: StageConfig, phase, step, summary=None, **extra) -> dict:
        return {"stage": stage.name, "type": stage.type, "phase": phase, "step": step,
                "complete": summary is not None, "summary": summary,
                "fingerprint": _fingerprint(self.cfg, idx, self.max_steps), **extra}


def _is_split(model: nn.Module | None) -> bool:
    from sw.qbert import quant_config_of

    q = quant_config_of(model) if model is not None else None
    return q is not None and bool(q.split)


def _starts_from_split(stage: StageConfig, prev: nn.Module | None) -> bool:
    """A binary stage after a (full or adaptive) split fine-tunes the split model itself."""
    return stage.type == "binary" and stage.init != "previous" and _is_split(prev)


def _continues_trained(stage: StageConfig, prev: nn.Module | None) -> bool:
    """Does the stage start from a trained student (the split model, or ``init: previous``)
    rather than from a fresh quantization of the teacher?"""
    return stage.init == "previous" or _starts_from_split(stage, prev)


class _Ema:
    """Exponential moving average of a model's floating-point state (parameters and buffers;
    others, e.g. LSQ's ``initialized`` flag, are copied). The decay ramps up as in
    tf.train.ExponentialMovingAverage with num_updates, min(decay, (1 + t) / (10 + t)), so a
    short stage averages about its last ninth of steps rather than clinging to its start."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for k, e in self.model.state_dict().items():
            if e.is_floating_point():
                e.lerp_(live[k], 1.0 - d)
            else:
                e.copy_(live[k])

    def state(self) -> dict:
        return {"updates": self.updates, "model": _state_dict(self.model)}

    def load(self, state: dict) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])


class _StageRun:
    """The optimisation loop of one stage: phases, eval, best/last checkpoints, resume."""

    def __init__(self, tr: Trainer, idx: int, stage: StageConfig, model: nn.Module,
                 phases: list[Phase], resume: dict | None, start_competes: bool = False):
        self.tr, self.idx, self.stage, self.phases = tr, idx, stage, phases
        self.start_competes = start_competes
        self.cfg = tr.cfg
        self.model = model
        self.history: list[dict] = []
        self.best_main = -math.inf
        self.best_metrics: dict | None = None
        self.best_step: int | None = None
        self.last_metrics: dict | None = None
        self.phase_i, self.step, self.wall = 0, 0, 0.0
        self.resume = resume
        if resume is not None:
            self.phase_i, self.step = resume["phase"], resume["step"]
            self.history = resume["history"]
            self.best_main = resume["best_main"]
            self.best_metrics, self.best_step = resume["best_metrics"], resume["best_step"]
            self.last_metrics = resume["last_metrics"]
            self.wall = resume["wall"]
        # the stage's weight average (stage key ema): evaluated, selected and handed on
        self.ema = _Ema(model, stage.ema) if stage.ema is not None else None
        if self.ema is not None and resume is not None:
            self.ema.load(resume["ema"])
        self.t_start = time.time()
        self.eval_every = stage.eval_every if stage.eval_every is not None else \
            self.cfg.train.eval_every
        self.global_offset = sum(p.steps for p in phases[: self.phase_i])

    @property
    def eval_model(self) -> nn.Module:
        """The model that is evaluated and saved as best / final: the weight average if any."""
        return self.ema.model if self.ema is not None else self.model

    def _optim(self, phase: Phase):
        decay = self.cfg.train.weight_decay
        lr = self.stage.learning_rate or self.cfg.train.learning_rate
        # the RSign and Bi-Attention thresholds (sw.quant ActQuantizer.beta, the attentions'
        # score_threshold) and the weight-scale gains (WeightQuantizer.gain) may have their own rates
        own = {"act_quant.beta": self.stage.threshold_lr, "score_threshold": self.stage.threshold_lr,
               "weight_quant.gain": self.stage.scale_lr}
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        kind = [next((k for k, r in own.items() if r and n.endswith(k)), None) for n, _ in named]
        groups = [{"params": [p for (_, p), k in zip(named, kind) if k is None]}]
        for k, r in own.items():
            if k in kind:
                groups.append({"params": [p for (_, p), kk in zip(named, kind) if kk == k], "lr": r})
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(phase.steps,
                                                                   self.cfg.train.warmup))
        return opt, sched

    def train(self) -> None:
        tr = self.tr
        dist = tr.dist
        if self.resume is None and self.start_competes:
            self._eval_start()
        for pi in range(self.phase_i, len(self.phases)):
            phase = self.phases[pi]
            self.phase_i = pi
            opt, sched = self._optim(phase)
            start = 0
            if self.resume is not None and self.resume["phase"] == pi:
                if self.resume["optimizer"] is not None:  # None: saved at a phase boundary
                    opt.load_state_dict(self.resume["optimizer"])
                    sched.load_state_dict(self.resume["scheduler"])
                _set_rng_state(self.resume["rng"][min(dist.rank, len(self.resume["rng"]) - 1)])
                start = self.resume["step"]
            self.resume = None
            net = self.model
            if dist.enabled:
                net = nn.parallel.DistributedDataParallel(
                    self.model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None,
                    find_unused_parameters=True)
            self._run_phase(pi, phase, net, opt, sched, start)
            self.global_offset += phase.steps
            self.step = 0

    def _batches_from(self, step: int):
        """(epoch, batch list) pairs from global step ``step`` of the phase on."""
        ds = self.tr.phase_ds(self.stage, self.phases[self.phase_i].loss)
        per = self.tr.batches_per_epoch(ds)
        epoch, offset = divmod(step, per)
        seed = self.cfg.train.seed + 1000 * self.idx + 100 * self.phase_i
        while True:
            bs = epoch_batches(len(ds), self.cfg.train.batch_size, seed, epoch,
                               rank=self.tr.dist.rank, world=self.tr.dist.world)
            for b in loader(ds, bs[offset:]):
                yield b
            epoch, offset = epoch + 1, 0

    def _loss(self, net, phase: Phase, batch: dict) -> tuple[torch.Tensor, dict]:
        from sw.qbert import record

        if phase.loss == "ce":
            out = net(**batch)
            return out.loss, {"ce": float(out.loss.detach())}
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        need_trace = phase.loss != "prediction"
        with (record(self.model) if need_trace else contextlib.nullcontext()) as srec:
            s_logits = net(**inputs).logits
        teacher = self.tr.distill_teacher(self.stage)
        with torch.no_grad():
            with (record(teacher) if need_trace else contextlib.nullcontext()) as trec:
                t_logits = teacher(**inputs).logits
        s = {"logits": s_logits}
        t = {"logits": t_logits}
        if need_trace:
            s.update(embeddings=srec.embeddings, layers=srec.layers)
            t.update(embeddings=trec.embeddings, layers=trec.layers)
        loss, terms = distill_loss(phase.loss, s, t, batch["attention_mask"],
                                   self.cfg.stage_distill(self.stage),
                                   head_map=distill_head_map(self.model, teacher,
                                                             self.tr.teacher))
        if net is not self.model:
            # DDP reduces gradients of everything its output depends on; the intermediate loss
            # reads hooked tensors, not the logits, so tie the logits in with weight zero.
            loss = loss + 0.0 * s_logits.sum()
        return loss, terms

    def _run_phase(self, pi: int, phase: Phase, net, opt, sched, start: int) -> None:
        tr, cfg = self.tr, self.cfg
        from tqdm import tqdm

        bar = tqdm(total=phase.steps, initial=start, disable=not (tr.progress and tr.dist.main),
                   desc=f"{self.stage.name}:{phase.loss}", dynamic_ncols=True, leave=False)
        self.model.train()
        tr.teacher is not None and tr.teacher.eval()
        if self.stage.teacher is not None:
            tr.distill_teacher(self.stage).eval()
        running: dict[str, float] = {}
        n_run = 0
        it = self._batches_from(start)
        t_phase = time.time()
        for step in range(start, phase.steps):
            batch = {k: v.to(tr.device) for k, v in next(it).items()}
            loss, terms = self._loss(net, phase, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
            opt.step()
            sched.step()
            if self.ema is not None:
                self.ema.update(self.model)
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + v
            running["loss"] = running.get("loss", 0.0) + float(loss.detach())
            n_run += 1
            done = step + 1
            bar.update(1)
            if done % cfg.train.log_every == 0 or done == phase.steps:
                rec = {"step": self.global_offset + done, "phase": phase.loss,
                       "lr": sched.get_last_lr()[0], **{k: v / n_run for k, v in running.items()}}
                self.history.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                if not tr.progress:  # no bar: a log line instead
                    rate = (time.time() - t_phase) / (done - start)
                    tr.log(f"[{self.stage.name}] {phase.loss} step {done}/{phase.steps} "
                           f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} ({rate:.2f} s/step)")
                running, n_run = {}, 0
            at_eval = (self.eval_every and done % self.eval_every == 0) or done == phase.steps
            if at_eval:
                self._eval_and_save(pi, done, opt, sched, final=done == phase.steps)
            elif cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
                self._save_last(pi, done, opt, sched, final=False)
            tr._steps_done += 1
            if tr._interrupt_at is not None and tr._steps_done >= tr._interrupt_at:
                bar.close()
                raise KeyboardInterrupt
        bar.close()

    def _eval_start(self) -> None:
        """A stage that continues a trained model evaluates it before the first step, and that
        evaluation competes for "best": selection on dev never hands on a model worse than the
        one the stage was given (e.g. a binary fine-tuning that does not beat its split model)."""
        if self.tr.dist.main:
            self._keep_best(self._evaluate(0, "start", "start"), 0, 0)
        self.tr.dist.barrier()

    def _evaluate(self, gstep: int, phase: str, what: str) -> dict:
        """Dev metrics of the model now, recorded in the history and the log (main rank)."""
        tr, cfg = self.tr, self.cfg
        metrics = evaluate(self.eval_model, tr.dev_ds, cfg.data.task, cfg.train.eval_batch_size,
                           tr.device)
        self.model.train()
        self.history.append({"step": gstep, "phase": phase, "dev": metrics})
        self.last_metrics = metrics
        tr.log(f"[{self.stage.name}] {what}: dev {json.dumps(metrics)}")
        return metrics

    def _keep_best(self, metrics: dict, pi: int, done: int) -> None:
        tr = self.tr
        gstep = self.global_offset + done
        self.best_main, self.best_metrics, self.best_step = metrics["main"], metrics, gstep
        save_checkpoint(tr.stage_dir(self.stage) / "best", self.eval_model, self.cfg,
                        tr._state(self.idx, self.stage, pi, done, dev=metrics))

    def _eval_and_save(self, pi: int, done: int, opt, sched, final: bool) -> None:
        gstep = self.global_offset + done
        if self.tr.dist.main:
            metrics = self._evaluate(gstep, self.phases[pi].loss, f"step {gstep}")
            # In a two-stage stage only the prediction phase competes for "best": after the
            # intermediate phase the logits are not yet distilled (BinaryBERT selects in its
            # prediction-distillation run).
            eligible = pi == len(self.phases) - 1
            if eligible and metrics["main"] > self.best_main:
                self._keep_best(metrics, pi, done)
        self._save_last(pi, done, opt, sched, final)

    def _save_last(self, pi: int, done: int, opt, sched, final: bool) -> None:
        """The resumable state: model, optimizer, scheduler, position, every rank's RNG."""
        tr, cfg = self.tr, self.cfg
        rng = [_rng_state()]
        if torch.distributed.is_initialized():
            gathered: list = [None] * tr.dist.world
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if tr.dist.main:
            wall = self.wall + time.time() - self.t_start
            nxt_phase, nxt_step = (pi, done) if not final else (pi + 1, 0)
            training = {"phase": nxt_phase, "step": nxt_step, "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "rng": rng, "history": self.history,
                        "best_main": self.best_main, "best_metrics": self.best_metrics,
                        "best_step": self.best_step, "last_metrics": self.last_metrics,
                        "wall": wall}
            if self.ema is not None:
                training["ema"] = self.ema.state()
            if final:  # the next phase starts with a fresh optimizer: nothing to restore
                training["optimizer"] = training["scheduler"] = None
            save_checkpoint(tr.stage_dir(self.stage) / "last", self.model, cfg,
                            tr._state(self.idx, self.stage, nxt_phase, nxt_step), training)
        tr.dist.barrier()


# ---------------------------------------------------------------------------------------------
# plots


def plot_curves(out: Path, stages: list[str], dest: Path | None = None) -> Path | None:
    """Training loss and dev metric against step, one panel per stage (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = []
    for s in stages:
        f = Path(out) / s / "metrics.json"
        if f.is_file():
            data.append((s, json.loads(f.read_text())))
    data = [(s, d) for s, d in data if d.get("history")]
    if not data:
        return None
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 3.4), squeeze=False)
    for ax, (s, d) in zip(axes[0], data):
        h = d["history"]
        tl = [(r["step"], r["loss"]) for r in h if "loss" in r]
        if tl:
            ax.plot(*zip(*tl), color="tab:blue", label="train loss")
            if all(v > 0 for _, v in tl):  # a loss of exactly 0 (student = teacher) has no log
                ax.set_yscale("log")
        # phase boundaries (intermediate -> prediction distillation: different loss scales)
        logged = [r for r in h if "loss" in r]
        for a, b in zip(logged, logged[1:]):
            if a["phase"] != b["phase"]:
                ax.axvline(a["step"], color="grey", ls=":", lw=1)
                ax.text(a["step"], 1, f" {b['phase']}", transform=ax.get_xaxis_transform(),
                        va="top", fontsize=7, color="grey")
        ax.set_title(f"{s} ({d.get('type', '')})")
        ax.set_xlabel("step")
        ev = [(r["step"], r["dev"]["main"]) for r in h if "dev" in r]
        if ev:
            ax2 = ax.twinx()
            ax2.plot(*zip(*ev), "o-", color="tab:red", label="dev")
            ax2.set_ylabel("dev main metric", color="tab:red")
    fig.tight_layout()
    dest = dest or Path(out) / "curve.png"
    tmp = dest.with_name(dest.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, dest)
    return dest
