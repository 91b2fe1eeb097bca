"""§7 requantizer and §12 ROM lookup after a requantizer (GELU, tanh): the golden ops.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith
from hw.golden.arith import (INT_BITS, MAX_OUT_BITS, act_range, max_abs, signed_bits, signed_range)
from hw.validate import codes_in, int_array, int_field, set_field


# §7 (generalised): requantizer
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Requant:
    """z = Σ_t acc_t·M_t[n] + B[n];  out = clamp((z + 2^(S-1)) >> S, lo, hi), or bit = [z >= 0].

    mult: (T, N) or (T, 1) unsigned, < 2**m_bits; bias: (N,) or (1,) signed; shift S >= 1;
    acc_bits: signed width of each accumulator; out_bits: 1 (sign bit) or 2..32 (signed range,
    narrowed by lo / hi, e.g. lo = 0 for ReLU or lo = -Qp for a symmetric uniform quantizer).
    """

    mult: np.ndarray
    bias: np.ndarray
    shift: int
    acc_bits: int
    out_bits: int
    lo: int | None = None
    hi: int | None = None
    m_bits: int = 16

    def __post_init__(self):
        o = "Requant"
        set_field(self, "m_bits", int_field(o, "m_bits", self.m_bits, 1, 32))
        set_field(self, "mult", int_array(o, "mult", self.mult, ndim=2, lo=0, hi=(1 << self.m_bits) - 1))
        set_field(self, "bias", int_array(o, "bias", self.bias, ndim=1))
        if self.mult.shape[0] < 1:
            raise BinbertError("Requant.mult: needs at least one term")
        if self.mult.shape[1] != self.bias.shape[0] and 1 not in (self.mult.shape[1], self.bias.shape[0]):
            raise BinbertError(f"Requant: mult has {self.mult.shape[1]} rows but bias {self.bias.shape[0]}")
        set_field(self, "shift", int_field(o, "shift", self.shift, 1, 62))
        set_field(self, "acc_bits", int_field(o, "acc_bits", self.acc_bits, 1, 62))
        set_field(self, "out_bits", int_field(o, "out_bits", self.out_bits, 1, MAX_OUT_BITS))
        full = act_range(self.out_bits)
        lo = full[0] if self.lo is None else int_field(o, "lo", self.lo, *full)
        hi = full[1] if self.hi is None else int_field(o, "hi", self.hi, *full)
        if lo > hi:
            raise BinbertError(f"Requant: lo={lo} > hi={hi}")
        set_field(self, "lo", lo)
        set_field(self, "hi", hi)
        if self.z_bits > INT_BITS:
            raise BinbertError(f"Requant: z needs {self.z_bits} bits (> {INT_BITS}): "
                               f"acc_bits={self.acc_bits}, m_bits={self.m_bits}")

    @property
    def terms(self) -> int:
        return self.mult.shape[0]

    @property
    def rows(self) -> int:
        return max(self.mult.shape[1], self.bias.shape[0])

    @property
    def bias_bits(self) -> int:
        return signed_bits(-max_abs(self.bias), max_abs(self.bias))

    @property
    def z_bits(self) -> int:
        """Signed width of z: T products of acc_bits x m_bits (+1 for the unsigned M) plus B."""
        prod = self.acc_bits + self.m_bits  # |acc·M| < 2^(acc_bits-1) · 2^m_bits
        return max(prod + math.ceil(math.log2(self.terms)), self.bias_bits) + 1

    def z(self, accs) -> np.ndarray:
        accs = np.asarray(accs)
        if accs.ndim < 2 or accs.shape[0] != self.terms:
            raise BinbertError(f"Requant: expected ({self.terms}, ..., N) accumulators, got {accs.shape}")
        if self.rows > 1 and accs.shape[-1] != self.rows:
            raise BinbertError(f"Requant: accumulators have {accs.shape[-1]} rows, params {self.rows}")
        accs = codes_in("Requant", "accumulators", accs, *signed_range(self.acc_bits))
        z = self.bias.copy() if self.bias.shape[0] > 1 else np.int64(self.bias[0])
        for t in range(self.terms):
            m = self.mult[t] if self.mult.shape[1] > 1 else self.mult[t, 0]
            z = z + accs[t] * m
        return np.asarray(z, dtype=np.int64)

    def compute(self, accs) -> np.ndarray:
        z = self.z(accs)
        if self.out_bits == 1:
            return (z >= 0).astype(np.int64)
        return np.clip((z + (1 << (self.shift - 1))) >> self.shift, self.lo, self.hi)

    @property
    def is_threshold(self) -> bool:
        """One term to one bit: [acc·M + B >= 0] is [acc >= T] with M >= 0, so the hardware
        compares the accumulator with a per-row threshold T (no multiplier, no z register)."""
        return self.out_bits == 1 and self.terms == 1

    @property
    def t_bits(self) -> int:
        """Signed width of T: the accumulator range plus one past its top (never set)."""
        return self.acc_bits + 1

    def thresholds(self) -> np.ndarray:
        """(rows,) T with [acc >= T] == [acc·M + B >= 0] for every acc of acc_bits (§7):
        T = ceil(-B / M) for M > 0, clamped to [acc_min, acc_max + 1]; for M = 0 the bit is the
        constant [B >= 0], T = acc_min (always 1) or acc_max + 1 (never)."""
        if not self.is_threshold:
            raise BinbertError(f"Requant.thresholds: needs out_bits 1 and one term, not "
                               f"out_bits {self.out_bits} with {self.terms} terms")
        return arith.bit_thresholds(np.broadcast_to(self.mult[0], (self.rows,)),
                                    np.broadcast_to(self.bias, (self.rows,)), self.acc_bits)


# --------------------------------------------------------------------------------------------
# §12: ROM lookup after a requantizer (GELU, tanh)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Lut:
    """out = table[i - index.lo],  i = index.compute(accs)  (a requantizer to a small index code).

    table: one entry per index code index.lo .. index.hi; entries in [lo, hi] of an
    ``out_bits`` code (bits {0,1} when out_bits == 1).
    """

    index: Requant
    table: np.ndarray
    out_bits: int
    lo: int | None = None
    hi: int | None = None
    function: str = ""  # documentation only: which real function the table samples

    def __post_init__(self):
        o = "Lut"
        if not isinstance(self.index, Requant) or self.index.out_bits < 2:
            raise BinbertError("Lut.index: must be a multi-bit Requant")
        set_field(self, "out_bits", int_field(o, "out_bits", self.out_bits, 1, arith.MAX_ACT_BITS))
        full = act_range(self.out_bits)
        set_field(self, "lo", full[0] if self.lo is None else int_field(o, "lo", self.lo, *full))
        set_field(self, "hi", full[1] if self.hi is None else int_field(o, "hi", self.hi, *full))
        set_field(self, "table", int_array(o, "table", self.table, ndim=1, lo=self.lo, hi=self.hi))
        depth = self.index.hi - self.index.lo + 1
        if self.table.shape[0] != depth:
            raise BinbertError(f"Lut.table: {self.table.shape[0]} entries, index range needs {depth}")

    @property
    def acc_bits(self) -> int:
        return self.index.acc_bits

    @property
    def terms(self) -> int:
        return self.index.terms

    def compute(self, accs) -> np.ndarray:
        return self.table[self.index.compute(accs) - self.index.lo]


Output = Union[Requant, Lut]
