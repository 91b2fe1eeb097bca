"""GLUE metrics in numpy: accuracy, Matthews correlation, F1, Pearson, Spearman.

Implemented here (no sklearn); tests compare them with scipy.stats and with direct
definitions. ``task_metrics`` returns every metric of a task plus ``main``, the one that
selects the best checkpoint: SST-2 accuracy, CoLA MCC, MRPC accuracy (F1 reported beside it,
as BinaryBERT reports accuracy), STS-B Pearson (Spearman beside it).
"""
from __future__ import annotations

import numpy as np

from hw.errors import BinbertError


def _pair(pred, gold) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gold)
    if p.shape != g.shape or p.ndim != 1:
        raise BinbertError(f"metrics: predictions {p.shape} and labels {g.shape} must be equal 1-D")
    if p.size == 0:
        raise BinbertError("metrics: no examples")
    return p, g


def accuracy(pred, gold) -> float:
    p, g = _pair(pred, gold)
    return float(np.mean(p == g))


def matthews_corrcoef(pred, gold) -> float:
    """Binary MCC; 0 when a row or column of the confusion matrix is empty (GLUE convention)."""
    p, g = _pair(pred, gold)
    p, g = p.astype(bool), g.astype(bool)
    tp = float(np.sum(p & g))
    tn = float(np.sum(~p & ~g))
    fp = float(np.sum(p & ~g))
    fn = float(np.sum(~p & g))
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if den == 0 else (tp * tn - fp * fn) / np.sqrt(den)


def f1_score(pred, gold) -> float:
    """F1 of the positive class (label 1); 0 when there are no true positives."""
    p, g = _pair(pred, gold)
    p, g = p.astype(bool), g.astype(bool)
    tp = float(np.sum(p & g))
    if tp == 0:
        return 0.0
    precision = tp / float(np.sum(p))
    recall = tp / float(np.sum(g))
    return 2 * precision * recall / (precision + recall)


def pearson(x, y) -> float:
    a, b = _pair(x, y)
    a, b = a.astype(np.float64), b.astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return 0.0 if den == 0 else float(np.sum(a * b) / den)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    a, b = _pair(x, y)
    return pearson(_ranks(a.astype(np.float64)), _ranks(b.astype(np.float64)))


MAIN_METRIC = {"sst2": "acc", "cola": "mcc", "mrpc": "acc", "stsb": "pearson"}


def task_metrics(task: str, pred, gold) -> dict[str, float]:
    """All metrics of ``task`` plus ``main``; ``pred`` are class ids or regression scores."""
    if task == "sst2":
        out = {"acc": accuracy(pred, gold)}
    elif task == "cola":
        out = {"mcc": matthews_corrcoef(pred, gold), "acc": accuracy(pred, gold)}
    elif task == "mrpc":
        out = {"acc": accuracy(pred, gold), "f1": f1_score(pred, gold)}
    elif task == "stsb":
        out = {"pearson": pearson(pred, gold), "spearman": spearman(pred, gold)}
    else:
        raise BinbertError(f"metrics: unknown task {task!r} (known: {', '.join(MAIN_METRIC)})")
    out["main"] = out[MAIN_METRIC[task]]
    return out
