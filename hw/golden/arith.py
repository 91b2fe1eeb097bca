"""Golden integer primitives of docs/arithmetic.md, in numpy.

This module *is* the contract in executable form: the RTL must equal it bit for bit and the
PyTorch integer-simulation path must follow it. Everything is vectorised on packed uint64 words
(``np.bitwise_count``); there are no per-element Python loops.

Conventions (docs/arithmetic.md §1-§3):
  * a binary value is a bit: 1 <-> +1, 0 <-> -1, and sign(0) = +1;
  * element k of a vector lives in word k // 64 at bit k % 64 (LSB first); tail bits are 0;
  * A-bit activations (A >= 2) are two's-complement codes in [-2**(A-1), 2**(A-1) - 1].
"""
from __future__ import annotations

import os

import numpy as np

from hw.errors import BinbertError

WORD_BITS = 64
MAX_ACT_BITS = 8


def n_words(k: int) -> int:
    """Number of uint64 words that hold ``k`` packed bits."""
    return -(-int(k) // WORD_BITS)


def sign_bits(x: np.ndarray) -> np.ndarray:
    """Binarise real values: bit 1 for x >= 0 (+1), bit 0 for x < 0 (-1)."""
    return (np.asarray(x) >= 0).astype(np.uint8)


def bits_to_pm1(bits: np.ndarray) -> np.ndarray:
    """Bits {0, 1} -> values {-1, +1} (int8)."""
    return (np.asarray(bits, dtype=np.int8) * 2 - 1).astype(np.int8)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack bits along the last axis: (..., K) of {0,1} -> (..., ceil(K/64)) uint64, LSB first."""
    bits = np.asarray(bits)
    if bits.ndim == 0:
        raise BinbertError("pack_bits: bits must have at least one axis")
    if bits.size and (bits.min() < 0 or bits.max() > 1):
        raise BinbertError("pack_bits: bits must be 0 or 1")
    k = bits.shape[-1]
    w = n_words(k)
    padded = np.zeros(bits.shape[:-1] + (w * WORD_BITS,), dtype=np.uint8)
    padded[..., :k] = bits
    # packbits(bitorder="little") puts element 8j+i at bit i of byte j; eight little-endian bytes
    # then form one uint64 with element 64w+i at bit i: exactly the contract's order.
    as_bytes = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(as_bytes).view("<u8").astype(np.uint64)


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (..., W) uint64 -> (..., k) uint8 bits."""
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint64))
    if words.shape[-1] != n_words(k):
        raise BinbertError(f"unpack_bits: {words.shape[-1]} words cannot hold k={k} bits "
                           f"(need {n_words(k)})")
    as_bytes = words.astype("<u8").view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :k]


def check_codes(codes: np.ndarray, a_bits: int, name: str = "x") -> np.ndarray:
    """Validate A-bit two's-complement codes and return them as int64."""
    if not 2 <= a_bits <= MAX_ACT_BITS:
        raise BinbertError(f"a_bits={a_bits} unsupported: multi-bit activations need 2..{MAX_ACT_BITS}")
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise BinbertError(f"{name}: activation codes must be integers, got {codes.dtype}")
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    if codes.size and (codes.min() < lo or codes.max() > hi):
        raise BinbertError(f"{name}: codes outside the {a_bits}-bit range [{lo}, {hi}]")
    return codes.astype(np.int64)


def bit_planes(codes: np.ndarray, a_bits: int) -> np.ndarray:
    """Two's-complement bit planes: (..., K) codes -> (A, ..., K) bits, plane b = bit b."""
    codes = check_codes(codes, a_bits)
    u = codes & ((1 << a_bits) - 1)
    return np.stack([((u >> b) & 1).astype(np.uint8) for b in range(a_bits)])


def plane_weights(a_bits: int) -> np.ndarray:
    """c_b of §5: 2**b for the low planes, -2**(A-1) for the sign plane."""
    c = np.array([1 << b for b in range(a_bits)], dtype=np.int64)
    c[-1] = -c[-1]
    return c


def acc_width(k: int, a_bits: int) -> int:
    """Signed accumulator width that holds every dot product of length k (§4, §5)."""
    if k < 1:
        raise BinbertError(f"k={k}: the dot-product length must be >= 1")
    if a_bits < 1 or a_bits > MAX_ACT_BITS:
        raise BinbertError(f"a_bits={a_bits} unsupported: need 1..{MAX_ACT_BITS}")
    bound = k if a_bits == 1 else k << (a_bits - 1)  # max |y|
    return bound.bit_length() + 1


def hamming(xp: np.ndarray, wp: np.ndarray, *, block: int = 0, threads: int = 0) -> np.ndarray:
    """popcount(x XOR w) for every row pair: (M, W) x (N, W) packed -> (M, N) int32.

    Exact and pure numpy. The cost is one XOR and one popcount per (row pair, word), so the
    work is arranged to keep numpy's per-call overhead and the memory traffic small:

    * blocks of ``block`` x rows (0: sized so a block's uint64 scratch, W x rows x N, stays in
      L2), and per block three ufunc calls over all W words at once: a broadcast XOR, an
      in-place popcount, a sum over the word axis;
    * the sum runs in uint8 over groups of three words (3 * 64 <= 255: no overflow, no casting)
      and only the few group sums are widened;
    * blocks are spread over ``threads`` threads (0: one per available CPU, up to 4, for large
      products while the CPUs are idle; 1: serial); numpy ufuncs release the GIL, and blocks
      are handed out dynamically.
    """
    xp = np.asarray(xp, dtype=np.uint64)
    wp = np.asarray(wp, dtype=np.uint64)
    if xp.ndim != 2 or wp.ndim != 2 or xp.shape[1] != wp.shape[1]:
        raise BinbertError(f"hamming: packed shapes {xp.shape} and {wp.shape} do not match")
    m, words = xp.shape
    n = wp.shape[0]
    out = np.empty((m, n), dtype=np.int32)
    if m == 0 or n == 0 or words == 0:
        out.fill(0)
        return out
    xt = np.ascontiguousarray(xp.T)  # (W, M): word j of every row is contiguous
    wt = np.ascontiguousarray(wp.T)  # (W, N)
    rows = block if block > 0 else max(1, (256 * 1024) // (8 * words * n))
    rows = min(m, rows)
    starts = range(0, m, rows)
    if threads <= 0:
        # Threads pay off on idle CPUs only: on an oversubscribed machine every ufunc call
        # becomes a GIL hand-off to a descheduled thread (measured 5-15x slower), so stay serial.
        cpus = _cpus()
        idle = os.getloadavg()[0] < cpus - 0.5 if hasattr(os, "getloadavg") else False
        threads = min(4, cpus) if idle and m * n * words >= (1 << 16) else 1
    threads = max(1, min(threads, len(starts)))
    groups = [(g, min(words, g + 3)) for g in range(0, words, 3)]

    def work(blocks):
        tmp = np.empty((words, rows, n), dtype=np.uint64)
        cnt = np.empty((words, rows, n), dtype=np.uint8)
        part = np.empty((len(groups), rows, n), dtype=np.uint8)
        for r0 in blocks:
            r1 = min(m, r0 + rows)
            k = r1 - r0
            t, c, s = tmp[:, :k], cnt[:, :k], part[:, :k]
            np.bitwise_xor(xt[:, r0:r1, None], wt[:, None, :], out=t)
            np.bitwise_count(t, out=c)
            for gi, (g0, g1) in enumerate(groups):
                np.add.reduce(c[g0:g1], axis=0, out=s[gi])
            if len(groups) == 1:
                out[r0:r1] = s[0]
            else:
                dst = out[r0:r1]
                np.add(s[0], s[1], out=dst, dtype=np.int32)
                for gi in range(2, len(groups)):
                    np.add(dst, s[gi], out=dst, dtype=np.int32)

    if threads == 1:
        work(starts)
    else:
        # Blocks are handed out one at a time from a shared iterator (list iterators are atomic
        # in CPython), and the caller works too: a descheduled thread on a busy machine then
        # holds up one block, not a fixed share of the rows.
        shared = iter(list(starts))
        helpers = [_pool(threads - 1).submit(work, shared) for _ in range(threads - 1)]
        work(shared)
        for h in helpers:
            h.result()
    return out


_POOLS: dict = {}


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pool(threads: int):
    """A process-wide thread pool per size (created once: thread start-up costs ~0.1 ms)."""
    if threads not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor
        _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hamming")
    return _POOLS[threads]


def gemm_w1a1(xp: np.ndarray, wp: np.ndarray, k: int) -> np.ndarray:
    """Binary x binary (§4): y[m, n] = 2 * popcount(XNOR(x_m, w_n)) - K = K - 2 * popcount(x ^ w)."""
    _check_packed(xp, k, "x")
    _check_packed(wp, k, "w")
    return k - 2 * hamming(xp, wp).astype(np.int64)


def neg_count(wp: np.ndarray, k: int) -> np.ndarray:
    """N_w of §5: the number of -1 weights in each packed row."""
    _check_packed(wp, k, "w")
    return k - np.bitwise_count(np.asarray(wp, dtype=np.uint64)).sum(-1).astype(np.int64)


def gemm_w1a(x_codes: np.ndarray, wp: np.ndarray, k: int, a_bits: int) -> np.ndarray:
    """A-bit activations x binary weights (§5), bit-serial over two's-complement planes.

    y = sum_b c_b * p_b + N_w, with p_b = popcount(XNOR(plane_b(x), w)) over the K valid bits.
    ``a_bits == 1`` means +-1 activations given as bits, i.e. :func:`gemm_w1a1` on packed bits.
    """
    if a_bits == 1:
        return gemm_w1a1(pack_bits(np.asarray(x_codes)), wp, k)
    x_codes = check_codes(x_codes, a_bits)
    if x_codes.ndim != 2 or x_codes.shape[1] != k:
        raise BinbertError(f"gemm_w1a: x has shape {x_codes.shape}, expected (M, {k})")
    _check_packed(wp, k, "w")
    planes = pack_bits(bit_planes(x_codes, a_bits))  # (A, M, W)
    y = neg_count(wp, k)[None, :].repeat(x_codes.shape[0], 0)
    for b, c in enumerate(plane_weights(a_bits)):
        y += int(c) * (k - hamming(planes[b], wp).astype(np.int64))
    return y


def requant(accs: np.ndarray, m: np.ndarray, b: np.ndarray, shift: int, out_bits: int) -> np.ndarray:
    """Requantize accumulators to the next activation code (§7).

    accs: (T, ..., N) integer accumulators of the T weight terms (T = 2 for split weights);
    m:    (T, N) or (T,) unsigned multipliers; b: (N,) or scalar signed bias; shift >= 1.
    out_bits >= 2: clamp((sum_t acc_t * m_t + b + 2**(shift-1)) >> shift) to the signed range.
    out_bits == 1: bit = 1 if sum_t acc_t * m_t + b >= 0 else 0 (sign, 0 -> +1).
    """
    accs = np.asarray(accs, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    if accs.ndim < 1 or m.shape[0] != accs.shape[0]:
        raise BinbertError(f"requant: {accs.shape[0] if accs.ndim else 0} accumulator terms "
                           f"but {m.shape[0]} multipliers")
    if m.min(initial=0) < 0:
        raise BinbertError("requant: multipliers must be >= 0")
    if shift < 1:
        raise BinbertError(f"requant: shift={shift} must be >= 1")
    total = np.asarray(b, dtype=np.int64) + sum(
        accs[t] * (m[t] if m.ndim == 1 else m[t]) for t in range(accs.shape[0])
    )
    if out_bits == 1:
        return (total >= 0).astype(np.int64)
    if not 2 <= out_bits <= MAX_ACT_BITS:
        raise BinbertError(f"requant: out_bits={out_bits} unsupported (1..{MAX_ACT_BITS})")
    q = (total + (1 << (shift - 1))) >> shift
    return np.clip(q, -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1)


def bit_thresholds(m: np.ndarray, b: np.ndarray, acc_bits: int) -> np.ndarray:
    """T with [acc >= T] == [acc·M + B >= 0] for every signed ``acc_bits`` accumulator (§7, one
    term to one bit, M >= 0): T = ceil(-B / M) for M > 0, clamped to [acc_min, acc_max + 1];
    for M = 0 the bit is the constant [B >= 0], T = acc_min (always 1) or acc_max + 1 (never).
    So the hardware compares instead of multiplying."""
    m = np.asarray(m, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if m.min(initial=0) < 0:
        raise BinbertError("bit_thresholds: multipliers must be >= 0")
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    t = -np.floor_divide(b, np.maximum(m, 1))  # ceil(-B / M), exact in integers
    t = np.where(m > 0, t, np.where(b >= 0, lo, hi + 1))
    return np.clip(t, lo, hi + 1).astype(np.int64)


def fold_scale(real: np.ndarray, *, m_bits: int = 16, max_shift: int = 40) -> tuple[np.ndarray, int]:
    """Fixed-point (M, S) with M / 2**S ~= real, M < 2**m_bits, the largest S <= max_shift (§8).

    One shift serves every entry of ``real`` (all terms and rows of one requantizer).
    M = floor(real * 2**S + 1/2).
    """
    real = np.asarray(real, dtype=np.float64)
    if real.size == 0 or not np.all(np.isfinite(real)) or real.min() < 0:
        raise BinbertError("fold_scale: scales must be finite and >= 0")
    top = float(real.max())
    if top == 0:
        return np.zeros(real.shape, dtype=np.int64), 1
    shift = max_shift
    while shift > 1 and np.floor(top * 2.0**shift + 0.5) >= 2**m_bits:
        shift -= 1
    mult = np.floor(real * 2.0**shift + 0.5).astype(np.int64)
    if mult.max() >= 2**m_bits:
        raise BinbertError(f"fold_scale: scale {top:g} needs more than m_bits={m_bits} bits")
    return mult, shift


def _check_packed(p: np.ndarray, k: int, name: str) -> None:
    p = np.asarray(p)
    if p.dtype != np.uint64 or p.ndim != 2 or p.shape[1] != n_words(k):
        raise BinbertError(f"{name}: packed operand must be (rows, {n_words(k)}) uint64 for k={k}, "
                           f"got {p.shape} {p.dtype}")


# int64 bounds and code ranges of the encoder-level ops (docs/arithmetic.md §10)
INT_BITS = 63          # the golden model computes in int64: every intermediate fits 63 bits + sign
MAX_OUT_BITS = 32      # widest requantizer output (classifier logits)
F64_EXACT = 1 << 53    # integer dot products below this bound are exact in float64 (BLAS speed)
F32_EXACT = 1 << 24    # ... and below this one in float32


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer of [lo, hi]."""
    lo, hi = int(lo), int(hi)
    return max(1, max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + 1)



def signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def max_abs(a: np.ndarray) -> int:
    """max |a| as a Python int (0 for an empty array)."""
    return int(np.abs(a).max()) if a.size else 0


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
