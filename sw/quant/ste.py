"""Straight-through estimators: the pure quantizers of :mod:`sw.quant.functions` forward,
the papers' surrogate gradients backward."""
from __future__ import annotations

import math

import torch

from sw.quant.functions import bwn_quantize, heaviside, qrange, round_by, sign, twn_quantize


class TWNSTE(torch.autograd.Function):
    """TWN forward, identity gradient to the latent weight (TernaryBERT)."""

    @staticmethod
    def forward(ctx, w, per_row: bool):
        return twn_quantize(w, per_row)

    @staticmethod
    def backward(ctx, g):
        return g, None


class BWNSTE(torch.autograd.Function):
    """BWN forward, identity gradient to the latent weight (BinaryBERT)."""

    @staticmethod
    def forward(ctx, w, per_row: bool, centered: bool):
        return bwn_quantize(w, per_row, centered)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


class _ClippedSTE(torch.autograd.Function):
    """The clipped straight-through gradient 1{|x| <= 1} of a binarizer whose forward saved x."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class SignSTE(_ClippedSTE):
    """sign(x) with the clipped straight-through gradient 1{|x| <= 1} (BiBERT, Bi-Real)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)


class HeavisideSTE(_ClippedSTE):
    """heaviside(x) = 1{x > 0} with the clipped straight-through gradient 1{|x| <= 1} (BiBERT)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return heaviside(x)


class LSQSTE(torch.autograd.Function):
    """Learned step size quantization (Esser et al. 2020).

    Gradients: to x, 1 inside the code range (-Qn <= x/s <= Qp), 0 outside; to the step,
    ``round(x/s) - x/s`` inside, ``-Qn`` below, ``Qp`` above, summed and multiplied by the
    grad scale ``1/sqrt(numel * Qp)``.
    """

    @staticmethod
    def forward(ctx, x, step, bits: int, rounding: str):
        qn, qp = qrange(bits)
        v = x / step
        codes = round_by(v, rounding).clamp(-qn, qp)
        ctx.save_for_backward(v, codes)
        ctx.bounds = (qn, qp)
        ctx.step_shape = step.shape
        return codes * step

    @staticmethod
    def backward(ctx, g):
        v, codes = ctx.saved_tensors
        qn, qp = ctx.bounds
        inside = (v >= -qn) & (v <= qp)
        gx = g * inside.to(g.dtype)
        # outside the range codes already holds -Qn / Qp, the derivative of the clamped value
        ds = torch.where(inside, codes - v, codes)
        gs = (g * ds).sum() / math.sqrt(v.numel() * qp)
        return gx, gs.reshape(ctx.step_shape), None, None


class UniformSTE(torch.autograd.Function):
    """Symmetric uniform quantizer with a learnable clip c (step s = c / Qp).

    Gradient to x: 1 inside [-c, c], 0 outside (TernaryBERT). Gradient to c: the
    straight-through derivative of the fake-quantized value, ``(round(x/s) - x/s) / Qp``
    inside and ``sign(x)`` outside (PACT's clip gradient, extended to the rounding error).
    """

    @staticmethod
    def forward(ctx, x, clip, bits: int, rounding: str):
        qp = qrange(bits)[1]
        s = clip / qp
        v = x / s
        codes = round_by(v, rounding).clamp(-qp, qp)
        ctx.save_for_backward(v, codes)
        ctx.qp = qp
        ctx.clip_shape = clip.shape
        return codes * s

    @staticmethod
    def backward(ctx, g):
        v, codes = ctx.saved_tensors
        qp = ctx.qp
        inside = v.abs() <= qp
        gx = g * inside.to(g.dtype)
        dc = torch.where(inside, (codes - v) / qp, codes / qp)  # outside codes / Qp = sign(x)
        return gx, (g * dc).sum().reshape(ctx.clip_shape), None, None

