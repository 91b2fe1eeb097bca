"""sw/adaptive.py: knapsack proofs against brute force, and sensitivity / costs / plans on a
tiny random ternary BERT checked against models actually split by sw.split.split_model."""
from __future__ import annotations

import copy
import itertools
import random
from fractions import Fraction

import pytest
import torch

from hw.errors import BinbertError
from sw.adaptive import (MATRICES, SplitPlan, adaptive_split, cost_vector, knapsack, neg_loss, plan,
                         sensitivity, splittable)
from sw.cost import COUNT_ALL, FlopsCost, LayerSpec, ParamsCost, model_bits, model_flops, model_size_mb

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from sw.qbert import QuantBertConfig, quantize_bert  # noqa: E402
from sw.split import split_model  # noqa: E402

EMB = "bert.embeddings.word_embeddings"


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# knapsack
# --------------------------------------------------------------------------------------------

def brute_force(u, c, budget):
    # exact arithmetic: a float sum can round an over-budget set down onto the budget
    best = 0.0
    for cost, value in _subsets(tuple(u), tuple(c)):
        if cost <= Fraction(budget):
            best = max(best, value)
    return best


_SUBSETS: dict = {}


def _subsets(u, c):
    if (u, c) not in _SUBSETS:
        _SUBSETS.clear()
        _SUBSETS[u, c] = [(sum(Fraction(ci) for ci, si in zip(c, s) if si), sum(ui for ui, si in zip(u, s) if si))
                          for s in itertools.product((0, 1), repeat=len(u))]
    return _SUBSETS[u, c]


def check(u, c, budget, **kw):
    s = knapsack(u, c, budget, **kw)
    assert len(s) == len(u) and set(s) <= {0, 1}
    assert sum(Fraction(ci) * si for ci, si in zip(c, s)) <= Fraction(budget)
    assert sum(ui * si for ui, si in zip(u, s)) == pytest.approx(brute_force(u, c, budget), abs=1e-9)
    return s


@pytest.mark.parametrize("kind", ["int", "float", "ties", "zero-cost", "negative-u"])
def test_knapsack_matches_brute_force(kind):
    rng = random.Random(kind)
    for _ in range(40):
        n = rng.randint(1, 9)
        if kind == "int":
            u = [rng.uniform(0, 10) for _ in range(n)]
            c = [rng.randint(1, 20) for _ in range(n)]
        elif kind == "float":
            u = [rng.uniform(0, 1) for _ in range(n)]
            c = [rng.uniform(0.01, 3.0) for _ in range(n)]
        elif kind == "ties":  # many equal values and equal costs
            u = [float(rng.choice([1, 2])) for _ in range(n)]
            c = [rng.choice([2, 3]) for _ in range(n)]
        elif kind == "zero-cost":
            u = [rng.uniform(0, 5) for _ in range(n)]
            c = [rng.choice([0, 0, 1, 4]) for _ in range(n)]
        else:
            u = [rng.uniform(-3, 3) for _ in range(n)]
            c = [rng.randint(0, 6) for _ in range(n)]
        total = sum(c)
        for budget in (0, total / 3, total / 2, total, total + 1):
            for max_states in (1 << 20, 0):  # dense DP where it fits, and the sparse DP always
                s = check(u, c, budget, max_states=max_states)
                assert all(si == 0 for ui, si in zip(u, s) if ui <= 0)


def test_knapsack_edges():
    assert knapsack([], [], 5) == []
    assert knapsack([1.0, 2.0], [1, 1], 0) == [0, 0]
    assert knapsack([1.0, 2.0], [0, 1], 0) == [1, 0]
    assert knapsack([3.0, 2.0, 2.0], [2, 1, 1], 2) == [0, 1, 1]
    # big integer costs (bits of BERT-base matrices) stay exact through the gcd reduction
    c = [294912 + 12288, 1179648 + 49152, 1179648 + 24576]
    check([1.0, 3.0, 2.5], c, c[1] + c[2] - 1)


def test_knapsack_sparse_prefers_the_cheapest_optimum():
    # two optimal selections of value 2: {0} (cost 5) and {1, 2} (cost 2)
    assert knapsack([2.0, 1.0, 1.0], [5, 1, 1], 5, max_states=0) == [0, 1, 1]


@pytest.mark.parametrize("u,c,budget,match", [
    ([1.0], [-1], 1, "negative"),
    ([1.0], [1], -1, "budget"),
    ([1.0, 2.0], [1], 1, "entries"),
    ([float("nan")], [1], 1, "finite"),
    ([1.0], [float("inf")], 1, "finite"),
    ([1.0], [1], "ten", "number"),
    ([True], [1], 1, "number"),
])
def test_knapsack_bad_input(u, c, budget, match):
    with pytest.raises(BinbertError, match=match):
        knapsack(u, c, budget)


# --------------------------------------------------------------------------------------------
# a tiny ternary BERT
# --------------------------------------------------------------------------------------------

CFG = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
           max_position_embeddings=24, num_labels=2)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**CFG)).eval()
    quantize_bert(model, QuantBertConfig(weight="twn", act="uniform", act_bits=8))
    g = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(1, 50, (8, 12), generator=g),
                "attention_mask": torch.ones(8, 12, dtype=torch.long),
                "labels": torch.randint(0, 2, (8,), generator=g)} for _ in range(2)]
    with torch.no_grad():
        model(**{k: v for k, v in batches[0].items() if k != "labels"})  # initialise act quantizers
    return model, batches


def _split_copy(model, names):
    return split_model(copy.deepcopy(model), names=list(names))


def test_splittable(tiny):
    model, _ = tiny
    names = splittable(model)
    assert len(names) == CFG["num_hidden_layers"] * len(MATRICES)
    assert all(n.endswith(MATRICES) and ".encoder.layer." in n for n in names)
    assert EMB not in names and "bert.pooler.dense" not in names
    with pytest.raises(BinbertError, match="ternary"):
        splittable(BertForSequenceClassification(BertConfig(**CFG)))


def test_sensitivity_is_the_gain_of_splitting(tiny):
    model, batches = tiny
    before = [model(**b).logits for b in batches]
    methods = {n: m.weight_quant for n, m in model.named_modules() if hasattr(m, "weight_quant")}
    u = sensitivity(model, batches)
    assert list(u) == splittable(model)
    with torch.no_grad():
        base = neg_loss(_split_copy(model, []).eval(), batches)
        for z in list(u)[:4] + list(u)[-2:]:
            assert u[z] == pytest.approx(neg_loss(_split_copy(model, [z]).eval(), batches) - base, abs=1e-5)
    # the model is left exactly as it was
    assert {n: m.weight_quant for n, m in model.named_modules() if hasattr(m, "weight_quant")} == methods
    for a, b in zip(before, [model(**b).logits for b in batches]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("target,spike", [("bert.encoder.layer.0.attention.output.dense", 2.0),
                                           ("bert.encoder.layer.1.intermediate.dense", 0.5)])
def test_sensitivity_finds_the_matrix_binarization_hurts(tiny, target, spike):
    model, batches = tiny
    m = copy.deepcopy(model)
    w = m.get_submodule(target).weight
    inputs = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    with torch.no_grad():  # sparse large spikes: TWN keeps them, BWN smears them over the matrix
        spikes = (torch.rand(w.shape, generator=torch.Generator().manual_seed(3)) < 0.03).float()
        w.copy_(spikes * torch.sign(torch.randn(w.shape)) * spike + 1e-4 * torch.randn(w.shape))
        ref = [m.bert(**x).last_hidden_state for x in inputs]

    def fidelity(model, bs):  # score: closeness to the ternary model's encoder output
        return -sum((model.bert(**x).last_hidden_state - r).square().sum().item() for x, r in zip(inputs, ref))

    u = sensitivity(m, batches, fidelity)
    first, second = sorted(u.values(), reverse=True)[:2]
    assert u[target] == first and first > 3 * second, u


def test_cost_vector_matches_split_models(tiny):
    model, _ = tiny
    bits, flops = cost_vector(model), cost_vector(model, FlopsCost(12))
    none = _split_copy(model, [])
    for z in splittable(model)[::3]:
        one = _split_copy(model, [z])
        assert bits[z] == model_bits(one) - model_bits(none)
        assert flops[z] == pytest.approx(model_flops(one, 12) - model_flops(none, 12), rel=1e-12)


def test_plan_size_budgets(tiny):
    model, batches = tiny
    u = sensitivity(model, batches)
    u = {z: abs(v) + 1e-3 for z, v in u.items()}  # all positive: every matrix is worth splitting
    lo = model_size_mb(_split_copy(model, []))
    hi = model_size_mb(_split_copy(model, splittable(model)))
    assert plan(model, budget_mb=lo, sensitivities=u).selected == ()
    assert plan(model, budget_mb=hi, sensitivities=u).selected == tuple(splittable(model))
    for frac in (0.3, 0.6):
        budget = lo + frac * (hi - lo)
        p = plan(model, budget_mb=budget, sensitivities=u)
        assert 0 < len(p.selected) < len(p.candidates)
        assert p.base_cost == model_bits(_split_copy(model, []))
        # optimal over all 2^12 subsets
        best = max(sum(u[z] for z, s in zip(p.candidates, bits) if s)
                   for bits in itertools.product((0, 1), repeat=len(p.candidates))
                   if sum(c * s for c, s in zip(p.costs, bits)) <= p.budget - p.base_cost)
        assert p.value == pytest.approx(best)
        split = adaptive_split(copy.deepcopy(model), p)
        assert model_bits(split) == p.cost <= p.budget
        assert model_size_mb(split) <= budget
        assert split.binbert_quant.split == p.selected


def test_plan_measures_sensitivity_and_split_output(tiny):
    model, batches = tiny
    lo, hi = model_flops(_split_copy(model, []), 12), model_flops(_split_copy(model, splittable(model)), 12)
    p = plan(model, budget_flops=(lo + hi) / 2, seq_len=12, batches=batches, always_split=[EMB])
    assert p.unit == "flops" and p.cost <= p.budget and EMB in p.always_split
    assert p.sensitivity == tuple(sensitivity(model, batches, keep_ternary=[EMB]).values())
    split = adaptive_split(copy.deepcopy(model), p)
    assert model_flops(split, 12) == pytest.approx(p.cost)
    assert set(split.binbert_quant.split) == set(p.selected) | {EMB}
    assert p.to_dict()["selected"] == list(p.selected)


def test_plan_custom_cost(tiny):
    model, _ = tiny

    def luts(spec: LayerSpec) -> float:  # hardware-style cost: weight bits only
        return spec.weights * spec.terms * spec.weight_bits / 6

    u = {z: 1.0 for z in splittable(model)}
    c = cost_vector(model, luts)
    base = plan(model, budget=1e9, cost_fn=luts, sensitivities=u).base_cost
    cheapest = min(c.values())
    p = plan(model, budget=base + cheapest, cost_fn=luts, sensitivities=u)
    assert len(p.selected) == 1 and c[p.selected[0]] == cheapest and p.unit == "cost"


def test_plan_bad_input(tiny):
    model, _ = tiny
    u = {z: 1.0 for z in splittable(model)}
    lo = model_size_mb(_split_copy(model, []))
    with pytest.raises(BinbertError, match="below the all-binary"):
        plan(model, budget_mb=lo * 0.99, sensitivities=u)
    with pytest.raises(BinbertError, match="exactly one"):
        plan(model, budget_mb=1.0, budget_flops=1e9, sensitivities=u)
    with pytest.raises(BinbertError, match="exactly one"):
        plan(model, sensitivities=u)
    with pytest.raises(BinbertError, match="cost_fn"):
        plan(model, budget=10.0, sensitivities=u)
    with pytest.raises(BinbertError, match="cost_fn"):
        plan(model, budget_mb=1.0, cost_fn=ParamsCost(), sensitivities=u)
    with pytest.raises(BinbertError, match="no sensitivity"):
        plan(model, budget_mb=lo * 2, sensitivities=dict(list(u.items())[1:]))
    with pytest.raises(BinbertError, match="batches"):
        plan(model, budget_mb=lo * 2)
    with pytest.raises(BinbertError, match="is a candidate"):
        plan(model, budget_mb=lo * 2, sensitivities=u, always_split=[splittable(model)[0]])
    with pytest.raises(BinbertError, match="not a ternary layer"):
        plan(model, budget_mb=lo * 2, sensitivities=u, always_split=["bert.pooler"])
    with pytest.raises(BinbertError, match="metric_or_loss"):
        sensitivity(model, [{}], "accuracy")
    with pytest.raises(BinbertError, match="at least one"):
        sensitivity(model, [])
    p = plan(model, budget_mb=lo * 2, sensitivities=u)
    other = quantize_bert(BertForSequenceClassification(BertConfig(**{**CFG, "num_hidden_layers": 1})),
                          QuantBertConfig(weight="twn"))
    with pytest.raises(BinbertError, match="other splittable"):
        adaptive_split(other, p)
    with pytest.raises(BinbertError, match="no ternary layer"):
        adaptive_split(_split_copy(model, []), p)
    with pytest.raises(BinbertError, match="SplitPlan"):
        adaptive_split(model, {"selected": []})
    assert isinstance(p, SplitPlan) and p.budget >= p.cost


def test_accounting_skip_only_moves_c0(tiny):
    from sw.cost import BINARYBERT_TABLE
    model, _ = tiny
    u = {z: 1.0 for z in splittable(model)}
    a = plan(model, budget_mb=10.0, sensitivities=u, accounting=COUNT_ALL)
    b = plan(model, budget_mb=10.0, sensitivities=u, accounting=BINARYBERT_TABLE)
    assert a.costs == b.costs and a.base_cost > b.base_cost
