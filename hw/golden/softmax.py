"""§13 integer softmax and §14 Heaviside (Bi-Attention): the golden ops.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith
from hw.golden.arith import (INT_BITS, signed_bits, signed_range)
from hw.validate import codes_in, int_array, int_field, set_field


# §13: integer softmax, §14: Heaviside (Bi-Attention)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Softmax:
    """Integer softmax over the valid keys of one row of scores (§13).

    m = max valid score;  δ = m - s;  t = min((δ·mult + 2^(shift-1)) >> shift, t_max)
    E = table[t mod 2^frac_bits] >> (t >> frac_bits)      (0 for masked keys)
    Z = Σ E;  R = recip_num // Z;  p = min((E·R + 2^(recip_shift-1)) >> recip_shift, hi)
    table[f] = floor(2^exp_bits · 2^(-f / 2^frac_bits) + 1/2);  t_max = (exp_bits+1)·2^frac_bits.
    """

    score_bits: int
    mult: int
    shift: int
    frac_bits: int
    exp_bits: int
    table: np.ndarray
    recip_num: int
    recip_shift: int
    out_bits: int
    hi: int
    m_bits: int = 16

    def __post_init__(self):
        o = "Softmax"
        set_field(self, "score_bits", int_field(o, "score_bits", self.score_bits, 2, 40))
        set_field(self, "m_bits", int_field(o, "m_bits", self.m_bits, 1, 32))
        set_field(self, "mult", int_field(o, "mult", self.mult, 0, (1 << self.m_bits) - 1))
        set_field(self, "shift", int_field(o, "shift", self.shift, 1, 62))
        set_field(self, "frac_bits", int_field(o, "frac_bits", self.frac_bits, 1, 12))
        set_field(self, "exp_bits", int_field(o, "exp_bits", self.exp_bits, 2, 24))
        want = exp2_table(self.frac_bits, self.exp_bits)
        set_field(self, "table", int_array(o, "table", self.table, ndim=1))
        if self.table.shape != want.shape or not np.array_equal(self.table, want):
            raise BinbertError(f"{o}.table: not the 2^-f table of frac_bits={self.frac_bits}, "
                               f"exp_bits={self.exp_bits} (§13)")
        set_field(self, "out_bits", int_field(o, "out_bits", self.out_bits, 2, arith.MAX_ACT_BITS))
        set_field(self, "hi", int_field(o, "hi", self.hi, 1, signed_range(self.out_bits)[1]))
        set_field(self, "recip_shift", int_field(o, "recip_shift", self.recip_shift, 1, 62))
        set_field(self, "recip_num", int_field(o, "recip_num", self.recip_num, 1, (1 << 48) - 1))
        if (self.score_bits + 1) + self.m_bits > INT_BITS:
            raise BinbertError(f"{o}: δ·mult overflows int64")
        if self.recip_bits + self.exp_bits + 1 > INT_BITS:
            raise BinbertError(f"{o}: E·R overflows int64")

    @property
    def t_max(self) -> int:
        return (self.exp_bits + 1) << self.frac_bits

    @property
    def recip_bits(self) -> int:
        """Unsigned width of R = recip_num // Z (Z >= 2^exp_bits: the max key has E = 2^exp_bits)."""
        return (self.recip_num >> self.exp_bits).bit_length()

    def compute(self, scores, valid) -> np.ndarray:
        scores = codes_in("Softmax", "scores", scores, *signed_range(self.score_bits))
        valid = np.broadcast_to(np.asarray(valid, dtype=bool), scores.shape)
        lowest = signed_range(self.score_bits)[0]
        m = np.where(valid, scores, lowest).max(axis=-1, keepdims=True)
        delta = np.where(valid, m - scores, 0)
        t = np.minimum((delta * self.mult + (1 << (self.shift - 1))) >> self.shift, self.t_max)
        e = self.table[t & ((1 << self.frac_bits) - 1)] >> (t >> self.frac_bits)
        e = np.where(valid, e, 0)
        z = np.maximum(e.sum(axis=-1, keepdims=True), 1)  # no valid key at all: every p is 0
        r = self.recip_num // z
        return np.minimum((e * r + (1 << (self.recip_shift - 1))) >> self.recip_shift, self.hi)


def exp2_table(frac_bits: int, exp_bits: int) -> np.ndarray:
    """table[f] = floor(2^exp_bits · 2^(-f/2^frac_bits) + 1/2), f = 0 .. 2^frac_bits - 1 (§13).

    Computed with integer-exact float64 (every entry < 2^25, far from a tie), so the golden
    model, the exporter and the RTL generator all get the same ROM.
    """
    f = np.arange(1 << frac_bits, dtype=np.float64)
    return np.floor(np.exp2(exp_bits - f / (1 << frac_bits)) + 0.5).astype(np.int64)


def shifted_score_bits(score_max: int, thresholds=None) -> int:
    """Signed width of S − T_h for scores in [−score_max, score_max] and per-head thresholds T
    (None: T = 0), what a Heaviside unit reads (§14)."""
    if thresholds is None:
        return signed_bits(-score_max, score_max)
    t = np.asarray(thresholds)
    return signed_bits(-score_max - int(t.max()), score_max - int(t.min()))


@dataclass(frozen=True, eq=False)
class Heaviside:
    """BiBERT Bi-Attention probabilities (§14): p = 1 if score > 0 and the key is valid, else 0."""

    score_bits: int
    hi: int = 1
    out_bits: int = 1

    def __post_init__(self):
        set_field(self, "score_bits", int_field("Heaviside", "score_bits", self.score_bits, 2, 40))
        if self.hi != 1 or self.out_bits != 1:
            raise BinbertError("Heaviside: probabilities are single bits (hi=1, out_bits=1)")

    def compute(self, scores, valid) -> np.ndarray:
        scores = codes_in("Heaviside", "scores", scores, *signed_range(self.score_bits))
        return ((scores > 0) & np.asarray(valid, dtype=bool)).astype(np.int64)
