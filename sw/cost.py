"""Size and FLOPs accounting of (quantized) BERTs, as the BinaryBERT / BiBERT tables count them,
with a pluggable per-layer cost so a hardware cost (LUTs, BRAM bits from a bitstream report) can
replace it in adaptive splitting.

What is counted (the papers' conventions):

* Size: every weight at its bit width -- full precision 32, ternary (TWN) 2, binary (BWN) 1, a
  split matrix (SplitQuantLinear / SplitQuantEmbedding) 2 x 1 bit -- plus every other parameter
  (biases, LayerNorm, position / token-type embeddings, classifier, quantizer clips) at 32 bits.
  A split layer carries two biases (b/2 each, as the official split code stores them), so they
  count twice. Per-matrix / per-row scale factors are *not* counted (the tables do not; set
  ``Accounting(count_scales=True)`` to include them). "MB" is 2**20 bytes: BERT-base's
  109,482,240 fp32 parameters (+ a 2-way classifier) are the tables' 417.6 MB.
* FLOPs: every matmul, 2 FLOPs per multiply-accumulate, times mn/64 when an m-bit operand meets
  an n-bit one (the papers: "an m-bit x n-bit multiplication takes mn/64 FLOPs on a 64-bit CPU";
  full precision = 32 bits, and the factor is capped at 1). The encoder linears and both
  attention matmuls (Q·Kᵀ and P·V, at the activation bit widths) see every token; the pooler
  and the classifier see [CLS] only. Embedding look-ups and element-wise work (softmax, GELU,
  LayerNorm, residual adds) are not counted.

The tables do not follow one accounting throughout; tests/sw/test_cost.py rebuilds each row on
BERT-base shapes (meta device) and checks it against the table:

* ``COUNT_ALL`` (the default) counts the whole model: full precision 417.65 MB (table 417.6),
  TernaryBERT 2-2-8 27.96 MB (28.0), half-width binary BinaryBERT 9.78 MB (9.8, the left end of
  the adaptive-splitting figure).
* ``BINARYBERT_TABLE`` leaves out position / token-type embeddings and the pooler: BWN 1-1-8
  13.39 MB (13.4); TWS 1-1-8 16.25 MB (16.5: the split word embedding's two sets of per-row
  scales, 0.23 MB, would close the gap, but counting scales breaks BWN's 13.4).
* FLOPs at 128 tokens: full precision 22.35 G (22.5); BWN 1-1-8 3.32 G and 1-1-4 1.51 G; TWS
  (6 heads after splitting, so half the attention matmuls) 3.02 G and 1.44 G. The table gives
  3.1 / 1.5 for both: no single per-matmul rule reproduces all of its FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from torch import nn

from hw.errors import BinbertError
from hw.validate import int_value

FP_BITS = 32
BITS_OF_METHOD = {"fp": FP_BITS, "twn": 2, "bwn": 1}
KINDS = ("linear", "embedding", "attention", "fp")


@dataclass(frozen=True)
class LayerSpec:
    """Shape and precision of one cost-bearing part of a model (no tensors: works on meta).

    kind "linear": rows x cols weight (out x in), ``terms`` matrices of ``weight_bits`` each
        (terms=2 for a split), ``bias`` values per term, input activations of ``act_bits[0]`` bits;
        ``cls_only``: applied to the [CLS] token only (pooler, classifier).
    kind "embedding": rows x cols table; no FLOPs.
    kind "attention": the two activation matmuls of self-attention over ``cols`` = heads x
        head_size channels; ``act_bits`` for Q·Kᵀ (q and k bits), ``act_bits2`` for P·V.
    kind "fp": ``fp_params`` full-precision parameters (LayerNorm, position embeddings, ...).
    ``scales``: number of full-precision scale factors (counted only with count_scales).
    """

    name: str
    kind: str
    rows: int = 0
    cols: int = 0
    weight_bits: int = FP_BITS
    terms: int = 1
    bias: int = 0
    act_bits: tuple[int, int] = (FP_BITS, FP_BITS)
    act_bits2: tuple[int, int] = (FP_BITS, FP_BITS)
    cls_only: bool = False
    fp_params: int = 0
    scales: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise BinbertError(f"LayerSpec {self.name!r}: kind={self.kind!r} unknown, choose one of {', '.join(KINDS)}")
        for f in ("rows", "cols", "weight_bits", "terms", "bias", "fp_params", "scales"):
            v = getattr(self, f)
            int_value(v, f"LayerSpec {self.name!r}: {f}={v!r} must be a non-negative integer", lo=0)

    @property
    def weights(self) -> int:
        return self.rows * self.cols if self.kind in ("linear", "embedding") else 0

    def as_binary(self) -> "LayerSpec":
        """This matrix as one plain BWN matrix (adaptive splitting's 'not split' choice)."""
        return replace(self, weight_bits=1, terms=1)

    def as_split(self) -> "LayerSpec":
        """This matrix as two binary matrices with two biases (ternary weight splitting)."""
        return replace(self, weight_bits=1, terms=2)


@runtime_checkable
class LayerCost(Protocol):
    """A per-layer cost: bits, FLOPs, or a hardware figure (LUTs, BRAM bits, cycles).

    Adaptive splitting only needs cost(spec.as_split()) - cost(spec.as_binary()) per matrix,
    so any monotone cost model of a LayerSpec can be plugged in.
    """

    def __call__(self, layer: LayerSpec) -> float: ...


# --------------------------------------------------------------------------------------------
# per-layer costs
# --------------------------------------------------------------------------------------------

def _spec(layer) -> LayerSpec:
    if isinstance(layer, LayerSpec):
        return layer
    if isinstance(layer, nn.Module):
        specs = [s for s in _module_specs("", layer, recurse=False)]
        if len(specs) != 1:
            raise BinbertError(f"cost: {type(layer).__name__} is not one cost-bearing layer; use model_size_mb / layer_specs")
        return specs[0]
    raise BinbertError(f"cost: expected a LayerSpec or nn.Module, got {type(layer).__name__}")


def params_cost(layer, *, fp_bits: int = FP_BITS, count_scales: bool = False) -> int:
    """Storage bits of one layer (LayerSpec or module)."""
    s = _spec(layer)
    bits = s.weights * s.weight_bits * s.terms + (s.bias * s.terms + s.fp_params) * fp_bits
    if count_scales:
        bits += s.scales * s.terms * fp_bits
    return bits


def _bit_factor(m: int, n: int) -> float:
    # mn/64 FLOPs per multiply, full precision (32 x 32) being one FLOP: cap at 1.
    return min(1.0, m * n / 64)


def flops_cost(layer, seq_len: int) -> float:
    """FLOPs of one layer for one sequence of ``seq_len`` tokens (2 per MAC x mn/64)."""
    int_value(seq_len, f"cost: seq_len={seq_len!r} must be a positive integer", lo=1)
    s = _spec(layer)
    if s.kind == "linear":
        tokens = 1 if s.cls_only else seq_len
        return 2.0 * tokens * s.weights * s.terms * _bit_factor(s.weight_bits, s.act_bits[0])
    if s.kind == "attention":
        macs = seq_len * seq_len * s.cols  # per matmul: heads x T x T x head_size
        return 2.0 * macs * (_bit_factor(*s.act_bits) + _bit_factor(*s.act_bits2))
    return 0.0


class ParamsCost:
    """LayerCost in storage bits."""

    def __init__(self, *, fp_bits: int = FP_BITS, count_scales: bool = False):
        self.fp_bits, self.count_scales = fp_bits, count_scales

    def __call__(self, layer: LayerSpec) -> float:
        return params_cost(layer, fp_bits=self.fp_bits, count_scales=self.count_scales)


class FlopsCost:
    """LayerCost in FLOPs at a fixed sequence length."""

    def __init__(self, seq_len: int = 128):
        flops_cost(LayerSpec("probe", "fp"), seq_len)  # validates seq_len
        self.seq_len = seq_len

    def __call__(self, layer: LayerSpec) -> float:
        return flops_cost(layer, self.seq_len)


# --------------------------------------------------------------------------------------------
# reading a model
# --------------------------------------------------------------------------------------------

def _act_bits(q) -> int:
    bits = getattr(q, "bits", None) if q is not None else None
    return FP_BITS if bits is None else int(bits)


def _method_bits(wq) -> int:
    method = wq.cfg.method
    if method not in BITS_OF_METHOD:
        raise BinbertError(f"cost: weight method {method!r} has no bit width")
    return BITS_OF_METHOD[method]


def _scales(wq, rows: int) -> int:
    return rows if wq.cfg.method != "fp" and wq.cfg.per_row else (1 if wq.cfg.method != "fp" else 0)


def _module_specs(name: str, m: nn.Module, recurse: bool = True):
    """LayerSpecs of module ``m`` itself (its own parameters / matmuls)."""
    from transformers.models.bert.modeling_bert import BertSelfAttention
    from sw.qbert import QuantBertSelfAttention

    cls_only = "pooler" in name.split(".") or "classifier" in name.split(".")
    own = dict(m.named_parameters(recurse=False))
    handled: set[str] = set()
    if hasattr(m, "weight_terms"):
        # a quantized weight layer (QuantLinear / QuantEmbedding, or a split one: two terms)
        terms = m.weight_terms()
        (w, wq), biases = terms[0], m.bias_terms()
        rows, cols = w.shape
        kw = dict(terms=len(terms), scales=_scales(wq, rows))
        if hasattr(m, "act_quant"):  # a linear: it multiplies quantized inputs
            a = _act_bits(m.act_quant)
            yield LayerSpec(name, "linear", rows, cols, _method_bits(wq), bias=rows if biases else 0,
                            act_bits=(a, a), cls_only=cls_only, **kw)
        else:  # a table: looked up, no FLOPs
            yield LayerSpec(name, "embedding", rows, cols, _method_bits(wq), **kw)
        stored = {id(p) for p, _ in terms} | {id(p) for p in biases}
        handled |= {k for k, p in own.items() if id(p) in stored}
    elif isinstance(m, nn.Linear):
        yield LayerSpec(name, "linear", m.out_features, m.in_features, FP_BITS, 1,
                        0 if m.bias is None else m.out_features, cls_only=cls_only)
        handled |= {"weight", "bias"}
    elif isinstance(m, nn.Embedding):
        yield LayerSpec(name, "embedding", m.num_embeddings, m.embedding_dim, FP_BITS)
        handled |= {"weight"}
    if isinstance(m, QuantBertSelfAttention):
        bi = m.mode == "bi"
        p_bits = 1 if bi else _act_bits(m.p_quant)  # Bi-Attention's probabilities are 0/1
        yield LayerSpec(name + ".matmuls" if name else "matmuls", "attention", 0, m.all_head_size,
                        act_bits=(_act_bits(m.q_quant), _act_bits(m.k_quant)),
                        act_bits2=(p_bits, _act_bits(m.v_quant)))
    elif isinstance(m, BertSelfAttention):
        yield LayerSpec(name + ".matmuls" if name else "matmuls", "attention", 0,
                        m.num_attention_heads * m.attention_head_size)
    rest = sum(p.numel() for k, p in own.items() if k not in handled)
    if rest:
        yield LayerSpec(name, "fp", fp_params=rest)


def layer_specs(model: nn.Module) -> list[LayerSpec]:
    """Every cost-bearing part of ``model``, by module name (meta-device models work)."""
    if not isinstance(model, nn.Module):
        raise BinbertError(f"cost: expected an nn.Module, got {type(model).__name__}")
    specs = []
    for name, m in model.named_modules():
        specs.extend(_module_specs(name, m, recurse=False))
    return specs


@dataclass(frozen=True)
class Accounting:
    """Which parts a size / FLOPs total counts, and the unit of "MB"."""

    skip: tuple[str, ...] = ()   # dotted name components / prefixes left out, e.g. "pooler"
    unit_bytes: int = 2 ** 20
    fp_bits: int = FP_BITS
    count_scales: bool = False

    def counts(self, name: str) -> bool:
        parts = name.split(".")
        for s in self.skip:
            sp = s.split(".")
            if any(parts[i:i + len(sp)] == sp for i in range(len(parts) - len(sp) + 1)):
                return False
        return True


COUNT_ALL = Accounting()
# The BinaryBERT GLUE/SQuAD tables' BWN 13.4 MB / TWS 16.5 MB leave these out.
BINARYBERT_TABLE = Accounting(skip=("embeddings.position_embeddings", "embeddings.token_type_embeddings", "pooler"))


def model_bits(model: nn.Module, accounting: Accounting = COUNT_ALL) -> int:
    return sum(params_cost(s, fp_bits=accounting.fp_bits, count_scales=accounting.count_scales)
               for s in layer_specs(model) if accounting.counts(s.name))


def model_size_mb(model: nn.Module, accounting: Accounting = COUNT_ALL) -> float:
    """Model size in MB (2**20 bytes by default) per the papers' accounting (module docstring)."""
    return model_bits(model, accounting) / 8 / accounting.unit_bytes


def model_flops(model: nn.Module, seq_len: int = 128, accounting: Accounting = COUNT_ALL) -> float:
    """FLOPs of one forward pass over one sequence of ``seq_len`` tokens (module docstring)."""
    return sum(flops_cost(s, seq_len) for s in layer_specs(model) if accounting.counts(s.name))
