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
    OUT/train.lock       while a run writes OUT: its holder (one run per OUT, sw.train.lock)

Checkpoint directories (their files, atomic writes): :mod:`sw.train.checkpoint`.

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

Modules: ``checkpoint`` (save / load / resolve, state, structure, head maps), ``distributed``
(Dist), ``ema`` (the stage weight average), ``lock`` (the output directory's run lock),
``stage`` (fingerprints, phases, the optimisation loop of one stage), ``trainer`` (Trainer,
evaluation), ``plots`` (curves). This package re-exports the names used outside it; modules
inside ``sw`` import from the defining module.
"""
from sw.train.checkpoint import (HEAD_MAP, MODEL, STATE, TRAINING, apply_structure,
                                 distill_head_map, load_checkpoint, model_structure, read_state,
                                 resolve_checkpoint, save_checkpoint, teacher_heads)
from sw.train.distributed import Dist, init_distributed
from sw.train.plots import plot_curves
from sw.train.stage import stage_fingerprint
from sw.train.trainer import Trainer, evaluate, predict, seed_everything, set_dropout

__all__ = [
    "HEAD_MAP", "MODEL", "STATE", "TRAINING", "apply_structure", "distill_head_map",
    "load_checkpoint", "model_structure", "read_state", "resolve_checkpoint", "save_checkpoint",
    "teacher_heads", "Dist", "init_distributed", "plot_curves", "stage_fingerprint", "Trainer",
    "evaluate", "predict", "seed_everything", "set_dropout",
]
