"""Adaptive splitting (BinaryBERT §3.3): split only the most sensitive ternary matrices.

Starting from the half-width ternary model, each splittable matrix z (Q, K, V, attention
output, FFN in / out of every Transformer layer) is either split into two binary matrices
(exactly the ternary function, twice the bits) or binarized in place (BWN on its latent weight).
With a sensitivity vector u (the gain of keeping z ternary), a cost vector c (the extra cost of
splitting z rather than binarizing it) and a budget C,

    max_s  uᵀs   s.t.  cᵀs <= C - C0,  s in {0, 1}^Z

where C0 is the cost of the all-binary model. The 0/1 knapsack is solved exactly by dynamic
programming over integer-scaled costs (bits are integers; float costs are made exact fractions
and reduced by their common divisor).

Typical use:

    p = plan(model, budget_mb=12.0, batches=dev_batches)      # model: ternary, half width
    adaptive_split(model, p)                                   # -> sw.split.split_model
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from hw.errors import BinbertError
from sw.cost import COUNT_ALL, Accounting, FlopsCost, LayerCost, LayerSpec, ParamsCost, layer_specs
from sw.quant.modules import ActQuantizer, QuantEmbedding, QuantLinear, WeightQuantizer

MATRICES = ("attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense")
Score = Callable[[nn.Module, Sequence[Mapping[str, torch.Tensor]]], float]


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------

def _ternary_layers(model: nn.Module) -> dict[str, nn.Module]:
    found = {n: m for n, m in model.named_modules()
             if isinstance(m, (QuantLinear, QuantEmbedding)) and m.weight_quant.cfg.method == "twn"}
    if not found:
        raise BinbertError("adaptive: model has no ternary layer (quantize_bert with weight='twn' first)")
    return found


def splittable(model: nn.Module) -> list[str]:
    """Names of the ternary weight matrices of the Transformer layers, in model order (the Z of
    the paper; the word embedding and pooler are not among them)."""
    names = [n for n in _ternary_layers(model)
             if ".encoder.layer." in f".{n}" and n.endswith(MATRICES)]
    if not names:
        raise BinbertError("adaptive: no ternary matrix inside the encoder layers")
    return names


def _check_names(model: nn.Module, names, what: str) -> list[str]:
    ternary = _ternary_layers(model)
    if isinstance(names, str):
        raise BinbertError(f"adaptive: {what} must be a list of module names, not one string")
    names = list(dict.fromkeys(names))
    for n in names:
        if n not in ternary:
            raise BinbertError(f"adaptive: {what} entry {n!r} is not a ternary layer of this model")
    return names


# --------------------------------------------------------------------------------------------
# sensitivity
# --------------------------------------------------------------------------------------------

def neg_loss(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]) -> float:
    """Default score: minus the example-weighted mean task loss (higher is better)."""
    total, count = 0.0, 0
    for b in batches:
        if "labels" not in b:
            raise BinbertError("adaptive: sensitivity batches need a 'labels' tensor for the loss")
        out = model(**b)
        if getattr(out, "loss", None) is None:
            raise BinbertError(f"adaptive: {type(model).__name__} returned no loss for a batch with labels")
        n = int(b["labels"].shape[0])
        total += float(out.loss) * n
        count += n
    return -total / count


def _scorer(metric_or_loss) -> Score:
    if metric_or_loss == "loss":
        return neg_loss
    if callable(metric_or_loss):
        return metric_or_loss
    raise BinbertError(f"adaptive: metric_or_loss={metric_or_loss!r}: use 'loss' or a callable "
                       "score(model, batches) -> float (higher is better)")


def sensitivity(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], metric_or_loss="loss",
                *, names: Sequence[str] | None = None, keep_ternary: Sequence[str] = ()) -> dict[str, float]:
    """u_z = score(only z ternary, other matrices binary) - score(all binary), per matrix z.

    ``model`` is the (trained, half-width) ternary model; it is left exactly as it was.
    Keeping z ternary is what splitting z computes (the split is exact), so this is the gain
    of splitting z. ``metric_or_loss``: "loss" (minus the mean task loss) or a callable
    ``score(model, batches)``, higher is better, e.g. accuracy on a held-out set.
    ``keep_ternary``: layers outside Z that will be split anyway (e.g. the word embedding);
    every other ternary layer is binarized during the measurement, as split_model will do.
    Cost: len(names) + 1 no-grad passes over ``batches``.
    """
    score = _scorer(metric_or_loss)
    batches = list(batches)
    if not batches:
        raise BinbertError("adaptive: sensitivity needs at least one held-out batch")
    ternary = _ternary_layers(model)
    names = splittable(model) if names is None else _check_names(model, names, "names")
    keep = set(_check_names(model, keep_ternary, "keep_ternary"))
    if keep & set(names):
        raise BinbertError(f"adaptive: {sorted(keep & set(names))[0]!r} is both measured and kept ternary")
    saved = {n: m.weight_quant for n, m in ternary.items()}
    binary = {n: WeightQuantizer(replace(q.cfg, method="bwn")) for n, q in saved.items()}
    was_training = model.training
    model.eval()
    u: dict[str, float] = {}
    try:
        with torch.no_grad():
            if any(isinstance(m, ActQuantizer) and m.learned and not bool(m.initialized)
                   for m in model.modules()):
                # activation quantizers set their range on their first batch: let that be the
                # ternary model's, as in training, not a binarized variant's
                model(**{k: v for k, v in batches[0].items() if k != "labels"})
            for n, m in ternary.items():
                if n not in keep:
                    m.weight_quant = binary[n]
            base = score(model, batches)
            for z in names:
                ternary[z].weight_quant = saved[z]
                u[z] = float(score(model, batches)) - float(base)
                ternary[z].weight_quant = binary[z]
    finally:
        for n, m in ternary.items():
            m.weight_quant = saved[n]
        model.train(was_training)
    return u


# --------------------------------------------------------------------------------------------
# costs
# --------------------------------------------------------------------------------------------

def _specs(model: nn.Module) -> dict[str, LayerSpec]:
    return {s.name: s for s in layer_specs(model) if s.kind in ("linear", "embedding")}


def cost_vector(model: nn.Module, cost_fn: LayerCost | None = None,
                names: Sequence[str] | None = None) -> dict[str, float]:
    """c_z = cost(z split into two binary matrices) - cost(z binarized), per matrix z.

    cost_fn: any LayerCost (sw.cost.ParamsCost() bits -- the default --, FlopsCost(seq_len), or a
    hardware model). Splitting adds one bit per weight and a second bias in bits, and doubles
    the matrix's binary multiplies in FLOPs.
    """
    cost_fn = ParamsCost() if cost_fn is None else cost_fn
    if not callable(cost_fn):
        raise BinbertError(f"adaptive: cost_fn must be a LayerCost callable, got {type(cost_fn).__name__}")
    names = splittable(model) if names is None else _check_names(model, names, "names")
    specs = _specs(model)
    return {z: float(cost_fn(specs[z].as_split())) - float(cost_fn(specs[z].as_binary())) for z in names}


def _total(model: nn.Module, cost_fn: LayerCost, split: set[str], accounting: Accounting) -> float:
    """Cost of the model after split_model(names=split): ternary layers in ``split`` as two
    binary matrices, the other ternary layers binary, everything else as it is."""
    ternary = set(_ternary_layers(model))
    total = 0.0
    for s in layer_specs(model):
        if not accounting.counts(s.name):
            continue
        if s.name in ternary and s.kind in ("linear", "embedding"):
            s = s.as_split() if s.name in split else s.as_binary()
        total += float(cost_fn(s))
    return total


# --------------------------------------------------------------------------------------------
# 0/1 knapsack
# --------------------------------------------------------------------------------------------

def _fraction(x, what: str) -> Fraction:
    if isinstance(x, bool):
        raise BinbertError(f"knapsack: {what}={x!r} must be a number")
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise BinbertError(f"knapsack: {what}={x!r} must be a number") from None
    if not math.isfinite(f):
        raise BinbertError(f"knapsack: {what}={x!r} must be finite")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    return Fraction(f)


def knapsack(u: Sequence[float], c: Sequence[float], budget: float, *, max_states: int = 1 << 20) -> list[int]:
    """Exact 0/1 knapsack: s in {0,1}^n maximizing sum(u*s) with sum(c*s) <= budget.

    Costs and budget become exact fractions over a common denominator, divided by the costs'
    greatest common divisor: integer costs on an exact grid (bits of a BERT reduce to a few
    units). A dense DP over capacities runs when that capacity is at most ``max_states``;
    otherwise (e.g. arbitrary float costs, whose common denominator is huge) a sparse DP keeps
    only the Pareto-optimal (cost, value) states -- also exact. Items with u <= 0 are never
    taken; among optimal selections the dense DP keeps the one found first, the sparse one the
    cheapest.
    """
    u = [float(_fraction(x, f"u[{i}]")) for i, x in enumerate(u)]
    cf = [_fraction(x, f"c[{i}]") for i, x in enumerate(c)]
    if len(u) != len(cf):
        raise BinbertError(f"knapsack: u has {len(u)} entries but c has {len(cf)}")
    for i, x in enumerate(cf):
        if x < 0:
            raise BinbertError(f"knapsack: c[{i}]={float(x)} is negative")
    cap_f = _fraction(budget, "budget")
    if cap_f < 0:
        raise BinbertError(f"knapsack: budget={float(cap_f)} is negative")
    n = len(u)
    den = math.lcm(*(x.denominator for x in cf), cap_f.denominator)
    ci = [int(x * den) for x in cf]
    cap = int(cap_f * den)  # exact: cap_f * den is an integer
    g = math.gcd(*ci)
    if g:
        ci = [x // g for x in ci]
        cap //= g  # sum(ci*g) <= cap_f*den  <=>  sum(ci) <= floor(cap_f*den / g)
    useful = [i for i in range(n) if u[i] > 0 and ci[i] <= cap]
    cap = min(cap, sum(ci[i] for i in useful))
    chosen = _dense(u, ci, useful, cap) if cap <= max_states else _sparse(u, ci, useful, cap)
    s = [0] * n
    for i in chosen:
        s[i] = 1
    return s


def _dense(u, ci, useful, cap) -> list[int]:
    """Classic DP over capacities 0..cap: dp[w] = best value within capacity w."""
    dp = np.zeros(cap + 1)
    take = np.zeros((len(useful), cap + 1), dtype=bool)
    for k, i in enumerate(useful):
        w = ci[i]
        cand = dp[:cap + 1 - w] + u[i]  # built from the previous row: each item once
        better = cand > dp[w:]
        take[k, w:] = better
        dp[w:] = np.where(better, cand, dp[w:])
    chosen, room = [], cap
    for k in range(len(useful) - 1, -1, -1):
        if take[k, room]:
            chosen.append(useful[k])
            room -= ci[useful[k]]
    return chosen


def _sparse(u, ci, useful, cap) -> list[int]:
    """DP over reachable costs, keeping only states no cheaper state beats (Pareto front)."""
    front = [(0, 0.0, None)]  # (cost, value, taken-items linked list)
    for i in useful:
        shifted = [(c + ci[i], v + u[i], (i, node)) for c, v, node in front if c + ci[i] <= cap]
        merged = sorted(front + shifted, key=lambda t: (t[0], -t[1]))
        front, best = [], -math.inf
        for state in merged:
            if state[1] > best:
                front.append(state)
                best = state[1]
    node, chosen = front[-1][2], []  # the last Pareto state has the highest value
    while node is not None:
        chosen.append(node[0])
        node = node[1]
    return chosen


# --------------------------------------------------------------------------------------------
# plan and split
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitPlan:
    """Which matrices to split, and the numbers that chose them (costs in ``unit``)."""

    candidates: tuple[str, ...]
    sensitivity: tuple[float, ...]
    costs: tuple[float, ...]
    selected: tuple[str, ...]
    always_split: tuple[str, ...]
    unit: str          # "bits", "flops" or "cost"
    budget: float      # C
    base_cost: float   # C0: all candidates binary (always_split split)
    cost: float        # C0 + cᵀs
    value: float       # uᵀs

    def to_dict(self) -> dict:
        return {f: (list(v) if isinstance(v, tuple) else v) for f, v in self.__dict__.items()}


def plan(model: nn.Module, *, budget_mb: float | None = None, budget_flops: float | None = None,
         budget: float | None = None, cost_fn: LayerCost | None = None, seq_len: int = 128,
         sensitivities: Mapping[str, float] | None = None, batches=None, metric_or_loss="loss",
         accounting: Accounting = COUNT_ALL, always_split: Sequence[str] = ()) -> SplitPlan:
    """Choose the matrices to split under one budget: ``budget_mb`` (model size, MB per
    ``accounting``), ``budget_flops`` (FLOPs at ``seq_len``) or ``budget`` in the units of a
    custom ``cost_fn`` (e.g. LUTs). u comes from ``sensitivities`` or is measured on ``batches``.
    ``always_split``: ternary layers outside Z to split regardless (e.g.
    "bert.embeddings.word_embeddings"); they are part of C0.
    """
    given = [k for k, v in (("budget_mb", budget_mb), ("budget_flops", budget_flops), ("budget", budget))
             if v is not None]
    if len(given) != 1:
        raise BinbertError(f"adaptive: give exactly one of budget_mb, budget_flops, budget (got {given or 'none'})")
    if budget is not None and cost_fn is None:
        raise BinbertError("adaptive: budget needs the cost_fn it is measured in")
    if budget is None and cost_fn is not None:
        raise BinbertError("adaptive: cost_fn goes with budget=, not with budget_mb / budget_flops")
    if not isinstance(accounting, Accounting):
        raise BinbertError(f"adaptive: accounting must be an sw.cost.Accounting, got {type(accounting).__name__}")
    if budget_mb is not None:
        cost_fn, unit = ParamsCost(fp_bits=accounting.fp_bits, count_scales=accounting.count_scales), "bits"
        cap = float(_fraction(budget_mb, "budget_mb") * 8 * accounting.unit_bytes)
    elif budget_flops is not None:
        cost_fn, unit = FlopsCost(seq_len), "flops"
        cap = float(_fraction(budget_flops, "budget_flops"))
    else:
        unit = "cost"
        cap = float(_fraction(budget, "budget"))

    names = splittable(model)
    always = _check_names(model, always_split, "always_split")
    if set(always) & set(names):
        raise BinbertError(f"adaptive: always_split entry {sorted(set(always) & set(names))[0]!r} is a candidate")
    if sensitivities is None:
        if batches is None:
            raise BinbertError("adaptive: plan needs sensitivities= or held-out batches= to measure them")
        sensitivities = sensitivity(model, batches, metric_or_loss, names=names, keep_ternary=always)
    missing = [z for z in names if z not in sensitivities]
    if missing:
        raise BinbertError(f"adaptive: no sensitivity for {missing[0]!r}")
    u = [float(sensitivities[z]) for z in names]
    c = cost_vector(model, cost_fn, names)
    cvec = [c[z] for z in names]
    base = _total(model, cost_fn, set(always), accounting)
    if cap < base:
        raise BinbertError(f"adaptive: budget {cap:.6g} {unit} is below the all-binary model's {base:.6g} {unit}")
    s = knapsack(u, cvec, cap - base)
    chosen = tuple(z for z, sz in zip(names, s) if sz)
    cost = _total(model, cost_fn, set(always) | set(chosen), accounting)
    return SplitPlan(candidates=tuple(names), sensitivity=tuple(u), costs=tuple(cvec), selected=chosen,
                     always_split=tuple(always), unit=unit, budget=cap, base_cost=base, cost=cost,
                     value=float(sum(uz * sz for uz, sz in zip(u, s))))


def adaptive_split(model: nn.Module, plan: SplitPlan) -> nn.Module:
    """Apply ``plan`` in place: split the selected (and always_split) matrices into two binary
    ones, binarize every other ternary layer (sw.split.split_model)."""
    from sw.split import split_model

    if not isinstance(plan, SplitPlan):
        raise BinbertError(f"adaptive_split needs a SplitPlan, got {type(plan).__name__}")
    if tuple(splittable(model)) != plan.candidates:
        raise BinbertError("adaptive_split: the plan was made for a model with other splittable matrices")
    return split_model(model, names=list(plan.selected) + list(plan.always_split))
