"""One frozen parameter object per hardware block: the golden model and the generator both read it.

Like :class:`amaranth.lib.crc.Parameters`: ``params.compute(...)`` is the bit-exact golden model
(numpy, via :mod:`hw.golden.arith`, docs/arithmetic.md) and ``params.create()`` elaborates the Amaranth
component that must equal it. Every bad parameter raises :class:`hw.errors.BinbertError` with a
one-line message naming the parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.golden import arith
from hw.errors import BinbertError


def _check_int(owner: str, name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BinbertError(f"{owner}: {name}={value!r} must be an integer")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise BinbertError(f"{owner}: {name}={value} must be {rng}")
    return value


def _int_array(owner: str, name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise BinbertError(f"{owner}: {name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    arr.setflags(write=False)
    return arr


def tree_levels(simd: int) -> int:
    """Number of levels of the XNOR-popcount tree (see :mod:`hw.rtl.pe`): the XNORs + the adders."""
    return 1 + (int(simd) - 1).bit_length()


def popcount_width(simd: int) -> int:
    """Unsigned width of a popcount of ``simd`` bits (0 .. simd)."""
    return int(simd).bit_length()


# --------------------------------------------------------------------------------------------
# XNOR-popcount processing element
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PEParams:
    """One XNOR-popcount lane: ``o = popcount(XNOR(x, w))`` over ``simd`` bits (§4).

    ``pipeline`` register stages are spread over the adder-tree levels (0: combinational);
    at most :attr:`max_pipeline` (one per tree level).
    """

    simd: int
    pipeline: int = 1

    def __post_init__(self):
        _check_int("PEParams", "simd", self.simd, 1)
        _check_int("PEParams", "pipeline", self.pipeline, 0)
        if self.pipeline > self.max_pipeline:
            raise BinbertError(f"PEParams: pipeline={self.pipeline} exceeds the {self.max_pipeline} "
                               f"tree levels of simd={self.simd}")

    @property
    def max_pipeline(self) -> int:
        return tree_levels(self.simd)

    @property
    def latency(self) -> int:
        """Cycles from an accepted input beat to its output beat (no stalls)."""
        return self.pipeline

    @property
    def out_width(self) -> int:
        return popcount_width(self.simd)

    def compute(self, x_bits, w_bits) -> np.ndarray:
        """popcount(XNOR(x, w)) per row: (..., simd) bits x (..., simd) bits -> (...) int64."""
        x = np.asarray(x_bits)
        w = np.asarray(w_bits)
        for name, a in (("x_bits", x), ("w_bits", w)):
            if a.ndim < 1 or a.shape[-1] != self.simd:
                raise BinbertError(f"PEParams.compute: {name} has shape {a.shape}, last axis must be "
                                   f"simd={self.simd}")
        xp = arith.pack_bits(x)
        wp = arith.pack_bits(w)
        diff = np.bitwise_count(np.bitwise_xor(xp, wp)).sum(-1).astype(np.int64)
        return self.simd - diff

    def create(self):
        from hw.rtl.pe import XnorPopcountPE
        return XnorPopcountPE(self)


# --------------------------------------------------------------------------------------------
# Matrix-vector unit
# --------------------------------------------------------------------------------------------
def weights_to_bits(weights, *, owner: str = "MVUParams", name: str = "weights") -> np.ndarray:
    """(n, k) weights given as +-1 values or as {0, 1} bits -> read-only uint8 bits (1 <-> +1)."""
    w = np.asarray(weights)
    if w.ndim != 2:
        raise BinbertError(f"{owner}: {name} must be a 2-D (n, k) array, got shape {w.shape}")
    if w.dtype == bool:
        bits = w.astype(np.uint8)
    else:
        if not (np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)):
            raise BinbertError(f"{owner}: {name} must be numeric, got dtype {w.dtype}")
        vals = set(np.unique(w).tolist()) if w.size else set()
        if vals <= {0, 1}:
            bits = w.astype(np.uint8)
        elif vals <= {-1, 1}:
            bits = (w > 0).astype(np.uint8)
        else:
            raise BinbertError(f"{owner}: {name} must be all +-1 or all {{0, 1}} bits, got values "
                               f"{sorted(vals)[:4]}")
    bits = np.ascontiguousarray(bits)
    bits.setflags(write=False)
    return bits


def _pack_rows_to_ints(bits: np.ndarray) -> list[int]:
    """(R, W) bits -> R Python ints, bit j of row r at bit j (LSB first)."""
    as_bytes = np.packbits(bits, axis=-1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in as_bytes]


def _ints_to_bits(words, width: int) -> np.ndarray:
    nbytes = -(-width // 8)
    raw = np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words), dtype=np.uint8)
    return np.unpackbits(raw.reshape(len(words), nbytes), axis=-1, bitorder="little")[:, :width]


BUFFER_STYLES = ("auto", "block", "distributed", "logic")


@dataclass(frozen=True, kw_only=True, eq=False)
class MVUParams:
    """FINN-style folded binary matrix-vector unit (docs/arithmetic.md §2, §4, §5).

    ``n`` rows x ``k`` columns of binary weights, ``pe`` rows and ``simd`` columns per cycle,
    ``a_bits``-bit activations (1: binary), ``mmv`` vectors share each weight read.
    ``pipeline`` is the register count of each XNOR-popcount lane (:class:`PEParams`).
    ``buffer`` pins the input ping-pong buffer's mapping (Yosys ``ram_style``): ``"auto"``
    leaves it to Yosys (LUT RAM when small), ``"block"`` block RAM, ``"distributed"`` LUT RAM,
    ``"logic"`` flip-flops.
    """

    k: int
    n: int
    pe: int
    simd: int
    weights: np.ndarray = field(repr=False)
    a_bits: int = 1
    mmv: int = 1
    pipeline: int = 1
    buffer: str = "auto"

    def __post_init__(self):
        own = "MVUParams"
        if self.buffer not in BUFFER_STYLES:
            raise BinbertError(f"{own}: buffer={self.buffer!r} must be one of {', '.join(BUFFER_STYLES)}")
        for name in ("k", "n", "pe", "simd", "mmv"):
            _check_int(own, name, getattr(self, name), 1)
        _check_int(own, "a_bits", self.a_bits, 1, arith.MAX_ACT_BITS)
        _check_int(own, "pipeline", self.pipeline, 0)
        if self.n % self.pe:
            raise BinbertError(f"{own}: pe={self.pe} does not divide n={self.n}")
        if self.k % self.simd:
            raise BinbertError(f"{own}: simd={self.simd} does not divide k={self.k}")
        PEParams(simd=self.simd, pipeline=self.pipeline)  # validates pipeline against the tree
        bits = weights_to_bits(self.weights, owner=own)
        if bits.shape != (self.n, self.k):
            raise BinbertError(f"{own}: weights have shape {bits.shape}, expected (n, k) = "
                               f"({self.n}, {self.k})")
        object.__setattr__(self, "weights", bits)

    # ---- folding --------------------------------------------------------------------------
    @property
    def nf(self) -> int:
        """Neuron folds: output beats per vector."""
        return self.n // self.pe

    @property
    def sf(self) -> int:
        """Synapse folds: input beats per vector."""
        return self.k // self.simd

    @property
    def cycles_per_vector(self) -> int:
        """Steady-state cycles per MMV group of vectors: A * NF * SF (§5)."""
        return self.a_bits * self.nf * self.sf

    @property
    def acc_width(self) -> int:
        return arith.acc_width(self.k, self.a_bits)

    @property
    def in_width(self) -> int:
        return self.simd * self.a_bits * self.mmv

    @property
    def pe_params(self) -> PEParams:
        return PEParams(simd=self.simd, pipeline=self.pipeline)

    @property
    def latency(self) -> int:
        """Cycles from the issue of the last fold cycle of a vector to its last output beat:
        buffer/ROM read (1) + read-data register (1, so the block RAM's unregistered output
        does not sit in front of the popcount tree: ECP5 Fmax) + PE pipeline + accumulator (1)."""
        return 3 + self.pipeline

    # ---- golden model ---------------------------------------------------------------------
    def packed_weights(self) -> np.ndarray:
        return arith.pack_bits(self.weights)

    def compute(self, x) -> np.ndarray:
        """(V, k) bits (a_bits = 1) or two's-complement codes -> (V, n) int64 dot products."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.k:
            raise BinbertError(f"MVUParams.compute: x has shape {x.shape}, expected (V, k={self.k})")
        if self.a_bits == 1:
            if x.size and (x.min() < 0 or x.max() > 1):
                raise BinbertError("MVUParams.compute: binary activations (a_bits=1) must be bits 0/1")
            return arith.gemm_w1a1(arith.pack_bits(x), self.packed_weights(), self.k)
        return arith.gemm_w1a(x, self.packed_weights(), self.k, self.a_bits)

    # ---- ROM images -----------------------------------------------------------------------
    def rom_words(self) -> list[int]:
        """Weight ROM words (§2): address nf*SF + sf, row p of the fold at bits [p*SIMD, ...)."""
        b = self.weights.reshape(self.nf, self.pe, self.sf, self.simd).transpose(0, 2, 1, 3)
        return _pack_rows_to_ints(b.reshape(self.nf * self.sf, self.pe * self.simd))

    @property
    def rom_width(self) -> int:
        return self.pe * self.simd

    @property
    def rom_depth(self) -> int:
        return self.nf * self.sf

    def row_offsets(self) -> np.ndarray:
        """N_w of §5: the number of -1 weights in each row, (n,) int64."""
        return (self.k - self.weights.sum(axis=1, dtype=np.int64)).astype(np.int64)

    def row_constants(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (D, R) of the RTL's MSB-first Horner accumulation (see hw/rtl/mvu.py).

        a_bits = 1: acc starts at D = -ceil(K/2) and adds each popcount; y = 2*acc + (K & 1).
        a_bits >= 2: planes go from the sign plane (counted as popcount(XOR), i.e. x inverted)
        down to plane 0; y = sum_b 2**b P'_b + C with C = N_w - K*2**(A-1) = D*2**(A-1) + R,
        0 <= R < 2**(A-1); acc starts at D and at each later plane start becomes 2*acc + R_b.
        """
        if self.a_bits == 1:
            d = np.full(self.n, -((self.k + 1) // 2), dtype=np.int64)
            return d, np.zeros(self.n, dtype=np.int64)
        c = self.row_offsets() - (self.k << (self.a_bits - 1))
        d = c >> (self.a_bits - 1)
        r = c - (d << (self.a_bits - 1))
        return d, r

    @classmethod
    def weights_from_rom(cls, words, *, k: int, n: int, pe: int, simd: int) -> np.ndarray:
        """Inverse of :meth:`rom_words`: ROM words -> (n, k) weight bits."""
        for name, v in (("k", k), ("n", n), ("pe", pe), ("simd", simd)):
            _check_int("MVUParams", name, v, 1)
        if n % pe or k % simd:
            raise BinbertError(f"MVUParams: pe={pe}/simd={simd} do not fold n={n}/k={k}")
        nf, sf = n // pe, k // simd
        if len(words) != nf * sf:
            raise BinbertError(f"MVUParams: ROM has {len(words)} words, expected NF*SF = {nf * sf}")
        bits = _ints_to_bits(words, pe * simd).reshape(nf, sf, pe, simd).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(bits.reshape(n, k))

    @classmethod
    def from_rom_file(cls, path, *, k: int, n: int, pe: int, simd: int, fmt: str | None = None,
                      **kwargs) -> "MVUParams":
        """Build the parameters from a weight memory file written by :func:`hw.golden.memfile.write_memfile`."""
        from hw.golden.memfile import read_memfile
        if n % pe or k % simd:
            raise BinbertError(f"MVUParams: pe={pe}/simd={simd} do not fold n={n}/k={k}")
        words = read_memfile(Path(path), width=pe * simd, depth=(n // pe) * (k // simd), fmt=fmt)
        w = cls.weights_from_rom(words, k=k, n=n, pe=pe, simd=simd)
        return cls(k=k, n=n, pe=pe, simd=simd, weights=w, **kwargs)

    # ---- stream packing helpers (what the RTL ports carry) --------------------------------
    def pack_input(self, x) -> list[int]:
        """(V, k) activations -> input beats; V must be a multiple of mmv (a group per SF beats).

        Beat sf of group g: element sf*SIMD+s of vector g*MMV+v at bits [(v*SIMD+s)*A, +A),
        two's-complement A-bit pattern (A = 1: the bit itself).
        """
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.k or x.shape[0] % self.mmv:
            raise BinbertError(f"MVUParams.pack_input: x has shape {x.shape}, expected (V, k={self.k}) "
                               f"with V a multiple of mmv={self.mmv}")
        a = self.a_bits
        u = x & ((1 << a) - 1)
        g = x.shape[0] // self.mmv
        # (G, MMV, SF, SIMD) -> (G, SF, MMV, SIMD) then A bits per element, LSB first
        u = u.reshape(g, self.mmv, self.sf, self.simd).transpose(0, 2, 1, 3)
        planes = ((u[..., None] >> np.arange(a)) & 1).astype(np.uint8)
        flat = planes.reshape(g * self.sf, self.in_width)
        return _pack_rows_to_ints(flat)

    def unpack_output(self, beats) -> np.ndarray:
        """Output beats (lists of PE*MMV signed ints, lane v*PE+p) -> (V, n) int64."""
        arr = np.asarray(beats, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != self.pe * self.mmv or arr.shape[0] % self.nf:
            raise BinbertError(f"MVUParams.unpack_output: beats have shape {arr.shape}, expected "
                               f"(G*NF, PE*MMV) with NF={self.nf}")
        g = arr.shape[0] // self.nf
        y = arr.reshape(g, self.nf, self.mmv, self.pe).transpose(0, 2, 1, 3)
        return y.reshape(g * self.mmv, self.n)

    def create(self):
        from hw.rtl.mvu import MatrixVectorUnit
        return MatrixVectorUnit(self)


# --------------------------------------------------------------------------------------------
# Requantizer (LSQ activation quantizer unit)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, eq=False)
class RequantParams:
    """Accumulators -> next A-bit activation code (§7), ``lanes`` rows per beat.

    ``m``: (terms, n) or (terms,) unsigned multipliers < 2**m_bits; ``b``: (n,) signed biases
    (or a scalar); one ``shift`` >= 1; ``out_bits`` 1 (threshold) .. 8.
    """

    n: int
    lanes: int
    acc_width: int
    m: np.ndarray
    b: np.ndarray
    shift: int
    out_bits: int
    terms: int = 1
    m_bits: int = 16

    def __post_init__(self):
        own = "RequantParams"
        _check_int(own, "n", self.n, 1)
        _check_int(own, "lanes", self.lanes, 1)
        _check_int(own, "terms", self.terms, 1)
        _check_int(own, "acc_width", self.acc_width, 2)
        _check_int(own, "m_bits", self.m_bits, 1, 32)
        _check_int(own, "shift", self.shift, 1, 63)
        _check_int(own, "out_bits", self.out_bits, 1, arith.MAX_ACT_BITS)
        if self.n % self.lanes:
            raise BinbertError(f"{own}: lanes={self.lanes} does not divide n={self.n}")
        m = _int_array(own, "m", self.m)
        if m.ndim == 0:
            m = m.reshape(1)
        if m.ndim == 1 and m.shape == (self.terms,):
            m = np.repeat(m[:, None], self.n, axis=1)
        if m.shape != (self.terms, self.n):
            raise BinbertError(f"{own}: m has shape {m.shape}, expected (terms, n) = "
                               f"({self.terms}, {self.n}) or (terms,)")
        if m.size and (m.min() < 0 or m.max() >= (1 << self.m_bits)):
            raise BinbertError(f"{own}: m values must be in 0..2**m_bits-1 = {(1 << self.m_bits) - 1}, "
                               f"got {m.min()}..{m.max()}")
        b = _int_array(own, "b", self.b)
        if b.ndim == 0:
            b = np.full(self.n, int(b), dtype=np.int64)
        if b.shape != (self.n,):
            raise BinbertError(f"{own}: b has shape {b.shape}, expected (n,) = ({self.n},)")
        for arr in (m, b):
            arr.setflags(write=False)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "b", b)

    @classmethod
    def from_scales(cls, *, n: int, lanes: int, acc_width: int, s_x: float, alpha, s_y: float,
                    out_bits: int, beta=None, m_bits: int = 16, max_shift: int = 40) -> "RequantParams":
        """Fold real scales into (M, B, S) per §8.

        ``alpha``: weight scales, (terms,) or (terms, n) (a scalar means one term);
        ``beta``: real bias per row (or None); ``s_x`` input step; ``s_y`` the next LSQ step.
        """
        own = "RequantParams.from_scales"
        for name, v in (("s_x", s_x), ("s_y", s_y)):
            if not (np.isfinite(v) and v > 0):
                raise BinbertError(f"{own}: {name}={v} must be finite and > 0")
        alpha = np.asarray(alpha, dtype=np.float64)
        if alpha.ndim == 0:
            alpha = alpha.reshape(1)
        terms = alpha.shape[0]
        if alpha.ndim == 1:
            alpha = np.repeat(alpha[:, None], n, axis=1)
        if alpha.shape != (terms, n):
            raise BinbertError(f"{own}: alpha has shape {alpha.shape}, expected (terms,) or (terms, n={n})")
        if not np.all(np.isfinite(alpha)) or alpha.min() < 0:
            raise BinbertError(f"{own}: alpha must be finite and >= 0")
        m, shift = arith.fold_scale(s_x * alpha / s_y, m_bits=m_bits, max_shift=max_shift)
        if beta is None:
            b = np.zeros(n, dtype=np.int64)
        else:
            beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n,))
            if not np.all(np.isfinite(beta)):
                raise BinbertError(f"{own}: beta must be finite")
            b = np.floor(beta / s_y * 2.0**shift + 0.5).astype(np.int64)
        return cls(n=n, lanes=lanes, acc_width=acc_width, m=m, b=b, shift=shift, out_bits=out_bits,
                   terms=terms, m_bits=m_bits)

    @property
    def nf(self) -> int:
        """Beats per vector (rows cycle through n / lanes)."""
        return self.n // self.lanes

    @property
    def z_width(self) -> int:
        """Signed width of z = sum_t acc_t * M_t + B (§7)."""
        w = self.acc_width + self.m_bits + 1 + (self.terms - 1).bit_length()
        bmax = int(np.abs(self.b).max(initial=0))
        return max(w, bmax.bit_length() + 2)

    @property
    def out_signed(self) -> bool:
        return self.out_bits >= 2

    @property
    def latency(self) -> int:
        """Register stages: the products, then the rounded/clamped output."""
        return 2

    def compute(self, accs) -> np.ndarray:
        """(terms, ..., n) accumulators -> (..., n) codes (out_bits = 1: bits)."""
        accs = np.asarray(accs, dtype=np.int64)
        if accs.ndim < 2 or accs.shape[0] != self.terms or accs.shape[-1] != self.n:
            raise BinbertError(f"RequantParams.compute: accs have shape {accs.shape}, expected "
                               f"(terms={self.terms}, ..., n={self.n})")
        lim = 1 << (self.acc_width - 1)
        if accs.size and (accs.min() < -lim or accs.max() >= lim):
            raise BinbertError(f"RequantParams.compute: accumulators outside acc_width={self.acc_width}")
        return arith.requant(accs, self.m, self.b, self.shift, self.out_bits)

    @property
    def is_threshold(self) -> bool:
        """One term to one bit: the RTL compares ``acc >= T`` instead of multiplying (§7)."""
        return self.out_bits == 1 and self.terms == 1

    def thresholds(self) -> np.ndarray:
        """(n,) T with [acc >= T] == [acc·M + B >= 0] for every acc of acc_width."""
        if not self.is_threshold:
            raise BinbertError(f"RequantParams.thresholds: needs out_bits 1 and one term, not "
                               f"out_bits {self.out_bits} with {self.terms} terms")
        return arith.bit_thresholds(self.m[0], self.b, self.acc_width)

    def create(self):
        from hw.rtl.requant import Requantizer
        return Requantizer(self)
