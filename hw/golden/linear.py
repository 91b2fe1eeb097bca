"""§4-§6 binary-weight and §16 integer-weight linear layers: the golden ops.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith
from hw.golden.arith import (act_range, act_values, exact_matmul, signed_bits, signed_range)
from hw.validate import codes_in, int_array, int_field, set_field
from hw.golden.requant import Lut, Output, Requant


# §4-§6: binary-weight linear layer, §16: integer-weight linear layer
# --------------------------------------------------------------------------------------------

def _out_acc_check(owner: str, out, acc_bits: int) -> None:
    if not isinstance(out, (Requant, Lut)):
        raise BinbertError(f"{owner}.out: must be a Requant or a Lut, got {type(out).__name__}")
    if out.acc_bits < acc_bits:
        raise BinbertError(f"{owner}.out: acc_bits={out.acc_bits} but the dot products need {acc_bits}")


def _input(x, owner: str, k: int, what: str, codes: tuple[int, int]) -> np.ndarray:
    """x (..., k) checked: k features, every value in the ``codes`` range."""
    x = np.asarray(x)
    if x.shape[-1] != k:
        raise BinbertError(f"{owner}: input has {x.shape[-1]} features, expected {k}")
    return codes_in(owner, what, x, *codes)


@dataclass(frozen=True, eq=False)
class BinaryLinear:
    """T binary weight matrices (packed rows, §2) on one activation input (§4, §5), then ``out``.

    weights: (T, N, ceil(K/64)) uint64; in_bits: 1 (bits) or 2..8 (codes);
    out: Requant or Lut over the T accumulators.
    """

    weights: np.ndarray
    k: int
    in_bits: int
    out: Output

    def __post_init__(self):
        o = "BinaryLinear"
        set_field(self, "k", int_field(o, "k", self.k, 1))
        set_field(self, "in_bits", int_field(o, "in_bits", self.in_bits, 1, arith.MAX_ACT_BITS))
        w = np.asarray(self.weights)
        if w.dtype != np.uint64 or w.ndim != 3 or w.shape[2] != arith.n_words(self.k):
            raise BinbertError(f"{o}.weights: expected (T, N, {arith.n_words(self.k)}) uint64, "
                               f"got {w.shape} {w.dtype}")
        if self.k % arith.WORD_BITS:
            tail = np.uint64((1 << (self.k % arith.WORD_BITS)) - 1)
            if np.any(w[..., -1] & ~tail):
                raise BinbertError(f"{o}.weights: tail bits beyond k={self.k} must be 0 (§2)")
        w = np.array(w)
        w.flags.writeable = False
        set_field(self, "weights", w)
        _out_acc_check(o, self.out, self.acc_bits)
        if self.out.terms != self.terms:
            raise BinbertError(f"{o}.out: {self.out.terms} terms but {self.terms} weight matrices")

    @property
    def terms(self) -> int:
        return self.weights.shape[0]

    @property
    def n(self) -> int:
        return self.weights.shape[1]

    @property
    def acc_bits(self) -> int:
        return arith.acc_width(self.k, self.in_bits)

    def pm1(self) -> np.ndarray:
        """(T, N, K) ±1 weights (float32), unpacked once: the BLAS form of the same matrices."""
        w = self.__dict__.get("_pm1")
        if w is None:
            w = np.stack([arith.bits_to_pm1(arith.unpack_bits(self.weights[t], self.k))
                          for t in range(self.terms)]).astype(np.float32)
            object.__setattr__(self, "_pm1", w)
        return w

    def accumulate(self, x, *, bitserial: bool = False) -> np.ndarray:
        """(T, ..., N) accumulators Σ_k x_k·w_k of x (..., K).

        Default: an exact float64 BLAS product with the ±1 weights (every partial sum is an
        integer below 2^53). ``bitserial=True``: the §4/§5 XNOR-popcount over bit planes that the
        hardware computes (hw.golden.arith.gemm_w1a) -- the same integers, tested equal, far slower.
        """
        x = _input(x, "BinaryLinear", self.k, "input codes", act_range(self.in_bits))
        flat = x.reshape(-1, self.k)
        if bitserial:
            accs = np.stack([arith.gemm_w1a(flat, self.weights[t], self.k, self.in_bits)
                             for t in range(self.terms)])
        else:
            v = act_values(flat, self.in_bits)
            bound = 1 << (self.acc_bits - 1)
            accs = np.stack([exact_matmul(v, self.pm1()[t].T, bound) for t in range(self.terms)])
        return accs.reshape((self.terms,) + x.shape[:-1] + (self.n,))

    def compute(self, x) -> np.ndarray:
        return self.out.compute(self.accumulate(x))


@dataclass(frozen=True, eq=False)
class IntLinear:
    """Integer weights (N, K), w_bits-bit two's complement, on in_bits-bit signed inputs, then out.

    For layers the checkpoint keeps in full precision (classifier; pooler when not quantized):
    export rounds them per row to w_bits (§16).
    """

    weight: np.ndarray
    w_bits: int
    in_bits: int
    out: Output

    def __post_init__(self):
        o = "IntLinear"
        set_field(self, "w_bits", int_field(o, "w_bits", self.w_bits, 2, 16))
        set_field(self, "in_bits", int_field(o, "in_bits", self.in_bits, 2, 24))
        set_field(self, "weight", int_array(o, "weight", self.weight, ndim=2, lo=signed_range(self.w_bits)[0],
                                   hi=signed_range(self.w_bits)[1]))
        _out_acc_check(o, self.out, self.acc_bits)
        if self.out.terms != 1:
            raise BinbertError(f"{o}.out: one accumulator term, got {self.out.terms}")

    @property
    def k(self) -> int:
        return self.weight.shape[1]

    @property
    def n(self) -> int:
        return self.weight.shape[0]

    @property
    def acc_bits(self) -> int:
        return signed_bits(-self.bound, self.bound)

    @property
    def bound(self) -> int:
        return self.k * (1 << (self.in_bits - 1)) * (1 << (self.w_bits - 1))

    def accumulate(self, x) -> np.ndarray:
        x = _input(x, "IntLinear", self.k, "input", signed_range(self.in_bits))
        return exact_matmul(x, self.weight.T, self.bound)[None]

    def compute(self, x) -> np.ndarray:
        return self.out.compute(self.accumulate(x))


Linear = Union[BinaryLinear, IntLinear]
