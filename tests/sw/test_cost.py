"""sw/cost.py: the papers' size / FLOPs accounting on BERT-base shapes (meta device, no weights).

Exact checks compare the module walk with closed forms computed here from the config; the
paper checks compare with the BinaryBERT / BiBERT table values, each within the gap the module
docstring of sw/cost.py states (the tables do not share one accounting).
"""
from __future__ import annotations

import pytest
import torch

from hw.errors import BinbertError
from sw.cost import (BINARYBERT_TABLE, COUNT_ALL, Accounting, FlopsCost, LayerCost, LayerSpec,
                     ParamsCost, flops_cost, layer_specs, model_bits, model_flops, model_size_mb,
                     params_cost)

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from sw.prune import resize_to_width  # noqa: E402
from sw.qbert import QuantBertConfig, quantize_bert  # noqa: E402
from sw.quant import QuantLinear  # noqa: E402
from sw.split import SplitQuantLinear, split_model  # noqa: E402

MIB = 2 ** 20
T = 128


def bert_base(width=1.0, weight="fp", act="fp", bits=8, split=False, **cfg):
    with torch.device("meta"):
        m = BertForSequenceClassification(BertConfig(**cfg))
    resize_to_width(m, width)
    if weight != "fp" or act != "fp":
        quantize_bert(m, QuantBertConfig(weight=weight, act=act, act_bits=bits))
    if split:
        split_model(m)
    return m


def closed_form(cfg: BertConfig, width: float, w_bits: int, e_bits: int, a_bits: int, terms: int,
                skip_pos_pool: bool):
    """(bits, FLOPs) of a BERT from its config: what the tables count, written out by hand."""
    H, L, V, F = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
    heads = round(cfg.num_attention_heads * width)
    A, Fw = heads * (H // cfg.num_attention_heads), round(F * width)   # pruned widths
    mats = 3 * H * A + A * H + H * Fw + Fw * H                         # per layer
    biases = 3 * A + H + Fw + H
    ln = 2 * 2 * H
    fp = 32
    bits = L * (mats * w_bits * terms + biases * terms * fp + ln * fp)
    bits += V * H * e_bits * (terms if e_bits < 32 else 1) + 2 * H * fp          # word emb + emb LN
    bits += 2 * H * fp + 2 * fp                                                   # classifier
    if not skip_pos_pool:
        bits += (cfg.max_position_embeddings + cfg.type_vocab_size) * H * fp
        bits += H * H * w_bits * terms + H * terms * fp
    q = 1.0 if w_bits == 32 and a_bits == 32 else min(1.0, w_bits * a_bits / 64)
    qa = 1.0 if a_bits == 32 else min(1.0, a_bits * a_bits / 64)
    flops = 2 * T * L * mats * terms * q + L * 2 * (2 * T * T * A) * qa
    flops += 2 * H * H * terms * q + 2 * H * 2 * 1.0  # pooler + classifier on [CLS]
    return bits, flops


CASES = {
    # name: (model kwargs, closed-form kwargs)
    "full precision": (dict(), dict(width=1.0, w_bits=32, e_bits=32, a_bits=32, terms=1)),
    "BWN 1-1-8": (dict(weight="bwn", act="uniform", bits=8),
                  dict(width=1.0, w_bits=1, e_bits=1, a_bits=8, terms=1)),
    "TWS 1-1-8": (dict(width=0.5, weight="twn", act="uniform", bits=8, split=True),
                  dict(width=0.5, w_bits=1, e_bits=1, a_bits=8, terms=2)),
    "TWS 1-1-4": (dict(width=0.5, weight="twn", act="lsq", bits=4, split=True),
                  dict(width=0.5, w_bits=1, e_bits=1, a_bits=4, terms=2)),
    "TernaryBERT 2-2-8": (dict(weight="twn", act="uniform", bits=8),
                          dict(width=1.0, w_bits=2, e_bits=2, a_bits=8, terms=1)),
    "half binary 1-1-8": (dict(width=0.5, weight="bwn", act="uniform", bits=8),
                          dict(width=0.5, w_bits=1, e_bits=1, a_bits=8, terms=1)),
}


@pytest.fixture(scope="module")
def models():
    return {name: bert_base(**kw) for name, (kw, _) in CASES.items()}


def _clip_params(model) -> int:
    # activation-quantizer clips / steps: full-precision scalars, counted by the walk
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith((".clip", ".step")))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("accounting", ["all", "table"])
def test_walk_matches_closed_form(models, name, accounting):
    model = models[name]
    acc = COUNT_ALL if accounting == "all" else BINARYBERT_TABLE
    bits, flops = closed_form(BertConfig(), skip_pos_pool=accounting == "table", **CASES[name][1])
    bits += 32 * _clip_params(model)
    if accounting == "table":
        bits -= 32 * sum(p.numel() for n, p in model.named_parameters()
                         if n.startswith("bert.pooler.") and n.endswith((".clip", ".step")))
    assert model_bits(model, acc) == bits
    assert model_flops(model, T, acc if accounting == "all" else COUNT_ALL) == pytest.approx(flops, rel=1e-12)


def test_full_precision_counts_every_parameter(models):
    m = models["full precision"]
    assert model_bits(m) == 32 * sum(p.numel() for p in m.parameters())


# (name, accounting, table MB, tolerance MB): the tolerance is the gap sw/cost.py documents
SIZES = [
    ("full precision", COUNT_ALL, 417.6, 0.05),
    ("TernaryBERT 2-2-8", COUNT_ALL, 28.0, 0.05),
    ("half binary 1-1-8", COUNT_ALL, 9.8, 0.05),
    ("BWN 1-1-8", BINARYBERT_TABLE, 13.4, 0.05),
    ("TWS 1-1-8", BINARYBERT_TABLE, 16.5, 0.3),
]


@pytest.mark.parametrize("name,acc,table,tol", SIZES, ids=[s[0] for s in SIZES])
def test_paper_sizes(models, name, acc, table, tol):
    assert model_size_mb(models[name], acc) == pytest.approx(table, abs=tol)


FLOPS = [  # (name, table GFLOPs, relative tolerance)
    ("full precision", 22.5, 0.01),
    ("BWN 1-1-8", 3.1, 0.08),
    ("TWS 1-1-8", 3.1, 0.03),
    ("TWS 1-1-4", 1.5, 0.05),
]


@pytest.mark.parametrize("name,table,rel", FLOPS, ids=[f[0] for f in FLOPS])
def test_paper_flops(models, name, table, rel):
    assert model_flops(models[name], T) / 1e9 == pytest.approx(table, rel=rel)


def test_split_layer_costs_against_binary(models):
    m = models["TWS 1-1-8"]
    split = m.bert.encoder.layer[0].intermediate.dense
    assert isinstance(split, SplitQuantLinear)
    spec = layer_specs(split)[0]
    extra_bits = params_cost(spec.as_split()) - params_cost(spec.as_binary())
    assert extra_bits == split.in_features * split.out_features + 32 * split.out_features
    assert params_cost(split) == params_cost(spec.as_split())
    assert flops_cost(spec.as_split(), T) == 2 * flops_cost(spec.as_binary(), T)
    ternary = bert_base(width=0.5, weight="twn", act="uniform").bert.encoder.layer[0].intermediate.dense
    assert isinstance(ternary, QuantLinear)
    # a ternary matrix costs what its split costs, less the second bias
    assert params_cost(ternary) == params_cost(split) - 32 * split.out_features
    assert flops_cost(ternary, T) == flops_cost(split, T)


def test_pluggable_cost():
    class LutCost:  # e.g. LUTs of an XNOR-popcount array: ~1 LUT per 6 weight bits
        def __call__(self, layer: LayerSpec) -> float:
            return layer.weights * layer.terms * layer.weight_bits / 6

    for c in (ParamsCost(), FlopsCost(128), LutCost()):
        assert isinstance(c, LayerCost)
    spec = LayerSpec("x", "linear", 4, 6, bias=4)
    assert LutCost()(spec.as_split()) - LutCost()(spec.as_binary()) == 4
    assert ParamsCost()(spec) == params_cost(spec)
    assert FlopsCost(16)(spec) == flops_cost(spec, 16)


def test_bit_factor_and_scales():
    spec = LayerSpec("x", "linear", 8, 8, weight_bits=2, act_bits=(8, 8), scales=8)
    assert flops_cost(spec, 1) == 2 * 64 * 2 * 8 / 64
    assert flops_cost(LayerSpec("e", "embedding", 10, 4, weight_bits=1), 128) == 0
    assert params_cost(spec, count_scales=True) - params_cost(spec) == 8 * 32
    assert Accounting(skip=("pooler",)).counts("bert.pooler.dense") is False
    assert Accounting(skip=("pooler",)).counts("bert.poolerx.dense") is True


@pytest.mark.parametrize("seq_len", [0, -1, 1.5, True, "128"])
def test_bad_seq_len(seq_len):
    with pytest.raises(BinbertError, match="seq_len"):
        flops_cost(LayerSpec("x", "linear", 2, 2), seq_len)


def test_bad_inputs():
    with pytest.raises(BinbertError, match="kind"):
        LayerSpec("x", "conv")
    with pytest.raises(BinbertError, match="rows"):
        LayerSpec("x", "linear", rows=-1)
    with pytest.raises(BinbertError, match="LayerSpec or nn.Module"):
        params_cost("query")
    with pytest.raises(BinbertError, match="not one cost-bearing layer"):
        params_cost(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(BinbertError, match="nn.Module"):
        model_size_mb("model.bin")
