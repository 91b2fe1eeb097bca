"""Frozen, validated descriptions of how a weight matrix or an activation tensor is quantized."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hw.errors import BinbertError
from hw.validate import boolean, choice, int_value, is_number
from sw.quant.functions import check_bits

WEIGHT_METHODS = ("fp", "twn", "bwn")
ACT_METHODS = ("fp", "uniform", "lsq", "sign")


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
        choice("weight method", self.method, WEIGHT_METHODS)
        boolean("per_row", self.per_row)
        boolean("centered", self.centered)
        boolean("learned_scale", self.learned_scale)
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
        choice("act method", self.method, ACT_METHODS)
        if self.method in ("uniform", "lsq"):
            check_bits("act bits", self.bits)
        else:
            int_value(self.bits, f"act bits={self.bits!r} must be an integer")
        boolean("integer", self.integer)
        if self.init is not None and (not is_number(self.init) or not self.init > 0
                                      or not math.isfinite(self.init)):
            raise BinbertError(f"act init={self.init!r} must be a positive number or null")
        boolean("threshold", self.threshold)
        if self.threshold and self.method != "sign":
            raise BinbertError(f"act threshold=true applies to sign activations only, not method={self.method!r}")

    @property
    def out_bits(self) -> int | None:
        """Bits of the hardware code this quantizer produces (None: full precision)."""
        return {"fp": None, "sign": 1}.get(self.method, self.bits)



def config_dict(cfg) -> dict:
    """Plain dict of a config dataclass (for checkpoints and reports)."""
    return asdict(cfg)
