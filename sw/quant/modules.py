"""The quantizer modules built from :mod:`sw.quant.config`, and the layers that use them:
:class:`QuantLinear` (quantized input and weight) and :class:`QuantEmbedding` (quantized table)."""
from __future__ import annotations

import math
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn

from hw.errors import BinbertError
from hw.validate import int_value
from sw.quant.config import ActQuantConfig, WeightQuantConfig
from sw.quant.functions import (bwn_codes, lsq_codes, qrange, sign_codes, twn_codes, uniform_codes,
                                uniform_step)
from sw.quant.ste import BWNSTE, LSQSTE, TWNSTE, SignSTE, UniformSTE


class WeightQuantizer(nn.Module):
    """Applies a :class:`WeightQuantConfig` to a latent weight (identity STE).

    learned_scale: parameter ``gain``, ``rows`` of them (per_row) or one, initialised to 1.
    """

    def __init__(self, cfg: WeightQuantConfig | None = None, *, rows: int | None = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else WeightQuantConfig()
        if not isinstance(self.cfg, WeightQuantConfig):
            raise BinbertError("weight quantizer config must be a WeightQuantConfig, "
                               f"got {type(cfg).__name__}")
        if self.cfg.learned_scale:
            if not self.cfg.per_row:
                rows = None
            else:
                int_value(rows, f"learned_scale with per_row needs rows (a positive int), got {rows!r}", lo=1)
            self.gain = nn.Parameter(torch.ones(rows) if rows is not None else torch.ones(()))

    def _gain(self, w: torch.Tensor) -> torch.Tensor:
        """The gain shaped to broadcast against w's per-row (or per-matrix) scale."""
        if not self.cfg.per_row:
            return self.gain
        if w.shape[0] != self.gain.shape[0]:
            raise BinbertError(f"weight quantizer: weight has {w.shape[0]} rows, gain has {self.gain.shape[0]}")
        return self.gain.reshape(-1, *([1] * (w.dim() - 1)))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        m = self.cfg.method
        if m == "twn":
            return TWNSTE.apply(w, self.cfg.per_row)
        if m == "bwn":
            q = BWNSTE.apply(w, self.cfg.per_row, self.cfg.centered)
            return q * self._gain(w) if self.cfg.learned_scale else q
        return w

    @torch.no_grad()
    def codes(self, w: torch.Tensor):
        """(integer codes, scale) for export: twn -> {-1,0,1}, bwn -> bits {0,1}; fp -> (w, 1)."""
        m = self.cfg.method
        if m == "twn":
            return twn_codes(w, self.cfg.per_row)
        if m == "bwn":
            bits, alpha = bwn_codes(w, self.cfg.per_row, self.cfg.centered)
            return bits, alpha * self._gain(w) if self.cfg.learned_scale else alpha
        return w, torch.ones((), dtype=w.dtype, device=w.device)

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.cfg, f.name)!r}" for f in fields(self.cfg))


class ActQuantizer(nn.Module):
    """Applies an :class:`ActQuantConfig` to an activation tensor.

    uniform: parameter ``clip`` (step = clip / Qp); lsq: parameter ``step``. Both are set from
    the first batch seen (in train or eval mode) unless the ``initialized`` buffer is already
    true, e.g. after ``load_state_dict``. ``integer`` switches rounding to half up (§8).
    sign with ``threshold``: parameter ``beta`` (``features`` of them, over the last axis).
    """

    def __init__(self, cfg: ActQuantConfig | None = None, *, features: int | None = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else ActQuantConfig()
        if not isinstance(self.cfg, ActQuantConfig):
            raise BinbertError(f"act quantizer config must be an ActQuantConfig, got {type(cfg).__name__}")
        self.integer = self.cfg.integer
        if self.cfg.method == "uniform":
            self.clip = nn.Parameter(torch.tensor(1.0))
        elif self.cfg.method == "lsq":
            self.step = nn.Parameter(torch.tensor(1.0))
        elif self.cfg.threshold:
            int_value(features, f"act threshold=true needs features (a positive int), got {features!r}", lo=1)
            self.beta = nn.Parameter(torch.zeros(features))
        if self.learned:
            self.register_buffer("initialized", torch.tensor(False))

    @property
    def learned(self) -> bool:
        return self.cfg.method in ("uniform", "lsq")

    @property
    def rounding(self) -> str:
        return "half_up" if self.integer else "half_even"

    @property
    def bits(self) -> int | None:
        return self.cfg.out_bits

    @property
    def scale(self) -> torch.Tensor | None:
        """Real value of one code step (None for fp / sign)."""
        if self.cfg.method == "lsq":
            return self.step
        if self.cfg.method == "uniform":
            return uniform_step(self.clip, self.cfg.bits)
        return None

    @torch.no_grad()
    def _init_from(self, x: torch.Tensor) -> None:
        cfg = self.cfg
        if cfg.method == "uniform":
            value = cfg.init if cfg.init is not None else x.detach().abs().max().item()
            self.clip.fill_(max(value, torch.finfo(self.clip.dtype).tiny))
        else:
            qp = qrange(cfg.bits)[1]
            value = cfg.init if cfg.init is not None else 2 * x.detach().abs().mean().item() / math.sqrt(qp)
            self.step.fill_(max(value, torch.finfo(self.step.dtype).tiny))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.cfg.method
        if m == "fp":
            return x
        if m == "sign":
            return SignSTE.apply(self._shifted(x))
        if not bool(self.initialized):
            self._init_from(x)
        if m == "lsq":
            return LSQSTE.apply(x, self.step, self.cfg.bits, self.rounding)
        return UniformSTE.apply(x, self.clip, self.cfg.bits, self.rounding)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Hardware codes of x as int32: A-bit two's complement values, or sign bits {0,1}."""
        m = self.cfg.method
        if m == "sign":
            return sign_codes(self._shifted(x)).to(torch.int32)
        if m == "fp":
            raise BinbertError("act method='fp' has no integer codes")
        if not bool(self.initialized):
            raise BinbertError("activation quantizer not initialized: run a batch through the model first")
        if m == "lsq":
            return lsq_codes(x, self.step, self.cfg.bits, self.rounding).to(torch.int32)
        return uniform_codes(x, self.clip, self.cfg.bits, self.rounding).to(torch.int32)

    def _shifted(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.threshold:
            return x
        if x.shape[-1] != self.beta.shape[0]:
            raise BinbertError(f"act quantizer: input has {x.shape[-1]} features, beta has {self.beta.shape[0]}")
        return x - self.beta

    def extra_repr(self) -> str:
        extra = f", threshold={self.beta.shape[0]}" if self.cfg.threshold else ""
        return f"method={self.cfg.method!r}, bits={self.bits}, integer={self.integer}{extra}"


class QuantLinear(nn.Linear):
    """nn.Linear whose input and weight are quantized: F.linear(act_quant(x), weight_quant(W), b).

    The bias stays full precision (it becomes the requantizer's B, §8).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 wcfg: WeightQuantConfig | None = None, acfg: ActQuantConfig | None = None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        like = dict(device=self.weight.device, dtype=self.weight.dtype)  # learned gains / thresholds
        self.weight_quant = WeightQuantizer(wcfg, rows=out_features).to(**like)
        self.act_quant = ActQuantizer(acfg, features=in_features).to(**like)

    @classmethod
    def from_linear(cls, linear: nn.Linear, wcfg: WeightQuantConfig | None = None,
                    acfg: ActQuantConfig | None = None,
                    act_quant: ActQuantizer | None = None) -> "QuantLinear":
        """Wrap ``linear`` sharing its weight and bias Parameters (no copy).

        ``act_quant`` passes an existing quantizer, registered elsewhere, to share (Q, K and V
        read one code vector); see :func:`share_act_quant`.
        """
        if not isinstance(linear, nn.Linear):
            raise BinbertError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                wcfg=wcfg, acfg=acfg, device="meta")
        q.weight = linear.weight
        q.bias = linear.bias
        q.weight_quant = WeightQuantizer(wcfg, rows=linear.out_features).to(
            device=linear.weight.device, dtype=linear.weight.dtype)
        if act_quant is not None:
            share_act_quant(q, act_quant)
        else:
            q.act_quant = ActQuantizer(acfg, features=linear.in_features).to(
                device=linear.weight.device, dtype=linear.weight.dtype)
        return q

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant(self.weight)

    def weight_terms(self) -> list[tuple[nn.Parameter, WeightQuantizer]]:
        """(latent weight, its quantizer) of each stored weight matrix: one here, two in a split
        layer (sw.split). Costing and export read every weight layer through this."""
        return [(self.weight, self.weight_quant)]

    def bias_terms(self) -> list[nn.Parameter]:
        """The stored biases (their sum is the layer's bias): one, or none."""
        return [] if self.bias is None else [self.bias]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.weight_quant(self.weight), self.bias)

    def extra_repr(self) -> str:
        shared = " (shared)" if act_quant_is_shared(self) else ""
        return (super().extra_repr() + f", weight={self.weight_quant.cfg.method}, "
                f"act={self.act_quant.cfg.method}{shared}")


def share_act_quant(layer: nn.Module, quantizer: ActQuantizer) -> None:
    """Point ``layer.act_quant`` at a quantizer that another module owns, without registering it
    as a child: the step exists once in state_dict, so save_pretrained / safetensors (which
    refuse shared tensors) work, and .to() / .train() reach it through its owner."""
    if not isinstance(quantizer, ActQuantizer):
        raise BinbertError(f"act_quant must be an ActQuantizer, got {type(quantizer).__name__}")
    layer._modules.pop("act_quant", None)
    object.__setattr__(layer, "act_quant", quantizer)


def act_quant_is_shared(layer: nn.Module) -> bool:
    """True when ``layer.act_quant`` is borrowed (see :func:`share_act_quant`)."""
    return "act_quant" in vars(layer) and "act_quant" not in layer._modules


class QuantEmbedding(nn.Embedding):
    """nn.Embedding with a quantized table (weights only; no activation quantizer).

    Per-row quantization depends on one row only, so the looked-up rows are quantized after
    the gather: the same values as quantizing the whole table, for a fraction of the work.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None,
                 wcfg: WeightQuantConfig | None = None, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.weight_quant = WeightQuantizer(wcfg)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, wcfg: WeightQuantConfig | None = None) -> "QuantEmbedding":
        if not isinstance(emb, nn.Embedding):
            raise BinbertError(f"from_embedding needs an nn.Embedding, got {type(emb).__name__}")
        q = cls(emb.num_embeddings, emb.embedding_dim, padding_idx=emb.padding_idx, wcfg=wcfg, device="meta")
        q.weight = emb.weight
        for attr in ("max_norm", "norm_type", "scale_grad_by_freq", "sparse"):
            setattr(q, attr, getattr(emb, attr))
        return q

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant(self.weight)

    def weight_terms(self) -> list[tuple[nn.Parameter, WeightQuantizer]]:
        """(latent table, its quantizer): one here, two in a split embedding (sw.split)."""
        return [(self.weight, self.weight_quant)]

    def bias_terms(self) -> list[nn.Parameter]:
        return []  # a table has no bias

    def _lookup(self, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.weight_quant.cfg.per_row and self.weight_quant.cfg.method != "fp":
            rows = self._lookup(ids, self.weight)
            flat = rows.reshape(-1, rows.shape[-1])
            return self.weight_quant(flat).reshape(rows.shape)
        return self._lookup(ids, self.weight_quant(self.weight))

    def extra_repr(self) -> str:
        cfg = self.weight_quant.cfg
        return super().extra_repr() + f", weight={cfg.method}, per_row={cfg.per_row}"
