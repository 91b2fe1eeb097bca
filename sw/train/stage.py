"""One stage's run: its fingerprint (what a checkpoint of it must have been trained with),
its phases, learning-rate schedule and RNG state, and :class:`StageRun`, the optimisation loop
with dev evaluation, best / last checkpoints and resume."""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hw.errors import BinbertError
from sw.config import Config, StageConfig, config_to_dict
from sw.data import epoch_batches, loader
from sw.distill import distill_loss
from sw.train.checkpoint import distill_head_map, read_state, save_checkpoint
from sw.train.ema import Ema


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



def check_fingerprint(path: Path, cfg: Config, idx: int, max_steps: int | None) -> dict:
    """The state of the checkpoint at ``path``, which must be stage ``idx`` of ``cfg``."""
    state = read_state(path)
    want = stage_fingerprint(cfg, idx, max_steps)
    have = _drop_none(state.get("fingerprint") or {})
    if have != want:
        where = _diff(have, want)
        raise BinbertError(f"{path}: checkpoint does not match the config (differs in "
                           f"{where or 'fingerprint'}); use another --out or delete it")
    return state


def stage_state(cfg: Config, idx: int, stage: StageConfig, max_steps: int | None, phase, step,
                summary=None, **extra) -> dict:
    """The ``state.json`` of a checkpoint of stage ``idx`` at ``phase`` / ``step``."""
    return {"stage": stage.name, "type": stage.type, "phase": phase, "step": step,
            "complete": summary is not None, "summary": summary,
            "fingerprint": _fingerprint(cfg, idx, max_steps), **extra}


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])



def lr_lambda(total: int, warmup: float) -> Callable[[int], float]:
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



class StageRun:
    """The optimisation loop of one stage: phases, eval, best/last checkpoints, resume.

    ``tr`` is the :class:`sw.train.trainer.Trainer` running the stage: its data, teachers,
    device, logging and checkpoint state."""

    def __init__(self, tr, idx: int, stage: StageConfig, model: nn.Module,
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
        self.ema = Ema(model, stage.ema) if stage.ema is not None else None
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
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(phase.steps,
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
                set_rng_state(self.resume["rng"][min(dist.rank, len(self.resume["rng"]) - 1)])
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
        tr = self.tr
        metrics = tr.evaluate_dev(self.eval_model)
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
        rng = [rng_state()]
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
