"""§17 integer LayerNorm: the golden op.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.errors import BinbertError
from hw.golden.arith import (INT_BITS, isqrt, max_abs, signed_bits, signed_range)
from hw.validate import codes_in, int_array, int_field, set_field


# §17: integer LayerNorm
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LayerNorm:
    """Integer LayerNorm over the last axis (n features), §17. With E = extra_bits:

    μ = floor((2·Σv·2^E + n) / 2n);  d = v·2^E - μ;  var = floor(Σd² / n)   (units 2^-E of v)
    σ = max(isqrt(var + eps), 1);  R = floor(2^recip_shift / σ)
    u = (d·R + 2^(norm_shift-1)) >> norm_shift                 (normalised, norm_frac fraction bits)
    y = clamp((u·gamma + beta + 2^(out_shift-1)) >> out_shift, signed out_bits range)
    """

    n: int
    in_bits: int
    extra_bits: int
    eps: int
    recip_shift: int
    norm_shift: int
    gamma: np.ndarray
    beta: np.ndarray
    out_shift: int
    out_bits: int
    gamma_bits: int = 16

    def __post_init__(self):
        o = "LayerNorm"
        set_field(self, "n", int_field(o, "n", self.n, 2))
        set_field(self, "in_bits", int_field(o, "in_bits", self.in_bits, 2, 24))
        set_field(self, "extra_bits", int_field(o, "extra_bits", self.extra_bits, 0, 8))
        set_field(self, "eps", int_field(o, "eps", self.eps, 0, 1 << 40))
        set_field(self, "recip_shift", int_field(o, "recip_shift", self.recip_shift, 1, 48))
        set_field(self, "norm_shift", int_field(o, "norm_shift", self.norm_shift, 1, self.recip_shift))
        set_field(self, "gamma_bits", int_field(o, "gamma_bits", self.gamma_bits, 2, 24))
        set_field(self, "gamma", int_array(o, "gamma", self.gamma, ndim=1, lo=signed_range(self.gamma_bits)[0],
                                  hi=signed_range(self.gamma_bits)[1]))
        set_field(self, "beta", int_array(o, "beta", self.beta, ndim=1))
        if self.gamma.shape != (self.n,) or self.beta.shape != (self.n,):
            raise BinbertError(f"{o}: gamma {self.gamma.shape} / beta {self.beta.shape} must be ({self.n},)")
        set_field(self, "out_shift", int_field(o, "out_shift", self.out_shift, 1, 62))
        set_field(self, "out_bits", int_field(o, "out_bits", self.out_bits, 2, 24))
        for name in ("sumsq_bits", "d_r_bits", "z_bits"):
            if getattr(self, name) > INT_BITS:
                raise BinbertError(f"{o}: {name}={getattr(self, name)} overflows int64")

    # widths (all signed unless noted) the RTL sizes its datapath from
    @property
    def sum_bits(self) -> int:
        return self.in_bits + (self.n - 1).bit_length()

    @property
    def d_bits(self) -> int:
        return self.in_bits + self.extra_bits + 1

    @property
    def sumsq_bits(self) -> int:
        """Unsigned width of Σd² (var's dividend)."""
        return 2 * (self.d_bits - 1) + self.n.bit_length()

    @property
    def std_bits(self) -> int:
        """Unsigned width of σ."""
        return (self.sumsq_bits + 1) // 2 + 1

    @property
    def recip_bits(self) -> int:
        """Unsigned width of R (σ >= 1)."""
        return self.recip_shift + 1

    @property
    def d_r_bound(self) -> int:
        """Bound on |d·R|: |d| <= sqrt(Σd²) < sqrt(n(var+1)) and sqrt(var+1) < σ+2 <= 3σ,
        so |d·R| < 3·sqrt(n)·2^P, whatever the input scale."""
        return 3 * (math.isqrt(self.n) + 1) << self.recip_shift

    @property
    def d_r_bits(self) -> int:
        return self.d_r_bound.bit_length() + 1

    @property
    def norm_bits(self) -> int:
        """Signed width of u (|u| <= d_r_bound >> norm_shift, plus the rounding)."""
        return ((self.d_r_bound >> self.norm_shift) + 1).bit_length() + 1

    @property
    def norm_frac(self) -> int:
        return self.recip_shift - self.norm_shift

    @property
    def beta_bits(self) -> int:
        return signed_bits(-max_abs(self.beta), max_abs(self.beta))

    @property
    def z_bits(self) -> int:
        return max(self.norm_bits + self.gamma_bits, self.beta_bits) + 1

    def compute(self, v) -> np.ndarray:
        v = np.asarray(v)
        if v.shape[-1] != self.n:
            raise BinbertError(f"LayerNorm: input has {v.shape[-1]} features, expected {self.n}")
        v = codes_in("LayerNorm", "input", v, *signed_range(self.in_bits))
        total = v.sum(axis=-1, keepdims=True) << self.extra_bits
        mu = (2 * total + self.n) // (2 * self.n)
        d = (v << self.extra_bits) - mu
        var = (d * d).sum(axis=-1, keepdims=True) // self.n
        std = np.maximum(isqrt(var + self.eps), 1)
        r = (1 << self.recip_shift) // std
        u = (d * r + (1 << (self.norm_shift - 1))) >> self.norm_shift
        z = u * self.gamma + self.beta
        lo, hi = signed_range(self.out_bits)
        return np.clip((z + (1 << (self.out_shift - 1))) >> self.out_shift, lo, hi)
