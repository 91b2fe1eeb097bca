"""Encoder-level integer ops of docs/arithmetic.md v2 (§10-§19): one frozen params object per op.

Each class holds every constant of one op (multipliers, shifts, ROM tables, widths) and its
``compute()`` is the golden integer model of that op; the RTL generators read the same object.
No torch here: ``sw/export.py`` builds these objects from a trained model, ``sw/intmodel.py``
rebuilds them from an export directory. Every value is an ``int`` or an int64 numpy array; every
intermediate is checked (at construction) to fit the int64 the golden model computes in, and the
widths the RTL needs are properties (``*_bits``).

Binary activations (1 bit) are carried as bits {0, 1} (§1: 1 <-> +1); multi-bit activations as
two's-complement codes; attention probabilities as unsigned codes (0 / 1 for Heaviside).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from hw import arith
from hw.errors import BinbertError

INT_BITS = 63          # the golden model computes in int64: every intermediate fits 63 bits + sign
MAX_OUT_BITS = 32      # widest requantizer output (classifier logits)
F64_EXACT = 1 << 53    # integer dot products below this bound are exact in float64 (BLAS speed)
F32_EXACT = 1 << 24    # ... and below this one in float32


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer of [lo, hi]."""
    lo, hi = int(lo), int(hi)
    return max(1, max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + 1)


def signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _bound(a: np.ndarray) -> int:
    """max |a| as a Python int (0 for an empty array)."""
    return int(np.abs(a).max()) if a.size else 0


def _ints(owner: str, name: str, a, *, ndim: int | None = None, lo: int | None = None,
          hi: int | None = None) -> np.ndarray:
    """Validate an integer array field and return it as a read-only int64 copy."""
    a = np.asarray(a)
    if a.dtype == np.uint64:
        if a.size and int(a.max()) >= 1 << 63:
            raise BinbertError(f"{owner}.{name}: values do not fit int64")
    elif not np.issubdtype(a.dtype, np.integer):
        raise BinbertError(f"{owner}.{name}: must be an integer array, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise BinbertError(f"{owner}.{name}: expected {ndim} axes, got shape {a.shape}")
    a = np.array(a, dtype=np.int64)
    if lo is not None and a.size and int(a.min()) < lo:
        raise BinbertError(f"{owner}.{name}: value {int(a.min())} below {lo}")
    if hi is not None and a.size and int(a.max()) > hi:
        raise BinbertError(f"{owner}.{name}: value {int(a.max())} above {hi}")
    a.flags.writeable = False
    return a


def _int(owner: str, name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise BinbertError(f"{owner}.{name}={v!r} must be an integer")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BinbertError(f"{owner}.{name}={v} out of range [{lo}, {hi}]")
    return v


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def _check_in(owner: str, name: str, x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise BinbertError(f"{owner}: {name} must be integers, got {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise BinbertError(f"{owner}: {name} outside [{lo}, {hi}] "
                           f"(min {int(x.min())}, max {int(x.max())})")
    return x


def act_range(bits: int) -> tuple[int, int]:
    """Value range of an activation code: bits {0,1} for 1 bit, two's complement otherwise."""
    return (0, 1) if bits == 1 else signed_range(bits)


def act_values(x: np.ndarray, bits: int) -> np.ndarray:
    """Arithmetic value of activations: +-1 for bits (§1), the code itself otherwise."""
    x = np.asarray(x, dtype=np.int64)
    return 2 * x - 1 if bits == 1 else x


def exact_matmul(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """Integer a @ b (int64). ``bound`` >= every |partial sum| (and every operand): below 2**24
    float32 BLAS is exact, below 2**53 float64 (any summation order: all partial sums are
    integers the format holds); above, int64 numpy."""
    if bound < F32_EXACT:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.int64)
    if bound < F64_EXACT:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def isqrt(x: np.ndarray) -> np.ndarray:
    """floor(sqrt(x)) for int64 x >= 0, exact (float estimate, then integer correction)."""
    x = np.asarray(x, dtype=np.int64)
    s = np.floor(np.sqrt(x.astype(np.float64))).astype(np.int64)
    for _ in range(2):  # the float estimate is within 1 of the truth below 2**62
        s = np.where(s * s > x, s - 1, s)
        s = np.where((s + 1) * (s + 1) <= x, s + 1, s)
    return s


# --------------------------------------------------------------------------------------------
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
        _set(self, "m_bits", _int(o, "m_bits", self.m_bits, 1, 32))
        _set(self, "mult", _ints(o, "mult", self.mult, ndim=2, lo=0, hi=(1 << self.m_bits) - 1))
        _set(self, "bias", _ints(o, "bias", self.bias, ndim=1))
        if self.mult.shape[0] < 1:
            raise BinbertError("Requant.mult: needs at least one term")
        if self.mult.shape[1] != self.bias.shape[0] and 1 not in (self.mult.shape[1], self.bias.shape[0]):
            raise BinbertError(f"Requant: mult has {self.mult.shape[1]} rows but bias {self.bias.shape[0]}")
        _set(self, "shift", _int(o, "shift", self.shift, 1, 62))
        _set(self, "acc_bits", _int(o, "acc_bits", self.acc_bits, 1, 62))
        _set(self, "out_bits", _int(o, "out_bits", self.out_bits, 1, MAX_OUT_BITS))
        full = act_range(self.out_bits)
        lo = full[0] if self.lo is None else _int(o, "lo", self.lo, *full)
        hi = full[1] if self.hi is None else _int(o, "hi", self.hi, *full)
        if lo > hi:
            raise BinbertError(f"Requant: lo={lo} > hi={hi}")
        _set(self, "lo", lo)
        _set(self, "hi", hi)
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
        return signed_bits(-_bound(self.bias), _bound(self.bias))

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
        accs = _check_in("Requant", "accumulators", accs, *signed_range(self.acc_bits))
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
        _set(self, "out_bits", _int(o, "out_bits", self.out_bits, 1, arith.MAX_ACT_BITS))
        full = act_range(self.out_bits)
        _set(self, "lo", full[0] if self.lo is None else _int(o, "lo", self.lo, *full))
        _set(self, "hi", full[1] if self.hi is None else _int(o, "hi", self.hi, *full))
        _set(self, "table", _ints(o, "table", self.table, ndim=1, lo=self.lo, hi=self.hi))
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


def _out_acc_check(owner: str, out, acc_bits: int) -> None:
    if not isinstance(out, (Requant, Lut)):
        raise BinbertError(f"{owner}.out: must be a Requant or a Lut, got {type(out).__name__}")
    if out.acc_bits < acc_bits:
        raise BinbertError(f"{owner}.out: acc_bits={out.acc_bits} but the dot products need {acc_bits}")


# --------------------------------------------------------------------------------------------
# §4-§6: binary-weight linear layer, §16: integer-weight linear layer
# --------------------------------------------------------------------------------------------

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
        _set(self, "k", _int(o, "k", self.k, 1))
        _set(self, "in_bits", _int(o, "in_bits", self.in_bits, 1, arith.MAX_ACT_BITS))
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
        _set(self, "weights", w)
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
        hardware computes (hw.arith.gemm_w1a) -- the same integers, tested equal, far slower.
        """
        x = np.asarray(x)
        if x.shape[-1] != self.k:
            raise BinbertError(f"BinaryLinear: input has {x.shape[-1]} features, expected {self.k}")
        x = _check_in("BinaryLinear", "input codes", x, *act_range(self.in_bits))
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
        _set(self, "w_bits", _int(o, "w_bits", self.w_bits, 2, 16))
        _set(self, "in_bits", _int(o, "in_bits", self.in_bits, 2, 24))
        _set(self, "weight", _ints(o, "weight", self.weight, ndim=2, lo=signed_range(self.w_bits)[0],
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
        x = np.asarray(x)
        if x.shape[-1] != self.k:
            raise BinbertError(f"IntLinear: input has {x.shape[-1]} features, expected {self.k}")
        x = _check_in("IntLinear", "input", x, *signed_range(self.in_bits))
        return exact_matmul(x, self.weight.T, self.bound)[None]

    def compute(self, x) -> np.ndarray:
        return self.out.compute(self.accumulate(x))


Linear = Union[BinaryLinear, IntLinear]


# --------------------------------------------------------------------------------------------
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
        _set(self, "score_bits", _int(o, "score_bits", self.score_bits, 2, 40))
        _set(self, "m_bits", _int(o, "m_bits", self.m_bits, 1, 32))
        _set(self, "mult", _int(o, "mult", self.mult, 0, (1 << self.m_bits) - 1))
        _set(self, "shift", _int(o, "shift", self.shift, 1, 62))
        _set(self, "frac_bits", _int(o, "frac_bits", self.frac_bits, 1, 12))
        _set(self, "exp_bits", _int(o, "exp_bits", self.exp_bits, 2, 24))
        want = exp2_table(self.frac_bits, self.exp_bits)
        _set(self, "table", _ints(o, "table", self.table, ndim=1))
        if self.table.shape != want.shape or not np.array_equal(self.table, want):
            raise BinbertError(f"{o}.table: not the 2^-f table of frac_bits={self.frac_bits}, "
                               f"exp_bits={self.exp_bits} (§13)")
        _set(self, "out_bits", _int(o, "out_bits", self.out_bits, 2, arith.MAX_ACT_BITS))
        _set(self, "hi", _int(o, "hi", self.hi, 1, signed_range(self.out_bits)[1]))
        _set(self, "recip_shift", _int(o, "recip_shift", self.recip_shift, 1, 62))
        _set(self, "recip_num", _int(o, "recip_num", self.recip_num, 1, (1 << 48) - 1))
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
        scores = _check_in("Softmax", "scores", scores, *signed_range(self.score_bits))
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
        _set(self, "score_bits", _int("Heaviside", "score_bits", self.score_bits, 2, 40))
        if self.hi != 1 or self.out_bits != 1:
            raise BinbertError("Heaviside: probabilities are single bits (hi=1, out_bits=1)")

    def compute(self, scores, valid) -> np.ndarray:
        scores = _check_in("Heaviside", "scores", scores, *signed_range(self.score_bits))
        return ((scores > 0) & np.asarray(valid, dtype=bool)).astype(np.int64)


# --------------------------------------------------------------------------------------------
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
            _set(self, name, _int(o, name, getattr(self, name), 1))
        for name in ("q_bits", "k_bits", "v_bits"):
            _set(self, name, _int(o, name, getattr(self, name), 1, arith.MAX_ACT_BITS))
        if not isinstance(self.probs, (Softmax, Heaviside)):
            raise BinbertError(f"{o}.probs: must be Softmax or Heaviside, got {type(self.probs).__name__}")
        if self.thresholds is not None:
            if not isinstance(self.probs, Heaviside):
                raise BinbertError(f"{o}.thresholds: per-head thresholds need Heaviside probabilities")
            b = self.score_max
            _set(self, "thresholds", _ints(o, "thresholds", self.thresholds, ndim=1, lo=-b - 1, hi=b))
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
        x = _check_in("Attention", name, x, *act_range(bits))
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


# --------------------------------------------------------------------------------------------
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
        _set(self, "n", _int(o, "n", self.n, 2))
        _set(self, "in_bits", _int(o, "in_bits", self.in_bits, 2, 24))
        _set(self, "extra_bits", _int(o, "extra_bits", self.extra_bits, 0, 8))
        _set(self, "eps", _int(o, "eps", self.eps, 0, 1 << 40))
        _set(self, "recip_shift", _int(o, "recip_shift", self.recip_shift, 1, 48))
        _set(self, "norm_shift", _int(o, "norm_shift", self.norm_shift, 1, self.recip_shift))
        _set(self, "gamma_bits", _int(o, "gamma_bits", self.gamma_bits, 2, 24))
        _set(self, "gamma", _ints(o, "gamma", self.gamma, ndim=1, lo=signed_range(self.gamma_bits)[0],
                                  hi=signed_range(self.gamma_bits)[1]))
        _set(self, "beta", _ints(o, "beta", self.beta, ndim=1))
        if self.gamma.shape != (self.n,) or self.beta.shape != (self.n,):
            raise BinbertError(f"{o}: gamma {self.gamma.shape} / beta {self.beta.shape} must be ({self.n},)")
        _set(self, "out_shift", _int(o, "out_shift", self.out_shift, 1, 62))
        _set(self, "out_bits", _int(o, "out_bits", self.out_bits, 2, 24))
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
        return signed_bits(-_bound(self.beta), _bound(self.beta))

    @property
    def z_bits(self) -> int:
        return max(self.norm_bits + self.gamma_bits, self.beta_bits) + 1

    def compute(self, v) -> np.ndarray:
        v = np.asarray(v)
        if v.shape[-1] != self.n:
            raise BinbertError(f"LayerNorm: input has {v.shape[-1]} features, expected {self.n}")
        v = _check_in("LayerNorm", "input", v, *signed_range(self.in_bits))
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


# --------------------------------------------------------------------------------------------
# §18: embeddings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Embedding:
    """e = word(id) + position[l] + token_type[t], in units of 2^-table_frac, then LayerNorm (§18).

    word(id) = Σ_t alpha[t, id]·(±1 bits of word_bits[t, id])   (binary table, T terms), or
             = word_table[id]                                    (full-precision table, rounded).
    alpha: (T, V) or (T, 1) non-negative; tables are signed table_bits-wide integers. The
    LayerNorm maps the sum to the residual format; table_frac only documents the scale (the
    LayerNorm's eps carries it).
    """

    hidden: int
    table_bits: int
    table_frac: int
    word_bits: np.ndarray | None
    alpha: np.ndarray | None
    word_table: np.ndarray | None
    position: np.ndarray
    token_type: np.ndarray
    ln: LayerNorm

    def __post_init__(self):
        o = "Embedding"
        _set(self, "hidden", _int(o, "hidden", self.hidden, 1))
        _set(self, "table_bits", _int(o, "table_bits", self.table_bits, 2, 24))
        _set(self, "table_frac", _int(o, "table_frac", self.table_frac, 0, 30))
        lo, hi = signed_range(self.table_bits)
        if (self.word_bits is None) == (self.word_table is None):
            raise BinbertError(f"{o}: exactly one of word_bits / word_table")
        if self.word_bits is not None:
            w = np.asarray(self.word_bits)
            if w.dtype != np.uint64 or w.ndim != 3 or w.shape[2] != arith.n_words(self.hidden):
                raise BinbertError(f"{o}.word_bits: expected (T, V, {arith.n_words(self.hidden)}) uint64, got {w.shape}")
            w = np.array(w)
            w.flags.writeable = False
            _set(self, "word_bits", w)
            a = _ints(o, "alpha", self.alpha, ndim=2, lo=0, hi=hi)
            if a.shape[0] != w.shape[0] or a.shape[1] not in (1, w.shape[1]):
                raise BinbertError(f"{o}.alpha: shape {a.shape} does not match word_bits {w.shape}")
            if a.size and int(a.max(axis=1).sum()) > hi:
                raise BinbertError(f"{o}.alpha: Σ_t alpha exceeds the {self.table_bits}-bit table range")
            _set(self, "alpha", a)
        else:
            _set(self, "word_table", _ints(o, "word_table", self.word_table, ndim=2, lo=lo, hi=hi))
            if self.word_table.shape[1] != self.hidden:
                raise BinbertError(f"{o}.word_table: {self.word_table.shape[1]} columns, hidden={self.hidden}")
        _set(self, "position", _ints(o, "position", self.position, ndim=2, lo=lo, hi=hi))
        _set(self, "token_type", _ints(o, "token_type", self.token_type, ndim=2, lo=lo, hi=hi))
        for name in ("position", "token_type"):
            if getattr(self, name).shape[1] != self.hidden:
                raise BinbertError(f"{o}.{name}: {getattr(self, name).shape[1]} columns, hidden={self.hidden}")
        if not isinstance(self.ln, LayerNorm) or self.ln.n != self.hidden or self.ln.in_bits < self.table_bits + 2:
            raise BinbertError(f"{o}.ln: must be a LayerNorm over {self.hidden} features, "
                               f"in_bits >= {self.table_bits + 2}")

    @property
    def vocab(self) -> int:
        return self.word_bits.shape[1] if self.word_bits is not None else self.word_table.shape[0]

    @property
    def max_len(self) -> int:
        return self.position.shape[0]

    def word(self, ids: np.ndarray) -> np.ndarray:
        if self.word_table is not None:
            return self.word_table[ids]
        out = np.zeros(ids.shape + (self.hidden,), dtype=np.int64)
        for t in range(self.word_bits.shape[0]):
            pm = arith.bits_to_pm1(arith.unpack_bits(self.word_bits[t][ids], self.hidden)).astype(np.int64)
            a = self.alpha[t][ids] if self.alpha.shape[1] > 1 else self.alpha[t, 0]
            out += pm * np.asarray(a)[..., None]
        return out

    def compute(self, ids, types=None) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise BinbertError(f"Embedding: input_ids must be (batch, seq) integers, got {ids.shape} {ids.dtype}")
        if ids.shape[1] > self.max_len:
            raise BinbertError(f"Embedding: sequence length {ids.shape[1]} exceeds the maximum "
                               f"{self.max_len} (max_position_embeddings)")
        ids = _check_in("Embedding", "input_ids", ids, 0, self.vocab - 1)
        types = np.zeros_like(ids) if types is None else _check_in(
            "Embedding", "token_type_ids", np.asarray(types), 0, self.token_type.shape[0] - 1)
        e = self.word(ids) + self.position[None, : ids.shape[1]] + self.token_type[types]
        return self.ln.compute(e)


# --------------------------------------------------------------------------------------------
# §19: encoder layer and the whole classifier
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EncoderLayer:
    """One BERT layer on the residual stream r (signed res_bits, 2^-res_frac units), §19.

    x = qkv_in(r);  q, k, v = query(x), key(x), value(x);  c = attention(q, k, v)
    h = ln1(attn_out(c) + r);  g = ffn_in(ffn_in_q(h));  out = ln2(ffn_out(g) + h)
    """

    qkv_in: Requant
    query: BinaryLinear
    key: BinaryLinear
    value: BinaryLinear
    attention: Attention
    attn_out: BinaryLinear
    ln1: LayerNorm
    ffn_in_q: Requant
    ffn_in: BinaryLinear
    ffn_out: BinaryLinear
    ln2: LayerNorm

    def __post_init__(self):
        a = self.attention
        pairs = (("query", self.query, a.q_bits), ("key", self.key, a.k_bits), ("value", self.value, a.v_bits))
        for name, lin, bits in pairs:
            if lin.in_bits != self.qkv_in.out_bits or lin.out.out_bits != bits or lin.n != a.hidden:
                raise BinbertError(f"EncoderLayer.{name}: widths do not chain (in {lin.in_bits}, "
                                   f"out {lin.out.out_bits}, rows {lin.n})")
        if self.attn_out.in_bits != a.context.out_bits or self.attn_out.k != a.hidden:
            raise BinbertError("EncoderLayer.attn_out: input does not match the attention context")
        if self.ffn_in.in_bits != self.ffn_in_q.out_bits or self.ffn_out.in_bits != self.ffn_in.out.out_bits:
            raise BinbertError("EncoderLayer.ffn: widths do not chain")
        if self.ffn_out.k != self.ffn_in.n:
            raise BinbertError("EncoderLayer.ffn_out: k does not match ffn_in rows")
        for ln in (self.ln1, self.ln2):
            if ln.in_bits < self.attn_out.out.out_bits + 1:
                raise BinbertError("EncoderLayer: LayerNorm in_bits too narrow for residual + branch")

    def compute(self, r, valid) -> np.ndarray:
        x = self.qkv_in.compute(np.asarray(r)[None])
        c = self.attention.compute(self.query.compute(x), self.key.compute(x), self.value.compute(x), valid)
        h = self.ln1.compute(self.attn_out.compute(c) + r)
        g = self.ffn_in.compute(self.ffn_in_q.compute(h[None]))
        return self.ln2.compute(self.ffn_out.compute(g) + h)


@dataclass(frozen=True, eq=False)
class EncoderParams:
    """The whole integer classifier (§19): embedding -> layers -> pooler -> classifier.

    pooler_in: requantizer of the [CLS] residual to the pooler's input codes (None when the
    pooler is an IntLinear reading the residual directly); pooler.out is the tanh Lut whose codes
    feed the classifier; logits = classifier(...) in units of 2^-logit_frac.
    """

    res_bits: int
    res_frac: int
    embedding: Embedding
    layers: tuple
    pooler_in: Requant | None
    pooler: Linear
    classifier: IntLinear
    logit_frac: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        o = "EncoderParams"
        _set(self, "res_bits", _int(o, "res_bits", self.res_bits, 2, 24))
        _set(self, "res_frac", _int(o, "res_frac", self.res_frac, 0, self.res_bits))
        _set(self, "logit_frac", _int(o, "logit_frac", self.logit_frac, 0, 31))
        _set(self, "layers", tuple(self.layers))
        if not all(isinstance(layer, EncoderLayer) for layer in self.layers):
            raise BinbertError(f"{o}.layers: must be EncoderLayer objects")
        if not isinstance(self.embedding, Embedding):
            raise BinbertError(f"{o}.embedding: must be an Embedding")
        if self.embedding.ln.out_bits != self.res_bits:
            raise BinbertError(f"{o}.embedding.ln: out_bits must equal res_bits={self.res_bits}")
        for i, layer in enumerate(self.layers):
            if layer.qkv_in.acc_bits < self.res_bits or layer.ln2.out_bits != self.res_bits:
                raise BinbertError(f"{o}.layers[{i}]: residual widths differ from res_bits={self.res_bits}")
            if layer.attention.max_len < self.max_len:
                raise BinbertError(f"{o}.layers[{i}].attention: max_len below the position table")
        if isinstance(self.pooler, BinaryLinear) and self.pooler_in is None:
            raise BinbertError(f"{o}.pooler_in: a binary pooler needs an input requantizer")
        if not isinstance(self.classifier, IntLinear):
            raise BinbertError(f"{o}.classifier: must be an IntLinear")

    @property
    def hidden(self) -> int:
        return self.embedding.hidden

    @property
    def max_len(self) -> int:
        return self.embedding.max_len

    @property
    def num_labels(self) -> int:
        return self.classifier.n

    def hidden_states(self, input_ids, attention_mask=None, token_type_ids=None) -> list[np.ndarray]:
        """Residual stream after the embedding and after every layer (integers, §10)."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2:
            raise BinbertError(f"input_ids: expected (batch, seq), got shape {ids.shape}")
        if ids.shape[1] > self.max_len:
            raise BinbertError(f"input_ids: sequence length {ids.shape[1]} exceeds the configured "
                               f"maximum {self.max_len}")
        valid = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask) != 0
        if valid.shape != ids.shape:
            raise BinbertError(f"attention_mask: shape {valid.shape} differs from input_ids {ids.shape}")
        states = [self.embedding.compute(ids, token_type_ids)]
        for layer in self.layers:
            states.append(layer.compute(states[-1], valid))
        return states

    def compute(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """Integer logits (batch, num_labels); real logit = value · 2^-logit_frac."""
        return self.head(self.hidden_states(input_ids, attention_mask, token_type_ids)[-1])

    def head(self, r) -> np.ndarray:
        """Pooler + classifier on final residual states ``r`` (batch, length, hidden): integer
        logits. Separate so a residual stream computed elsewhere (the RTL) gets the same tail."""
        cls = np.asarray(r, dtype=np.int64)[:, 0]
        x = cls if self.pooler_in is None else self.pooler_in.compute(cls[None])
        return self.classifier.compute(self.pooler.compute(x))

    def predict(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """argmax of the integer logits (first maximum on ties)."""
        return self.compute(input_ids, attention_mask, token_type_ids).argmax(axis=-1)


OPS = {cls.__name__: cls for cls in (Requant, Lut, BinaryLinear, IntLinear, Softmax, Heaviside,
                                     Attention, LayerNorm, Embedding, EncoderLayer, EncoderParams)}
