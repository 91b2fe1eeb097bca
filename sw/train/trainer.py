"""The :class:`Trainer`: runs a config's stages into an output directory, resuming where it
stopped; building each stage's student (pruned, quantized, split, continued); evaluation."""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hw.errors import BinbertError
from hw.files import make_dir, writing
from hw.validate import number_value
from sw import backbone as bb
from sw.config import Config, StageConfig, stage_quant_dict
from sw.data import Encoded, epoch_batches, load_split, loader, task_spec, truncation_report
from sw.metrics import task_metrics
from sw.qmodel import quant_config_of
from sw.train.checkpoint import (HEAD_MAP, STATE, TRAINING, load_checkpoint, read_state,
                                 resolve_checkpoint, save_checkpoint, teacher_heads, write_json)
from sw.train.distributed import Dist, init_distributed
from sw.train.lock import RunLock
from sw.train.plots import plot_curves
from sw.train.stage import Phase, StageRun, check_fingerprint, stage_state


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



def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)



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
    number_value(p, f"dropout={p!r} must be a number in [0, 1)", lo=0, below=1)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = float(p)
    cfg = model.config
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = float(p)
    if getattr(cfg, "classifier_dropout", None) is not None:
        cfg.classifier_dropout = float(p)
    return model



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
        for split, ds in (("train", self.train_ds), ("dev", self.dev_ds)):
            self.log(f"[data] {truncation_report(split, ds)}")
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
        return check_fingerprint(path, self.cfg, idx, self.max_steps)

    def evaluate_dev(self, model: nn.Module) -> dict[str, float]:
        """Dev-set metrics of ``model`` (every stage's evaluations)."""
        return evaluate(model, self.dev_ds, self.cfg.data.task, self.cfg.train.eval_batch_size,
                        self.device)

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
            return bb.build_model(self.cfg.model, self.cfg.data.task, seed=self.cfg.train.seed,
                                  max_seq_len=self.cfg.data.max_seq_len)
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
        """Run (or load, when complete) every stage up to the last one asked for, holding the
        output directory's run lock (sw.train.lock) throughout."""
        with self._run_lock():
            return self._run()

    @contextlib.contextmanager
    def _run_lock(self):
        """The main rank takes the lock; every rank learns whether it got it (a refused run
        stops all of them instead of leaving the others waiting at a barrier)."""
        lock, err = None, None
        if self.dist.main:
            try:
                lock = RunLock(self.out).acquire()
            except BinbertError as exc:
                err = str(exc)
        if torch.distributed.is_initialized():
            box = [err]
            torch.distributed.broadcast_object_list(box, src=0)
            err = box[0]
        if err is not None:
            raise BinbertError(err)
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def _run(self) -> dict:
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
            write_json(self.out / "summary.json", self.summary)
            plot_curves(self.out, names)
        return self.summary

    def run_stage(self, idx: int, stage: StageConfig, prev: nn.Module | None) -> nn.Module:
        sdir = self.stage_dir(stage)
        if self.dist.main:
            make_dir(sdir)
        t0 = time.time()
        if not stage.trains:
            model = self._init_student(stage, prev)
            metrics = self.evaluate_dev(model)
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
        run = StageRun(self, idx, stage, model, phases, resume,
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
                history: list, run: StageRun | None = None) -> None:
        sdir = self.stage_dir(stage)
        self.summary[stage.name] = summary
        if self.dist.main:
            state = self._state(idx, stage, phase=None, step=None, summary=summary)
            best = resolve_checkpoint(sdir / "best")
            if run is not None and self.cfg.train.select == "best" and best is not None:
                bstate = read_state(best)
                bstate.update(complete=True, summary=summary)
                write_json(best / STATE, bstate)
                shutil.rmtree(sdir / "final", ignore_errors=True)
                with writing(sdir / "final"):
                    os.replace(best, sdir / "final")
            else:
                save_checkpoint(sdir / "final", model, self.cfg, state)
            write_json(sdir / "metrics.json", {"stage": stage.name, "type": stage.type,
                                                "summary": summary, "history": history})
            plot_curves(self.out, [stage.name], sdir / "curve.png")
            shutil.rmtree(sdir / "last", ignore_errors=True)
            shutil.rmtree(sdir / "last.old", ignore_errors=True)
            self.log(f"[{stage.name}] done: dev {summary.get('dev')}")
        self.dist.barrier()

    def _state(self, idx: int, stage: StageConfig, phase, step, summary=None, **extra) -> dict:
        return stage_state(self.cfg, idx, stage, self.max_steps, phase, step, summary, **extra)


def _is_split(model: nn.Module | None) -> bool:
    q = quant_config_of(model) if model is not None else None
    return q is not None and bool(q.split)


def _starts_from_split(stage: StageConfig, prev: nn.Module | None) -> bool:
    """A binary stage after a (full or adaptive) split fine-tunes the split model itself."""
    return stage.type == "binary" and stage.init != "previous" and _is_split(prev)


def _continues_trained(stage: StageConfig, prev: nn.Module | None) -> bool:
    """Does the stage start from a trained student (the split model, or ``init: previous``)
    rather than from a fresh quantization of the teacher?"""
    return stage.init == "previous" or _starts_from_split(stage, prev)
