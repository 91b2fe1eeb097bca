"""§11, §15 attention core (scores, probabilities, P·V, context requantizer): the golden op.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith
from hw.golden.arith import (act_range, act_values, exact_matmul, signed_bits)
from hw.validate import codes_in, int_array, int_field, set_field
from hw.golden.requant import Requant
from hw.golden.softmax import Heaviside, Softmax, shifted_score_bits


# §11, §15: attention core (scores, probabilities, P·V, context requantizer)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Attention:
    """Multi-head attention core between the Q/K/V requantizers and the output projection.

    S = Q_h·K_hᵀ (integer values: ±1 for 1-bit codes);  P = probs(S − T_h, valid);
    C = P·V_h (V ±1 for 1-bit codes);  out = context.compute(C), the output dense's input codes.

    thresholds: Heaviside only, optional: one integer T_h per head (learned Bi-Attention
    thresholds, §14), in [−b − 1, b] for scores in [−b, b] (beyond, every key or none is kept);
    None: T = 0, BiBERT's bool(S > 0).
    """

    heads: int
    head_dim: int
    q_bits: int
    k_bits: int
    v_bits: int
    probs: Union[Softmax, Heaviside]
    context: Requant
    max_len: int
    thresholds: Union[np.ndarray, None] = None

    def __post_init__(self):
        o = "Attention"
        for name in ("heads", "head_dim", "max_len"):
            set_field(self, name, int_field(o, name, getattr(self, name), 1))
        for name in ("q_bits", "k_bits", "v_bits"):
            set_field(self, name, int_field(o, name, getattr(self, name), 1, arith.MAX_ACT_BITS))
        if not isinstance(self.probs, (Softmax, Heaviside)):
            raise BinbertError(f"{o}.probs: must be Softmax or Heaviside, got {type(self.probs).__name__}")
        if self.thresholds is not None:
            if not isinstance(self.probs, Heaviside):
                raise BinbertError(f"{o}.thresholds: per-head thresholds need Heaviside probabilities")
            b = self.score_max
            set_field(self, "thresholds", int_array(o, "thresholds", self.thresholds, ndim=1, lo=-b - 1, hi=b))
            if self.thresholds.shape != (self.heads,):
                raise BinbertError(f"{o}.thresholds: {self.thresholds.shape[0]} values for {self.heads} heads")
        if self.probs.score_bits < self.score_bits:
            raise BinbertError(f"{o}.probs: score_bits={self.probs.score_bits}, scores need {self.score_bits}")
        if not isinstance(self.context, Requant) or self.context.terms != 1:
            raise BinbertError(f"{o}.context: must be a one-term Requant")
        if self.context.acc_bits < self.context_bits:
            raise BinbertError(f"{o}.context: acc_bits={self.context.acc_bits}, P·V needs {self.context_bits}")

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @staticmethod
    def _mag(bits: int) -> int:
        return 1 if bits == 1 else 1 << (bits - 1)

    @property
    def score_max(self) -> int:
        """Largest |S|: head_dim times the largest |q|·|k|."""
        return self.head_dim * self._mag(self.q_bits) * self._mag(self.k_bits)

    @property
    def score_bits(self) -> int:
        """Signed width of what the probabilities unit reads, S − T_h."""
        return shifted_score_bits(self.score_max, self.thresholds)

    @property
    def context_bits(self) -> int:
        b = self.max_len * self.probs.hi * self._mag(self.v_bits)
        return signed_bits(-b, b)

    def _split(self, x, bits: int, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[-1] != self.hidden:
            raise BinbertError(f"Attention: {name} must be (batch, seq, {self.hidden}), got {x.shape}")
        x = codes_in("Attention", name, x, *act_range(bits))
        v = act_values(x, bits)
        b, l, _ = v.shape
        return v.reshape(b, l, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def compute(self, q, k, v, valid) -> np.ndarray:
        qh, kh, vh = self._split(q, self.q_bits, "q"), self._split(k, self.k_bits, "k"), self._split(v, self.v_bits, "v")
        b, _, l, _ = qh.shape
        if l > self.max_len:
            raise BinbertError(f"Attention: sequence length {l} exceeds max_len={self.max_len}")
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (b, l):
            raise BinbertError(f"Attention: valid mask must be ({b}, {l}), got {valid.shape}")
        scores = exact_matmul(qh, kh.transpose(0, 1, 3, 2), 1 << self.score_bits)
        if self.thresholds is not None:
            scores = scores - self.thresholds[None, :, None, None]
        p = self.probs.compute(scores, valid[:, None, None, :])
        ctx = exact_matmul(p, vh, 1 << self.context_bits)  # (B, h, L, d)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, l, self.hidden)
        return self.context.compute(ctx[None])
