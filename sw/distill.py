"""Distillation losses: BinaryBERT/TernaryBERT two-stage and BiBERT direction matching.

Inputs are *traces*: what one forward pass recorded (see ``sw.qbert.record``), normalised by
``trace_from_record`` to::

    {"embeddings": (B, T, H),
     "layers": [{"scores": (B, h, T, T), "q"|"k"|"v": (B, T, h*d), "attn_out": (B, T, H),
                 "ffn_out": (B, T, H)}, ...],
     "logits": (B, C)}

plus the batch's ``attention_mask`` (B, T): padded tokens never contribute to any term.

Terms (weights in ``DistillConfig``):

* BinaryBERT / TernaryBERT stage 1, *intermediate*: ``emb`` MSE of embedding outputs, ``scores``
  MSE of the pre-softmax attention scores per layer, ``mha`` MSE of each layer's attention block
  output, ``ffn`` MSE of each layer's FFN block output (the layer's hidden state).
  Stage 2, *prediction*: ``pred`` soft cross-entropy of logits at ``temperature`` (MSE of the
  scores for the regression task STS-B).
* BiBERT: ``dmd`` sum over layers and F in {Q, K, V} of ||P_F - P_F^T||_F with
  P_F = F F^T / ||F F^T||_F per head (a T x T token-similarity pattern), plus ``hidden`` MSE of
  every hidden state (embeddings and each layer output) and ``pred``.

Width (a student pruned to 0.5x against a full-width teacher): the hidden size H is never
pruned, so ``emb``, ``mha``, ``ffn``, ``hidden`` and ``pred`` compare equal shapes directly.
Heads and FFN neurons are pruned. With a ``head_map`` (per layer, the teacher head each
student head was pruned from; sw.train records it when it prunes) ``scores`` and ``dmd``
compare every student head with its own teacher head. Without one, when the head counts
differ, ``scores`` compares the head-averaged scores (B, T, T) and ``dmd`` builds one pattern
from all heads concatenated (F of shape (B, T, h*d): F F^T is T x T whatever h*d is). FFN
intermediate activations are never compared, so the intermediate width needs no handling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hw.errors import BinbertError

INTERMEDIATE_TERMS = ("emb", "scores", "mha", "ffn")
PREDICTION_TERMS = ("pred",)
DMD_TERMS = ("dmd", "hidden", "pred")


def _tokens(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.bool)


def masked_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid tokens of (B, T, H) tensors."""
    if s.shape != t.shape:
        raise BinbertError(f"distill: student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                           f"shapes differ")
    m = _tokens(mask)
    return F.mse_loss(s[m], t[m])


def scores_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
               heads: list[int] | None = None) -> torch.Tensor:
    """MSE of attention scores (B, h, T, T) over valid (query, key) pairs.

    ``heads``: the teacher head of each student head (pruned student); without it, different
    head counts compare the head-averaged scores.
    """
    if heads is not None:
        t = t[:, list(heads)]
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    m = _tokens(mask)
    pair = (m[:, None, :, None] & m[:, None, None, :]).expand_as(s)
    # Masked positions carry -inf/-1e4 style biases in some implementations: never read them.
    return F.mse_loss(s[pair], t[pair])


def soft_cross_entropy(s_logits: torch.Tensor, t_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy -sum softmax(t/T) log softmax(s/T), mean over the batch.

    A single output (regression) uses MSE of the scores instead.
    """
    if s_logits.shape != t_logits.shape:
        raise BinbertError(f"distill: student logits {tuple(s_logits.shape)} and teacher "
                           f"logits {tuple(t_logits.shape)} differ")
    if s_logits.shape[-1] == 1:
        return F.mse_loss(s_logits, t_logits)
    p_t = F.softmax(t_logits / temperature, dim=-1)
    return -(p_t * F.log_softmax(s_logits / temperature, dim=-1)).sum(-1).mean()


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, h*d) -> (B, h, T, d); a 4-D (B, h, T, d) input passes through."""
    if x.dim() == 4:
        return x
    b, t, hd = x.shape
    return x.view(b, t, heads, hd // heads).transpose(1, 2)


def direction_pattern(f: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """P = F F^T / ||F F^T||_F per (batch, head) of F (B, h, T, d); padded tokens are zeroed."""
    f = f * mask[:, None, :, None].to(f.dtype)
    g = f @ f.transpose(-1, -2)
    norm = g.flatten(-2).norm(dim=-1).clamp_min(eps)
    return g / norm[..., None, None]


def dmd_term(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, s_heads: int,
             t_heads: int, heads: list[int] | None = None) -> torch.Tensor:
    """||P_s - P_t||_F averaged over batch and heads, for one of Q, K, V of one layer.

    ``heads``: the teacher head of each student head (pruned student).
    """
    if heads is not None:
        ps = direction_pattern(_heads(s, s_heads), mask)
        pt = direction_pattern(_heads(t, t_heads)[:, list(heads)], mask)
    elif s_heads == t_heads:
        ps = direction_pattern(_heads(s, s_heads), mask)
        pt = direction_pattern(_heads(t, t_heads), mask)
    else:  # pruned student: all heads as one feature vector per token
        ps = direction_pattern(_flat(s)[:, None], mask)
        pt = direction_pattern(_flat(t)[:, None], mask)
    return (ps - pt).flatten(-2).norm(dim=-1).mean()


def _flat(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:  # (B, h, T, d) -> (B, T, h*d)
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)
    return x


def _check_depth(s: dict, t: dict) -> None:
    if len(s["layers"]) != len(t["layers"]):
        raise BinbertError(f"distill: student has {len(s['layers'])} layers, teacher "
                           f"{len(t['layers'])}: layer-wise distillation needs equal depth")


def _num_heads(layer: dict) -> int:
    return int(layer["scores"].shape[1])


def _maps(s: dict, head_map) -> list:
    if head_map is None:
        return [None] * len(s["layers"])
    if len(head_map) != len(s["layers"]):
        raise BinbertError(f"distill: head_map has {len(head_map)} layers, the student "
                           f"{len(s['layers'])}")
    for layer, (a, m) in enumerate(zip(s["layers"], head_map)):
        if len(m) != _num_heads(a):
            raise BinbertError(f"distill: head_map[{layer}] names {len(m)} heads, the student "
                               f"layer has {_num_heads(a)}")
    return list(head_map)


def intermediate_terms(s: dict, t: dict, mask: torch.Tensor,
                       head_map=None) -> dict[str, torch.Tensor]:
    _check_depth(s, t)
    maps = _maps(s, head_map)
    out = {"emb": masked_mse(s["embeddings"], t["embeddings"], mask)}
    out["scores"] = sum(scores_mse(a["scores"], b["scores"], mask, m)
                        for a, b, m in zip(s["layers"], t["layers"], maps))
    out["mha"] = sum(masked_mse(a["attn_out"], b["attn_out"], mask)
                     for a, b in zip(s["layers"], t["layers"]))
    out["ffn"] = sum(masked_mse(a["ffn_out"], b["ffn_out"], mask)
                     for a, b in zip(s["layers"], t["layers"]))
    return out


def dmd_terms(s: dict, t: dict, mask: torch.Tensor, head_map=None) -> dict[str, torch.Tensor]:
    _check_depth(s, t)
    dmd = 0.0
    for a, b, m in zip(s["layers"], t["layers"], _maps(s, head_map)):
        ha, hb = _num_heads(a), _num_heads(b)
        for name in ("q", "k", "v"):
            dmd = dmd + dmd_term(a[name], b[name], mask, ha, hb, m)
    hidden = masked_mse(s["embeddings"], t["embeddings"], mask)
    for a, b in zip(s["layers"], t["layers"]):
        hidden = hidden + masked_mse(a["ffn_out"], b["ffn_out"], mask)
    return {"dmd": dmd, "hidden": hidden}


def distill_loss(mode: str, s: dict, t: dict, mask: torch.Tensor, weights,
                 temperature: float | None = None,
                 head_map=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss of one distillation ``mode`` and its unweighted terms (for logging).

    ``mode``: ``intermediate`` (BinaryBERT stage 1), ``prediction`` (stage 2), ``joint``
    (both at once, TernaryBERT style) or ``dmd`` (BiBERT). ``weights`` is a DistillConfig.
    ``head_map``: per layer, the teacher head index of each student head (pruned student).
    """
    temperature = weights.temperature if temperature is None else temperature
    terms: dict[str, torch.Tensor] = {}
    if mode in ("intermediate", "joint"):
        terms.update(intermediate_terms(s, t, mask, head_map))
    if mode == "dmd":
        terms.update(dmd_terms(s, t, mask, head_map))
    if mode in ("prediction", "joint", "dmd"):
        terms["pred"] = soft_cross_entropy(s["logits"], t["logits"], temperature)
    if not terms:
        raise BinbertError(f"distill: unknown mode {mode!r} (intermediate, prediction, joint, "
                           f"dmd)")
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
