"""DynaBERT-style width reduction of a Hugging Face BERT (the BinaryBERT backbone, width 0.5).

Importance follows DynaBERT (Hou et al. 2020), which follows Michel et al. 2019: a mask of ones
multiplies each attention head's context output / each FFN neuron, and the importance of a unit
is |dL/dmask| summed over a few batches of task data, L being the fine-tuned model's own loss.

transformers 5.x dropped ``prune_heads`` and the ``head_mask`` argument, so the masks are applied
with forward hooks and the shrinking slices the Linear layers directly.

Batches are dicts of tensors that ``model(**batch)`` accepts and that carry ``labels`` (so the
output has ``.loss``), e.g. ``{"input_ids", "attention_mask", "token_type_ids", "labels"}``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from hw.errors import BinbertError

Batch = Mapping[str, torch.Tensor]


def _layers(model: nn.Module) -> list[nn.Module]:
    base = getattr(model, "bert", model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise BinbertError(f"prune: model {type(model).__name__} has no BERT encoder.layer list")
    return list(encoder.layer)


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    if "labels" not in batch:
        raise BinbertError("prune: importance batches need a 'labels' tensor (the task loss is the signal)")
    out = model(**batch)
    loss = getattr(out, "loss", None)
    if loss is None:
        raise BinbertError(f"prune: {type(model).__name__} returned no loss for a batch with labels")
    return loss


def _accumulate(model: nn.Module, batches: Iterable[Batch], masks: list[torch.Tensor],
                install) -> list[torch.Tensor]:
    """Sum over batches of |dL/dmask|; ``install(mask_list)`` returns the hook handles."""
    totals = [torch.zeros_like(m) for m in masks]
    was_training = model.training
    # eval(): dropout off, so the importance is that of the deterministic fine-tuned model.
    model.eval()
    # Only the masks need gradients; freezing the weights avoids their (large) grad buffers.
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved_flags:
        p.requires_grad_(False)
    handles = install(masks)
    seen = 0
    try:
        for batch in batches:
            for m in masks:
                m.grad = None
            # Fresh gradients per batch (Michel et al.); DynaBERT's script never zeroes them,
            # which makes later batches add |cumulative grad| -- an accident, not the method.
            grads = torch.autograd.grad(_loss(model, batch), masks, allow_unused=True)
            for total, g in zip(totals, grads):
                if g is not None:
                    total += g.abs()
            seen += 1
    finally:
        for h in handles:
            h.remove()
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        model.train(was_training)
    if seen == 0:
        raise BinbertError("prune: importance needs at least one batch (got an empty iterable)")
    return totals


def _head_hooks(selves: list[nn.Module], mask: torch.Tensor) -> list:
    handles = []
    for i, s in enumerate(selves):
        def hook(module, args, output, i=i):
            ctx, weights = output
            # ctx is [..., heads*head_size]; scaling head h's slice == Michel's head mask
            # (the context of head h is linear in its attention probabilities).
            shape = ctx.shape
            ctx = ctx.view(*shape[:-1], module.num_attention_heads, module.attention_head_size)
            ctx = ctx * mask[i].to(ctx.dtype)[:, None]
            return ctx.view(shape), weights
        handles.append(s.register_forward_hook(hook))
    return handles


def _neuron_hooks(layers: list[nn.Module], pre: list[torch.Tensor], post: list[torch.Tensor]) -> list:
    handles = []
    for layer, m_pre, m_post in zip(layers, pre, post):
        handles.append(layer.intermediate.dense.register_forward_hook(
            lambda mod, a, out, m=m_pre: out * m.to(out.dtype)))
        handles.append(layer.intermediate.register_forward_hook(
            lambda mod, a, out, m=m_post: out * m.to(out.dtype)))
    return handles


def importance(model: nn.Module, batches: Iterable[Batch]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Head and FFN-neuron importance from one pass over ``batches`` (see the two functions below)."""
    layers = _layers(model)
    selves = [layer.attention.self for layer in layers]
    n_heads = {s.num_attention_heads for s in selves}
    if len(n_heads) != 1:
        raise BinbertError(f"prune: layers have different head counts {sorted(n_heads)}; importance needs one")
    dev = next(model.parameters()).device
    n = len(layers)
    head_mask = torch.ones(n, n_heads.pop(), device=dev, requires_grad=True)
    pre = [torch.ones(l.intermediate.dense.out_features, device=dev, requires_grad=True) for l in layers]
    post = [torch.ones(l.intermediate.dense.out_features, device=dev, requires_grad=True) for l in layers]

    def install(masks):
        return _head_hooks(selves, masks[0]) + _neuron_hooks(layers, masks[1:n + 1], masks[n + 1:])

    totals = _accumulate(model, batches, [head_mask] + pre + post, install)
    neurons = [(totals[1 + i] + totals[1 + n + i]).detach() for i in range(n)]
    return totals[0].detach(), neurons


def head_importance(model: nn.Module, batches: Iterable[Batch]) -> torch.Tensor:
    """[num_layers, num_heads] tensor: sum over batches of |dL/d head_mask|."""
    return importance(model, batches)[0]


def neuron_importance(model: nn.Module, batches: Iterable[Batch]) -> list[torch.Tensor]:
    """Per layer, a [intermediate_size] tensor of FFN-neuron importance.

    DynaBERT's score is |sum(w1*dw1) + b1*db1| + |sum(w2*dw2)| per neuron; the first term is
    exactly |dL/dm| for a mask m on intermediate.dense's output (pre-activation), the second
    |dL/dm'| for a mask on the activation that feeds output.dense. Both masks are used here.
    """
    return importance(model, batches)[1]


def _check_width(width: float) -> float:
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise BinbertError(f"prune: width must be a number in (0, 1], got {width!r}") from None
    if not (0.0 < w <= 1.0):
        raise BinbertError(f"prune: width must be in (0, 1], got {width!r}")
    return w


def _n_keep(total: int, width: float) -> int:
    # DynaBERT keeps int(width * n) units; at least one so the layer still exists.
    return max(1, int(round(width * total)))


def _slice_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """Copy of ``layer`` keeping ``index`` along dim 0 (outputs) or 1 (inputs); dtype/device kept."""
    index = index.to(layer.weight.device)
    w = layer.weight.detach().index_select(dim, index).clone()
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach()[index] if dim == 0 else layer.bias.detach())
    return new


def _require_linear(module: nn.Module, name: str) -> None:
    if type(module) is not nn.Linear:
        raise BinbertError(f"prune: {name} is {type(module).__name__}, not nn.Linear; "
                           "prune the full-precision model before quantize_bert")


def _check_prunable(layers: list[nn.Module]) -> None:
    for i, layer in enumerate(layers):
        for name in ("query", "key", "value"):
            _require_linear(getattr(layer.attention.self, name), f"layer {i} attention.self.{name}")
        _require_linear(layer.attention.output.dense, f"layer {i} attention.output.dense")
        _require_linear(layer.intermediate.dense, f"layer {i} intermediate.dense")
        _require_linear(layer.output.dense, f"layer {i} output.dense")


def keep_units(model: nn.Module, heads: list[torch.Tensor], neurons: list[torch.Tensor]) -> nn.Module:
    """Physically keep, per layer, the listed head indices and FFN-neuron indices (in place)."""
    layers = _layers(model)
    if len(heads) != len(layers) or len(neurons) != len(layers):
        raise BinbertError(f"prune: got {len(heads)} head / {len(neurons)} neuron index lists "
                           f"for {len(layers)} layers")
    _check_prunable(layers)
    for i, (layer, h_idx, n_idx) in enumerate(zip(layers, heads, neurons)):
        s = layer.attention.self
        h_idx = torch.sort(torch.as_tensor(h_idx, dtype=torch.long)).values
        n_idx = torch.sort(torch.as_tensor(n_idx, dtype=torch.long)).values
        if h_idx.numel() == 0 or n_idx.numel() == 0:
            raise BinbertError(f"prune: layer {i} would keep no heads or no FFN neurons")
        if h_idx.max() >= s.num_attention_heads or n_idx.max() >= layer.intermediate.dense.out_features:
            raise BinbertError(f"prune: layer {i} head/neuron index out of range")
        d = s.attention_head_size
        rows = (h_idx[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        s.query = _slice_linear(s.query, rows, 0)
        s.key = _slice_linear(s.key, rows, 0)
        s.value = _slice_linear(s.value, rows, 0)
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, rows, 1)
        s.num_attention_heads = int(h_idx.numel())
        s.all_head_size = s.num_attention_heads * d
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, n_idx, 0)
        layer.output.dense = _slice_linear(layer.output.dense, n_idx, 1)
    return model


def prune_to_width(model: nn.Module, width: float = 0.5, batches: Iterable[Batch] | None = None) -> nn.Module:
    """Keep the most important ``width`` fraction of heads and of FFN neurons in every layer.

    width 1.0 returns the model unchanged (no batches needed).
    """
    w = _check_width(width)
    layers = _layers(model)
    if w == 1.0:
        return model
    if batches is None:
        raise BinbertError("prune: width < 1 needs task batches to measure importance")
    _check_prunable(layers)  # before the (costly) importance pass
    h_imp, n_imp = importance(model, batches)
    heads = [torch.topk(h_imp[i], _n_keep(h_imp.shape[1], w)).indices.cpu() for i in range(len(layers))]
    neurons = [torch.topk(n, _n_keep(n.numel(), w)).indices.cpu() for n in n_imp]
    keep_units(model, heads, neurons)
    _record_width(model, w)
    return model


def _record_width(model: nn.Module, width: float) -> None:
    # The config keeps the original sizes (HF derives head_size = hidden/heads, so a smaller
    # num_attention_heads would change the head size on reload); the width goes in its own field.
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.binbert_width = width


def resize_to_width(model: nn.Module, width: float | None = None) -> nn.Module:
    """Shrink a freshly built model (original sizes) to the shapes prune_to_width(width) gives,
    keeping the first units, so a pruned checkpoint's state_dict loads into it.

    width defaults to ``model.config.binbert_width`` (recorded by prune_to_width; 1.0 if absent).
    """
    if width is None:
        width = getattr(getattr(model, "config", None), "binbert_width", 1.0)
    w = _check_width(width)
    layers = _layers(model)
    if w == 1.0:
        return model
    heads = [torch.arange(_n_keep(l.attention.self.num_attention_heads, w)) for l in layers]
    neurons = [torch.arange(_n_keep(l.intermediate.dense.out_features, w)) for l in layers]
    keep_units(model, heads, neurons)
    _record_width(model, w)
    return model
