"""Weight and activation quantizers for BinaryBERT / BiBERT.

Three layers, as in torchao / Brevitas:

1. pure functions on tensors (``twn_quantize``, ``bwn_quantize``, ``lsq_codes``, ``sign``, ...);
2. tiny ``torch.autograd.Function`` straight-through estimators built on them;
3. ``nn.Module`` quantizers built from frozen config dataclasses, and the ``QuantLinear`` /
   ``QuantEmbedding`` layers that use them.

Conventions shared with the hardware (docs/arithmetic.md):
  * ``sign(x) = +1 if x >= 0 else -1`` (so sign(0) = +1), for weights and activations (§1);
  * ``heaviside(x) = 1 if x > 0 else 0`` (so heaviside(0) = 0): BiBERT's ``bool`` attention,
    i.e. the bit of a strictly positive score;
  * A-bit activation codes are two's-complement integers in ``[-2^(A-1), 2^(A-1) - 1]`` (§3);
  * float training rounds half to even (``torch.round``); the integer mode rounds half up,
    ``floor(v + 1/2)``, which is what the requantizer computes (§7, §8).

Per-row statistics reduce over every axis but the first: for an ``nn.Linear`` weight
``(out, in)`` one scale per output row, for an embedding ``(vocab, hidden)`` one per token.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from hw.errors import BinbertError

WEIGHT_METHODS = ("fp", "twn", "bwn")
ACT_METHODS = ("fp", "uniform", "lsq", "sign")
ROUNDINGS = ("half_even", "half_up")
MIN_ACT_BITS, MAX_ACT_BITS = 2, 8
TWN_THRESHOLD = 0.7  # TWN (Li et al. 2016): Delta = 0.7 * mean|w|


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _check_choice(name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise BinbertError(f"{name}={value!r} unknown: choose one of {', '.join(choices)}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise BinbertError(f"{name}={value!r} must be true or false")


def _check_bits(name: str, bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise BinbertError(f"{name}={bits!r} must be an integer")
    if not MIN_ACT_BITS <= bits <= MAX_ACT_BITS:
        raise BinbertError(f"{name}={bits} out of range: multi-bit activations need "
                           f"{MIN_ACT_BITS}..{MAX_ACT_BITS} bits")
    return bits


def qrange(bits: int) -> tuple[int, int]:
    """(Qn, Qp) of a signed ``bits``-bit code: codes lie in [-Qn, Qp]."""
    _check_bits("bits", bits)
    return 1 << (bits - 1), (1 << (bits - 1)) - 1


def _row_dims(w: torch.Tensor, per_row: bool):
    """Reduction dims: all of them (per matrix) or all but the first (per row)."""
    if per_row:
        if w.dim() < 2:
            raise BinbertError(f"per_row quantization needs a matrix, got shape {tuple(w.shape)}")
        return tuple(range(1, w.dim()))
    return tuple(range(w.dim()))


# --------------------------------------------------------------------------------------------
# 1. pure functions
# --------------------------------------------------------------------------------------------

def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (sign(0) = +1, unlike torch.sign), same dtype as x."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


def sign_codes(x: torch.Tensor) -> torch.Tensor:
    """Hardware bits of :func:`sign`: 1 for +1 (x >= 0), 0 for -1 (docs/arithmetic.md §1)."""
    return (x >= 0).to(torch.uint8)


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """1 where x > 0, 0 elsewhere (heaviside(0) = 0), same dtype as x: BiBERT's bool()."""
    return (x > 0).to(x.dtype)


def twn_params(w: torch.Tensor, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN threshold and scale: Delta = 0.7 mean|w|, alpha = mean of |w| over I = {|w| >= Delta}.

    Per matrix both are 0-d; per row they have shape (rows, 1, ...) and broadcast against w.
    """
    dims = _row_dims(w, per_row)
    a = w.abs()
    delta = TWN_THRESHOLD * a.mean(dim=dims, keepdim=per_row)
    mask = a >= delta
    # |I| >= 1 always (max|w| >= mean|w| >= Delta); clamp only guards an empty tensor
    alpha = (a * mask).sum(dim=dims, keepdim=per_row) / mask.sum(dim=dims, keepdim=per_row).clamp_min(1)
    return delta, alpha


def twn_quantize(w: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """Ternary weights alpha * sign(w) on I = {|w| >= Delta}, 0 elsewhere."""
    delta, alpha = twn_params(w, per_row)
    return torch.where(w.abs() >= delta, alpha * sign(w), torch.zeros((), dtype=w.dtype, device=w.device))


def twn_codes(w: torch.Tensor, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in {-1, 0, +1} as int8, alpha): twn_quantize(w) == codes * alpha."""
    delta, alpha = twn_params(w, per_row)
    codes = torch.where(w.abs() >= delta, sign(w), torch.zeros((), dtype=w.dtype, device=w.device))
    return codes.to(torch.int8), alpha


def bwn_params(w: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """BWN scale alpha = mean|w| (per matrix: 0-d; per row: broadcastable column)."""
    return w.abs().mean(dim=_row_dims(w, per_row), keepdim=per_row)


def bwn_center(w: torch.Tensor) -> torch.Tensor:
    """BiBERT's row centring: subtract each row's mean before taking the sign."""
    return w - w.mean(dim=_row_dims(w, True), keepdim=True)


def bwn_quantize(w: torch.Tensor, per_row: bool = False, centered: bool = False) -> torch.Tensor:
    """Binary weights alpha * sign(w'), alpha = mean|w|, w' = w or its row-centred version.

    As in BiBERT, alpha is taken from the uncentred weights; centring only moves the sign
    threshold of each row to its mean so that every row is balanced between +1 and -1.
    """
    alpha = bwn_params(w, per_row)
    return alpha * sign(bwn_center(w) if centered else w)


def bwn_codes(w: torch.Tensor, per_row: bool = False, centered: bool = False):
    """(bits, alpha): bit 1 for +1, 0 for -1 (§1); bwn_quantize == (2*bits - 1) * alpha."""
    return sign_codes(bwn_center(w) if centered else w), bwn_params(w, per_row)


def _round(v: torch.Tensor, rounding: str) -> torch.Tensor:
    if rounding == "half_even":
        return torch.round(v)
    if rounding == "half_up":
        return torch.floor(v + 0.5)
    raise BinbertError(f"rounding={rounding!r} unknown: choose one of {', '.join(ROUNDINGS)}")


def lsq_codes(x: torch.Tensor, step, bits: int, rounding: str = "half_even") -> torch.Tensor:
    """LSQ integer codes clamp(round(x / step), -Qn, Qp), Qn = 2^(b-1), Qp = 2^(b-1) - 1.

    Returned as a float tensor of integer values (so autograd-free callers can multiply by
    the step); ``.to(torch.int32)`` gives the hardware codes. ``rounding="half_up"`` is the
    integer contract's rule (docs/arithmetic.md §7-§8), ``"half_even"`` torch's default.
    """
    qn, qp = qrange(bits)
    return _round(x / step, rounding).clamp(-qn, qp)


def lsq_quantize(x: torch.Tensor, step, bits: int, rounding: str = "half_even") -> torch.Tensor:
    """Fake-quantized LSQ value: codes * step."""
    return lsq_codes(x, step, bits, rounding) * step


def uniform_step(clip, bits: int):
    """Step of the symmetric uniform quantizer with clip value c: c / (2^(b-1) - 1)."""
    return clip / qrange(bits)[1]


def uniform_codes(x: torch.Tensor, clip, bits: int, rounding: str = "half_even") -> torch.Tensor:
    """Symmetric uniform codes round(clamp(x, -c, c) / s) in [-Qp, Qp], s = c / Qp."""
    qp = qrange(bits)[1]
    s = clip / qp
    return _round(x / s, rounding).clamp(-qp, qp)


def uniform_quantize(x: torch.Tensor, clip, bits: int, rounding: str = "half_even") -> torch.Tensor:
    """TernaryBERT-style symmetric uniform quantizer with clip value c (codes * c / Qp)."""
    return uniform_codes(x, clip, bits, rounding) * uniform_step(clip, bits)


# --------------------------------------------------------------------------------------------
# 2. straight-through estimators
# --------------------------------------------------------------------------------------------

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


class SignSTE(torch.autograd.Function):
    """sign(x) with the clipped straight-through gradient 1{|x| <= 1} (BiBERT, Bi-Real)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class HeavisideSTE(torch.autograd.Function):
    """heaviside(x) = 1{x > 0} with the clipped straight-through gradient 1{|x| <= 1} (BiBERT)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return heaviside(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


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
        codes = _round(v, rounding).clamp(-qn, qp)
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
        codes = _round(v, rounding).clamp(-qp, qp)
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


# --------------------------------------------------------------------------------------------
# 3. configs and modules
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightQuantConfig:
    """How one weight matrix is quantized.

    method: "fp" (no quantization), "twn" (ternary), "bwn" (binary).
    per_row: one scale per row (word embedding; BiBERT linears) instead of per matrix.
    centered: BiBERT's row-centred binarization (bwn only).
    learned_scale: bwn only: a learned gain g on the scale, w_q = g * mean|w| * sign(w), one per
          row (per_row) or per matrix, starting at 1 (XNOR-Net++'s learned scaling factors). The
          hardware sees only the product, the row's alpha (§6), so it costs nothing there.
    """

    method: str = "fp"
    per_row: bool = False
    centered: bool = False
    learned_scale: bool = False

    def __post_init__(self):
        _check_choice("weight method", self.method, WEIGHT_METHODS)
        _check_bool("per_row", self.per_row)
        _check_bool("centered", self.centered)
        _check_bool("learned_scale", self.learned_scale)
        if self.centered and self.method != "bwn":
            raise BinbertError(f"centered=true applies to binary weights only, not method={self.method!r}")
        if self.learned_scale and self.method != "bwn":
            raise BinbertError(f"learned_scale=true applies to binary weights only, not method={self.method!r}")


@dataclass(frozen=True)
class ActQuantConfig:
    """How one activation tensor is quantized.

    method: "fp", "uniform" (symmetric, learnable clip), "lsq" (learned step) or "sign" (1 bit).
    bits: 2..8 for uniform / lsq (ignored by fp and sign).
    integer: round half up instead of half to even (the integer-simulation path, §8).
    init: first-batch initial value of the clip (uniform) or step (lsq); None = data rule
          (uniform: max|x|; lsq: 2 mean|x| / sqrt(Qp), Esser et al.).
    threshold: sign only: a learned per-feature threshold beta, code = [x >= beta] (ReActNet's
          RSign); it starts at 0 (plain sign) and folds into the requantizer's per-row B (§7).
    """

    method: str = "fp"
    bits: int = 8
    integer: bool = False
    init: float | None = None
    threshold: bool = False

    def __post_init__(self):
        _check_choice("act method", self.method, ACT_METHODS)
        if self.method in ("uniform", "lsq"):
            _check_bits("act bits", self.bits)
        elif isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise BinbertError(f"act bits={self.bits!r} must be an integer")
        _check_bool("integer", self.integer)
        if self.init is not None and (isinstance(self.init, bool) or not isinstance(self.init, (int, float))
                                      or not self.init > 0 or not math.isfinite(self.init)):
            raise BinbertError(f"act init={self.init!r} must be a positive number or null")
        _check_bool("threshold", self.threshold)
        if self.threshold and self.method != "sign":
            raise BinbertError(f"act threshold=true applies to sign activations only, not method={self.method!r}")

    @property
    def out_bits(self) -> int | None:
        """Bits of the hardware code this quantizer produces (None: full precision)."""
        return {"fp": None, "sign": 1}.get(self.method, self.bits)


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
            elif isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
                raise BinbertError(f"learned_scale with per_row needs rows (a positive int), got {rows!r}")
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
            if isinstance(features, bool) or not isinstance(features, int) or features < 1:
                raise BinbertError(f"act threshold=true needs features (a positive int), got {features!r}")
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


def config_dict(cfg) -> dict:
    """Plain dict of a config dataclass (for checkpoints and reports)."""
    return asdict(cfg)
