"""LSQ activation quantizer unit: accumulators -> next layer's activation codes (§7, §8).

Per row ``n`` (rows cycle through ``n / lanes`` beats per vector)::

    z    = sum_t acc_t * M_t[n] + B[n]
    code = clamp((z + 2**(S-1)) >> S, -2**(A-1), 2**(A-1) - 1)       out_bits >= 2
    bit  = z >= 0                                                     out_bits == 1

Two register stages: the products (so the multipliers sit alone between registers), then the
rounded and clamped codes. One term to one bit (BiBERT's sign activations) compares instead,
``bit = acc >= T[n]`` (``RequantParams.thresholds``, the same bits): no multiplier, no z.
``M``/``B`` (or ``T``) come from a small ROM indexed by the beat within the vector when they
differ between the rows of a lane, from constants otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import C, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.golden import arith
from hw.rtl.pe import check_int

__all__ = ["RequantParams", "Requantizer"]


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
        check_int(own, "n", self.n, 1)
        check_int(own, "lanes", self.lanes, 1)
        check_int(own, "terms", self.terms, 1)
        check_int(own, "acc_width", self.acc_width, 2)
        check_int(own, "m_bits", self.m_bits, 1, 32)
        check_int(own, "shift", self.shift, 1, 63)
        check_int(own, "out_bits", self.out_bits, 1, arith.MAX_ACT_BITS)
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
        return Requantizer(self)




def _b_width(params: RequantParams) -> int:
    return max(2, int(np.abs(params.b).max(initial=0)).bit_length() + 1)


class Requantizer(wiring.Component):
    """LSQ activation quantizer unit.

    Ports:
      * ``i: In(stream.Signature(ArrayLayout(ArrayLayout(signed(acc_width), terms), lanes)))`` —
        ``i.payload[l][t]`` is accumulator term ``t`` of row ``beat*lanes + l``;
      * ``o: Out(stream.Signature(ArrayLayout(signed(out_bits), lanes)))`` (``unsigned(1)``
        lanes for ``out_bits = 1``: bit 1 <-> +1).

    Latency ``params.latency`` (2) cycles; the pipeline advances when ``~o.valid | o.ready``.
    """

    def __init__(self, params: RequantParams):
        if not isinstance(params, RequantParams):
            self._MustUse__silence = True
            raise BinbertError(f"Requantizer: params must be RequantParams, got {type(params).__name__}")
        self.params = params
        p = params
        out_shape = signed(p.out_bits) if p.out_bits >= 2 else unsigned(1)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(data.ArrayLayout(signed(p.acc_width), p.terms),
                                                      p.lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(out_shape, p.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        T, L, NF = p.terms, p.lanes, p.nf
        bw = _b_width(p)
        mb = p.m_bits

        en = Signal()
        primed = Signal()  # the constant ROM's first word is readable one cycle after reset
        m.d.sync += primed.eq(1)
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en & primed)]
        accept = self.i.valid & self.i.ready

        # ---------------- per-row constants ----------------
        # (name, width, signed, values[beat, lane]): M per term and B, or the threshold T
        if p.is_threshold:  # one term to one bit: [acc >= T], no multiplier (§7)
            tw = p.acc_width + 1
            fields = [("t", tw, True, p.thresholds().reshape(NF, L))]
        else:
            m_rows = p.m.reshape(T, NF, L)   # [t, beat, lane]
            fields = [(f"m{t}", mb, False, m_rows[t]) for t in range(T)]
            fields.append(("b", bw, True, p.b.reshape(NF, L)))
        # per lane: the same for every beat? then constants, else ROM fields
        vary = NF > 1 and any(np.any(v != v[:1, :]) for _, _, _, v in fields)
        const = [dict() for _ in range(L)]
        if not vary:
            for lane in range(L):
                for name, w, sgn, v in fields:
                    const[lane][name] = C(int(v[0, lane]), signed(w) if sgn else unsigned(w))
        else:
            field = sum(w for _, w, _, _ in fields)
            words = []
            for beat in range(NF):
                word, pos = 0, 0
                for lane in range(L):
                    for _, w, _, v in fields:
                        word |= (int(v[beat, lane]) & ((1 << w) - 1)) << pos
                        pos += w
                words.append(word)
            m.submodules.crom = crom = memory.Memory(shape=unsigned(L * field), depth=NF, init=words)
            cread = crom.read_port()
            beat = Signal(range(NF))
            beat_next = Signal(range(NF))
            m.d.comb += beat_next.eq(Mux(accept, Mux(beat == NF - 1, 0, beat + 1), beat))
            m.d.sync += beat.eq(beat_next)
            # read the *next* beat's row so its constants are registered when it arrives
            m.d.comb += [cread.addr.eq(beat_next), cread.en.eq(1)]
            pos = 0
            for lane in range(L):
                for name, w, sgn, _ in fields:
                    f = cread.data[pos: pos + w]
                    const[lane][name] = f.as_signed() if sgn else f
                    pos += w

        v1 = Signal()
        with m.If(en):
            m.d.sync += v1.eq(accept)
        v2 = Signal()
        with m.If(en):
            m.d.sync += v2.eq(v1)
        m.d.comb += self.o.valid.eq(v2)

        if p.is_threshold:
            # stage 1: the compare; stage 2: its register (the latency of the general path)
            for lane in range(L):
                b1 = Signal(name=f"ge{lane}")
                out = Signal(self.o.payload[lane].shape(), name=f"q{lane}")
                with m.If(en):
                    m.d.sync += [b1.eq(self.i.payload[lane][0] >= const[lane]["t"]), out.eq(b1)]
                m.d.comb += self.o.payload[lane].eq(out)
            return m

        # ---------------- stage 1: products ----------------
        prods = []
        for lane in range(L):
            row = []
            for t in range(T):
                pr = Signal(signed(p.acc_width + mb + 1), name=f"prod{lane}_{t}")
                with m.If(en):
                    m.d.sync += pr.eq(self.i.payload[lane][t] * const[lane][f"m{t}"])
                row.append(pr)
            b1 = Signal(signed(bw), name=f"bias{lane}")
            with m.If(en):
                m.d.sync += b1.eq(const[lane]["b"])
            prods.append((row, b1))

        # ---------------- stage 2: sum, round half up, clamp ----------------
        lo, hi = -(1 << (p.out_bits - 1)), (1 << (p.out_bits - 1)) - 1
        for lane, (row, b1) in enumerate(prods):
            z = Signal(signed(p.z_width), name=f"z{lane}")
            total = b1
            for pr in row:
                total = total + pr
            m.d.comb += z.eq(total)
            out = Signal(self.o.payload[lane].shape(), name=f"q{lane}")
            if p.out_bits == 1:  # two terms: the sign of the weighted sum
                res = ~z[-1]  # z >= 0
            else:
                rw = max(p.z_width, p.shift + 1) + 1
                rounded = Signal(signed(rw), name=f"r{lane}")
                m.d.comb += rounded.eq(z + (1 << (p.shift - 1)))
                q = Signal(signed(max(2, rw - p.shift)), name=f"sh{lane}")
                m.d.comb += q.eq(rounded >> p.shift)
                res = Mux(q < lo, lo, Mux(q > hi, hi, q))
            with m.If(en):
                m.d.sync += out.eq(res)
            m.d.comb += self.o.payload[lane].eq(out)
        return m
