"""Ternary weight splitting (BinaryBERT §3.2): a ternary model becomes a binary one of twice
the width with exactly the same output.

Each latent ternary weight w is split into two latent binary weights w1 + w2 = w chosen so
that BWN(w1) + BWN(w2) == TWN(w) (Equation (A); the expression for a as the BinaryBERT slides
print it swaps the J and K sums, the form below is the one exact equivalence requires):

    I = {TWN(w) != 0},  J = {TWN(w) == 0, w > 0},  K = {TWN(w) == 0, w <= 0}
    a = (sum_I |w| + sum_K |w| - sum_J |w|) / (2 sum_I |w|)
    b = (n / |I| * sum_I |w| - sum |w|) / (2 (|J| + |K|))
    w1 = a w on I,  b + w on J,  b on K          w2 = (1 - a) w on I,  -b on J,  -b + w on K

Then alpha1 = alpha2 = alpha_TWN / 2 and the signs agree on I and cancel on J and K.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from hw.errors import BinbertError
from sw.qmodel import quant_config_of, set_quant_config
from sw.quant.config import WeightQuantConfig
from sw.quant.functions import row_dims, twn_params
from sw.quant.modules import (ActQuantizer, QuantEmbedding, QuantLinear, WeightQuantizer,
                              act_quant_is_shared, share_act_quant)


def split_params(w: torch.Tensor, per_row: bool = False):
    """(a, b, I, J, K) of Equation (A): a and b as float64 (0-d, or one per row, broadcastable),
    I, J, K as boolean masks. I is TWN's own test in w's dtype, so the split matches the
    ternary model bit for bit; the sums accumulate in float64."""
    w = w.detach()
    dims = row_dims(w, per_row)
    delta, _ = twn_params(w, per_row)
    mag = w.abs()
    in_i = mag >= delta
    pos = w > 0
    in_j = ~in_i & pos
    in_k = ~in_i & ~pos
    zero = torch.zeros((), dtype=w.dtype, device=w.device)

    def total(x):
        return x.sum(dim=dims, keepdim=per_row, dtype=torch.float64)

    s_all = total(mag)
    s_i = total(torch.where(in_i, mag, zero))
    s_j = total(torch.where(in_j, mag, zero))
    s_k = s_all - s_i - s_j
    n = float(w[0].numel()) if per_row else float(w.numel())
    n_i = in_i.sum(dim=dims, keepdim=per_row).to(torch.float64)
    n_jk = n - n_i
    # an all-zero row (e.g. the padding embedding) has s_I = 0: any a works, take 1/2
    a = torch.where(s_i > 0, (s_i + s_k - s_j) / (2 * s_i.clamp_min(torch.finfo(torch.float64).tiny)),
                    torch.full_like(s_i, 0.5))
    # no J or K element: b never multiplies anything, take 0
    b = torch.where(n_jk > 0, (n / n_i.clamp_min(1) * s_i - s_all) / (2 * n_jk.clamp_min(1)),
                    torch.zeros_like(s_i))
    return a, b, in_i, in_j, in_k


def split_weight(w: torch.Tensor, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent binary splits (w1, w2) of a latent ternary weight, w1 + w2 == w (Equation (A))."""
    if w.dim() < 1 or w.numel() == 0:
        raise BinbertError(f"split_weight needs a non-empty tensor, got shape {tuple(w.shape)}")
    a, b, in_i, in_j, _ = split_params(w, per_row)
    w = w.detach()
    # elementwise work in w's dtype (a, b rounded once); float64 weights stay float64
    a, b = a.to(w.dtype), b.to(w.dtype)
    w1 = torch.where(in_i, a * w, torch.where(in_j, w + b, b))
    w2 = torch.where(in_i, w - w1, torch.where(in_j, -b, w - b))
    return w1, w2


def _bwn(per_row: bool) -> WeightQuantConfig:
    return WeightQuantConfig("bwn", per_row=per_row)


class SplitQuantLinear(nn.Module):
    """Two binary latent weights (own BWN scale each) on one quantized input:
    y = x_q·(BWN(W1) + BWN(W2))ᵀ + b1 + b2, with b1 = b2 = b / 2 after splitting."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_row: bool = False,
                 act_quant: ActQuantizer | None = None, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight1 = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.weight2 = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias1 = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        self.bias2 = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        self.weight_quant1 = WeightQuantizer(_bwn(per_row))
        self.weight_quant2 = WeightQuantizer(_bwn(per_row))
        self.act_quant = act_quant if act_quant is not None else ActQuantizer()

    @classmethod
    def from_ternary(cls, q: QuantLinear) -> "SplitQuantLinear":
        """Split a ternary QuantLinear; the activation quantizer is the same object."""
        wq = q.weight_quant.cfg
        if wq.method != "twn" and wq.method != "bwn":
            raise BinbertError(f"only ternary layers can be split, got weight method {wq.method!r}")
        s = cls(q.in_features, q.out_features, bias=q.bias is not None, per_row=wq.per_row,
                device=q.weight.device, dtype=q.weight.dtype)
        if act_quant_is_shared(q):
            share_act_quant(s, q.act_quant)
        else:
            s.act_quant = q.act_quant
        w1, w2 = split_weight(q.weight, wq.per_row)
        with torch.no_grad():
            s.weight1.copy_(w1)
            s.weight2.copy_(w2)
            if q.bias is not None:
                s.bias1.copy_(q.bias / 2)
                s.bias2.copy_(q.bias / 2)
        return s

    def quantized_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight_quant1(self.weight1), self.weight_quant2(self.weight2)

    def quantized_weight(self) -> torch.Tensor:
        """Effective (summed) weight: what the two hardware terms compute together (§6)."""
        q1, q2 = self.quantized_weights()
        return q1 + q2

    def latent_weight(self) -> torch.Tensor:
        return self.weight1 + self.weight2

    def weight_terms(self) -> list[tuple[nn.Parameter, WeightQuantizer]]:
        """(latent weight, its quantizer) of both binary terms (see QuantLinear.weight_terms)."""
        return [(self.weight1, self.weight_quant1), (self.weight2, self.weight_quant2)]

    def bias_terms(self) -> list[nn.Parameter]:
        """Both halves of the bias (b/2 each after splitting), or none."""
        return [] if self.bias1 is None else [self.bias1, self.bias2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias1 + self.bias2 if self.bias1 is not None else None
        return F.linear(self.act_quant(x), self.quantized_weight(), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias1 is not None}, per_row={self.weight_quant1.cfg.per_row}")


class SplitQuantEmbedding(nn.Module):
    """Embedding table stored as two binary tables: E = BWN(E1) + BWN(E2) (per-row scales)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, per_row: bool = True,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight1 = nn.Parameter(torch.empty(num_embeddings, embedding_dim, **kw))
        self.weight2 = nn.Parameter(torch.empty(num_embeddings, embedding_dim, **kw))
        self.weight_quant1 = WeightQuantizer(_bwn(per_row))
        self.weight_quant2 = WeightQuantizer(_bwn(per_row))

    @classmethod
    def from_ternary(cls, q: QuantEmbedding) -> "SplitQuantEmbedding":
        wq = q.weight_quant.cfg
        if wq.method != "twn" and wq.method != "bwn":
            raise BinbertError(f"only ternary embeddings can be split, got weight method {wq.method!r}")
        s = cls(q.num_embeddings, q.embedding_dim, padding_idx=q.padding_idx, per_row=wq.per_row,
                device=q.weight.device, dtype=q.weight.dtype)
        w1, w2 = split_weight(q.weight, wq.per_row)
        with torch.no_grad():
            s.weight1.copy_(w1)
            s.weight2.copy_(w2)
        return s

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant1(self.weight1) + self.weight_quant2(self.weight2)

    def latent_weight(self) -> torch.Tensor:
        return self.weight1 + self.weight2

    def weight_terms(self) -> list[tuple[nn.Parameter, WeightQuantizer]]:
        """(latent table, its quantizer) of both binary terms."""
        return [(self.weight1, self.weight_quant1), (self.weight2, self.weight_quant2)]

    def bias_terms(self) -> list[nn.Parameter]:
        return []  # a table has no bias

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.weight_quant1.cfg.per_row:
            # per-row scales depend on the row only: quantize just the looked-up rows
            r1 = F.embedding(ids, self.weight1, self.padding_idx)
            r2 = F.embedding(ids, self.weight2, self.padding_idx)
            flat = (r1.reshape(-1, self.embedding_dim), r2.reshape(-1, self.embedding_dim))
            return (self.weight_quant1(flat[0]) + self.weight_quant2(flat[1])).reshape(r1.shape)
        return F.embedding(ids, self.quantized_weight(), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, per_row={self.weight_quant1.cfg.per_row}"


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def split_model(model: nn.Module, names=None, _from_binary: bool = False) -> nn.Module:
    """Split a ternary model (``quantize_bert`` with weight="twn") in place into a binary one.

    names: module names (as in ``model.named_modules()``) to split into two binary terms;
    None splits every ternary layer. Ternary layers not named become plain BWN binary layers
    on their latent weight (adaptive splitting, BinaryBERT §3.3). The model's QuantBertConfig
    becomes weight="bwn" with ``split`` = the split names.
    """
    cfg = quant_config_of(model)
    if cfg is None:
        raise BinbertError("split_model needs a model quantized by quantize_bert")
    want = "bwn" if _from_binary else "twn"
    if cfg.weight != want:
        raise BinbertError(f"split_model needs a ternary model (weight='twn'), got weight={cfg.weight!r}")
    candidates = {n: m for n, m in model.named_modules()
                  if isinstance(m, (QuantLinear, QuantEmbedding)) and m.weight_quant.cfg.method == want}
    if names is None:
        chosen = list(candidates)
    else:
        if isinstance(names, str):
            raise BinbertError("split names must be a list of module names, not one string")
        chosen = list(dict.fromkeys(names))
        for n in chosen:
            if n not in candidates:
                raise BinbertError(f"split name {n!r} is not a ternary layer of this model "
                                   f"(e.g. {next(iter(candidates), 'none')!r})")
    for n, m in candidates.items():
        if n in chosen:
            split = (SplitQuantLinear if isinstance(m, QuantLinear) else SplitQuantEmbedding).from_ternary(m)
            _set_submodule(model, n, split.train(m.training))
        else:
            m.weight_quant = WeightQuantizer(replace(m.weight_quant.cfg, method="bwn"))
    set_quant_config(model, replace(cfg, weight="bwn", split=tuple(chosen)))
    return model
