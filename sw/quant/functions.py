"""Pure quantizers on tensors: no autograd tricks, no state (the first of sw.quant's layers).

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

import torch

from hw.errors import BinbertError
from hw.validate import int_value

MIN_ACT_BITS, MAX_ACT_BITS = 2, 8
ROUNDINGS = ("half_even", "half_up")
TWN_THRESHOLD = 0.7  # TWN (Li et al. 2016): Delta = 0.7 * mean|w|



def check_bits(name: str, bits) -> int:
    """Bits of a multi-bit activation quantizer."""
    int_value(bits, f"{name}={bits!r} must be an integer")
    if not MIN_ACT_BITS <= bits <= MAX_ACT_BITS:
        raise BinbertError(f"{name}={bits} out of range: multi-bit activations need "
                           f"{MIN_ACT_BITS}..{MAX_ACT_BITS} bits")
    return bits


def qrange(bits: int) -> tuple[int, int]:
    """(Qn, Qp) of a signed ``bits``-bit code: codes lie in [-Qn, Qp]."""
    check_bits("bits", bits)
    return 1 << (bits - 1), (1 << (bits - 1)) - 1


def row_dims(w: torch.Tensor, per_row: bool):
    """Reduction dims: all of them (per matrix) or all but the first (per row)."""
    if per_row:
        if w.dim() < 2:
            raise BinbertError(f"per_row quantization needs a matrix, got shape {tuple(w.shape)}")
        return tuple(range(1, w.dim()))
    return tuple(range(w.dim()))


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
    dims = row_dims(w, per_row)
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
    return w.abs().mean(dim=row_dims(w, per_row), keepdim=per_row)


def bwn_center(w: torch.Tensor) -> torch.Tensor:
    """BiBERT's row centring: subtract each row's mean before taking the sign."""
    return w - w.mean(dim=row_dims(w, True), keepdim=True)


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


def round_by(v: torch.Tensor, rounding: str) -> torch.Tensor:
    """v rounded to integers by ``rounding``: "half_even" (torch's) or "half_up" (the contract's)."""
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
    return round_by(x / step, rounding).clamp(-qn, qp)


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
    return round_by(x / s, rounding).clamp(-qp, qp)


def uniform_quantize(x: torch.Tensor, clip, bits: int, rounding: str = "half_even") -> torch.Tensor:
    """TernaryBERT-style symmetric uniform quantizer with clip value c (codes * c / Qp)."""
    return uniform_codes(x, clip, bits, rounding) * uniform_step(clip, bits)

