"""FINN-style folded binary matrix-vector unit (docs/arithmetic.md §2, §4, §5).

:class:`MVUParams` holds the shape, weights and folding (``compute``: the golden dot products,
``rom_words`` / ``pack_input`` / ``unpack_output``: what the ports and ROM carry, ``create``:
the :class:`MatrixVectorUnit`).

Data path (one weight read serves PE rows x MMV vectors per cycle)::

    i --> ping-pong input buffer (2 x SF words, plane-major) --\
                                                               +--> PE*MMV XNOR-popcount lanes
    weight ROM (NF*SF words of PE*SIMD bits) -----------------/        (hw.rtl.pe.xnor_popcount)
        --> per-lane accumulator --> output register --> o

* Loading the next vector into one buffer bank overlaps computing the current one from the
  other, so a vector costs exactly ``A * NF * SF`` cycles in steady state.
* Schedule per vector: for each fold ``nf``, for each plane ``b`` from the sign plane down to
  0, for each ``sf``. The sign plane is fed inverted, so every lane always *adds* its popcount
  (popcount(XNOR(~x, w)) = popcount(XOR(x, w)); see ``MVUParams.row_constants``); planes are
  combined MSB first (Horner: ``acc = 2*acc + R_b`` at each later plane start), so no variable
  shifter or subtractor sits behind the tree.
* A = 1: the accumulator is reset to the constant ``D = -ceil(K/2)`` on the last cycle of each
  fold (a flip-flop synchronous set/reset, no LUT) and the output is ``2*S + (K & 1)`` (wiring).
* One enable (``~o.valid | o.ready``) stalls the compute pipeline; valid bits travel with the
  data, so idles and backpressure never lose or duplicate a beat. Accumulators wrap modulo
  ``2**acc_width``, which is exact because every final dot product fits (§5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.golden import arith
from hw.rtl.block import DerivedParts
from hw.rtl.pe import PEParams, xnor_popcount
from hw.validate import bounded_int, params_of

__all__ = ["BUFFER_STYLES", "MVUParams", "MatrixVectorUnit", "weights_to_bits"]


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
class MVUParams(DerivedParts):
    """FINN-style folded binary matrix-vector unit (docs/arithmetic.md §2, §4, §5).

:class:`MVUParams` holds the shape, weights and folding (``compute``: the golden dot products,
``rom_words`` / ``pack_input`` / ``unpack_output``: what the ports and ROM carry, ``create``:
the :class:`MatrixVectorUnit`).

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
            bounded_int(own, name, getattr(self, name), 1)
        bounded_int(own, "a_bits", self.a_bits, 1, arith.MAX_ACT_BITS)
        bounded_int(own, "pipeline", self.pipeline, 0)
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
    def cycles(self) -> int:
        """Steady-state cycles per MMV group of vectors (SF input beats): A * NF * SF (§5)."""
        return self.a_bits * self.nf * self.sf

    cycles_per_vector = cycles  # the name the MVU bench and the FPGA flow's reports use

    @property
    def acc_width(self) -> int:
        return arith.acc_width(self.k, self.a_bits)

    @property
    def in_width(self) -> int:
        return self.simd * self.a_bits * self.mmv

    @cached_property
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
            bounded_int("MVUParams", name, v, 1)
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
        return MatrixVectorUnit(self)




def _delay(m, sig, cycles, en, name, *, reset_less=False):
    """``sig`` delayed by ``cycles`` registers that load only while ``en``; ``reset_less`` for
    data whose valid bit travels in a separate (reset) delay."""
    for c in range(cycles):
        r = Signal.like(sig, name=f"{name}_d{c}", reset_less=reset_less)
        with m.If(en):
            m.d.sync += r.eq(sig)
        sig = r
    return sig


class MatrixVectorUnit(wiring.Component):
    """``o = W · x`` for each input vector, folded PE rows x SIMD columns per cycle.

    Ports:
      * ``i: In(stream.Signature(unsigned(SIMD*A*MMV)))`` — SF = K/SIMD beats per group of MMV
        vectors; beat ``sf`` holds element ``sf*SIMD+s`` of vector ``v`` at bits
        ``[(v*SIMD+s)*A, +A)`` (two's complement; A = 1: the bit, 1 <-> +1).
      * ``o: Out(stream.Signature(ArrayLayout(signed(acc_width), PE*MMV)))`` — NF = N/PE beats
        per group; lane ``v*PE+p`` of beat ``nf`` is row ``nf*PE+p`` of vector ``v``.
    """

    def __init__(self, params: MVUParams):
        self.params = params_of(self, params, MVUParams)
        super().__init__({
            "i": In(stream.Signature(unsigned(params.in_width))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(params.acc_width), params.pe * params.mmv))),
        })

    def elaborate(self, platform):
        m = Module()
        rport, full, full_clr = self._input_buffer(m)
        en, nf, wread, ctrl = self._issue(m, rport, full, full_clr)
        counts = self._lanes(m, en, rport, wread, ctrl)
        d, d_lane, r_lane = self._row_constants(m, en, nf)
        self._accumulate(m, en, ctrl, counts, d, d_lane, r_lane)
        return m

    def _input_buffer(self, m):
        """The ping-pong input buffer, one beat per cycle into the bank being loaded: returns
        its read port, the per-bank full bits and their clear (set by the issue side)."""
        p = self.params
        A, SF, SIMD, MMV = p.a_bits, p.sf, p.simd, p.mmv
        row_bits = SIMD * MMV
        attrs = {} if p.buffer == "auto" else {"ram_style": p.buffer}
        m.submodules.xbuf = xbuf = memory.Memory(shape=unsigned(A * row_bits), depth=2 * SF, init=[],
                                                 attrs=attrs)
        wport = xbuf.write_port()
        rport = xbuf.read_port()
        full = Signal(2)
        full_set = Signal(2)
        full_clr = Signal(2)
        wbank = Signal()
        wcnt = Signal(range(SF))
        m.d.comb += self.i.ready.eq(~full.bit_select(wbank, 1))
        # plane-major word: plane b holds bit b of every element, vector-major then element
        planes = [Cat(*[self.i.payload[(v * SIMD + s) * A + b] for v in range(MMV) for s in range(SIMD)])
                  for b in range(A)]
        m.d.comb += [
            wport.data.eq(Cat(*planes)),
            wport.addr.eq(Mux(wbank, SF + wcnt, wcnt)),
            wport.en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.i.valid & self.i.ready):
            with m.If(wcnt == SF - 1):
                m.d.sync += [wcnt.eq(0), wbank.eq(~wbank)]
                m.d.comb += full_set.eq(Mux(wbank, 0b10, 0b01))
            with m.Else():
                m.d.sync += wcnt.eq(wcnt + 1)
        m.d.sync += full.eq((full | full_set) & ~full_clr)
        return rport, full, full_clr

    def _issue(self, m, rport, full, full_clr):
        """The counters over (nf, plane, sf) of a full bank, the buffer and weight ROM reads, and
        the control bits that travel with the data to the popcounts (``ctrl``: the delayed
        copies and the fields the accumulators read). Returns (enable, nf, ROM read port, ctrl)."""
        p = self.params
        A, SF, NF, PE, SIMD = p.a_bits, p.sf, p.nf, p.pe, p.simd
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        rbank = Signal()
        sf = Signal(range(SF))
        plane = Signal(range(A), init=A - 1)
        nf = Signal(range(NF))
        wbase = Signal(range(max(1, NF * SF)))
        issue = Signal()
        m.d.comb += issue.eq(full.bit_select(rbank, 1) & en)

        m.submodules.wrom = wrom = memory.Memory(shape=unsigned(PE * SIMD), depth=NF * SF,
                                                 init=p.rom_words())
        wread = wrom.read_port()
        m.d.comb += [
            rport.addr.eq(Mux(rbank, SF + sf, sf)),
            rport.en.eq(en),
            wread.addr.eq(wbase + sf),
            wread.en.eq(en),
        ]
        last_sf = sf == SF - 1
        last_plane = plane == 0
        last_nf = nf == NF - 1
        with m.If(issue):
            m.d.sync += sf.eq(Mux(last_sf, 0, sf + 1))
            with m.If(last_sf):
                m.d.sync += plane.eq(Mux(last_plane, A - 1, plane - 1))
                with m.If(last_plane):
                    m.d.sync += [nf.eq(Mux(last_nf, 0, nf + 1)),
                                 wbase.eq(Mux(last_nf, 0, wbase + SF))]
                    with m.If(last_nf):
                        m.d.sync += rbank.eq(~rbank)
                        m.d.comb += full_clr.eq(Mux(rbank, 0b10, 0b01))

        # control travelling with the data: stage 1 = buffer/ROM data, stage 1+P = popcounts
        ctrl0 = Cat(issue, sf == 0, last_sf & last_plane, plane == A - 1, plane)
        ctrl1 = _delay(m, ctrl0, 2, en, "ctrl")
        ctrlx = _delay(m, ctrl0, 1, en, "ctrlx")
        ctrlP = _delay(m, ctrl1, p.pipeline, en, "ctrlp")
        valid_a, plane_start_a, last_a, plane_a = ctrlP[0], ctrlP[1], ctrlP[2], ctrlP[4:]
        fold_start_a = plane_start_a & ctrlP[3]  # first sf of the sign plane
        ctrl = SimpleNamespace(x=ctrlx, valid=valid_a, plane_start=plane_start_a, last=last_a,
                               plane=plane_a, fold_start=fold_start_a)
        return en, nf, wread, ctrl

    def _lanes(self, m, en, rport, wread, ctrl):
        """The PE·MMV XNOR-popcount lanes over the registered buffer word (the sign plane
        inverted) and weight word; returns their counts."""
        p = self.params
        A, PE, SIMD, MMV = p.a_bits, p.pe, p.simd, p.mmv
        row_bits = SIMD * MMV
        ctrlx = ctrl.x
        xword0 = rport.data.word_select(ctrlx[4:], row_bits) if A > 1 else rport.data
        if A > 1:  # the sign plane counts XOR: feed it inverted
            xword0 = xword0 ^ (ctrlx[3].replicate(row_bits))
        xword = _delay(m, xword0, 1, en, "xw", reset_less=True)
        wdata = _delay(m, wread.data, 1, en, "wd", reset_less=True)
        counts = []
        for v in range(MMV):
            for q in range(PE):
                counts.append(xnor_popcount(
                    m, xword[v * SIMD:(v + 1) * SIMD], wdata[q * SIMD:(q + 1) * SIMD],
                    simd=SIMD, pipeline=p.pipeline, en=en, name=f"pc_v{v}_p{q}"))
        return counts

    def _row_constants(self, m, en, nf):
        """Per lane the row constants (D, R) of the fold being accumulated: constants when every
        row shares them, else a small ROM read one stage ahead. Returns (D per row, D and R per
        lane)."""
        p = self.params
        A, NF, PE = p.a_bits, p.nf, p.pe
        d, r = p.row_constants()
        acc_w = p.acc_width - 1 if A == 1 else p.acc_width
        r_w = max(A - 1, 1)
        d_rows = d.reshape(NF, PE)
        r_rows = r.reshape(NF, PE)
        if np.all(d == d[0]) and np.all(r == r[0]):
            d_lane = [C(int(d[0]), signed(acc_w))] * PE
            r_lane = [C(int(r[0]), r_w)] * PE
        else:
            words = []
            for f in range(NF):
                word = 0
                for q in range(PE):
                    word |= ((int(d_rows[f, q]) & ((1 << acc_w) - 1)) |
                             (int(r_rows[f, q]) << acc_w)) << (q * (acc_w + r_w))
                words.append(word)
            m.submodules.crom = crom = memory.Memory(shape=unsigned(PE * (acc_w + r_w)), depth=NF,
                                                     init=words)
            cread = crom.read_port()
            # address one stage ahead of the accumulator so the data lines up with it
            nf_at = _delay(m, nf, p.pipeline + 1, en, "nfc")  # +1: the registered ROM/buffer data stage
            m.d.comb += [cread.addr.eq(nf_at), cread.en.eq(en)]
            d_lane, r_lane = [], []
            for q in range(PE):
                base = q * (acc_w + r_w)
                d_lane.append(cread.data[base:base + acc_w].as_signed())
                r_lane.append(cread.data[base + acc_w:base + acc_w + r_w])
        return d, d_lane, r_lane

    def _accumulate(self, m, en, ctrl, counts, d, d_lane, r_lane):
        """Per lane the accumulator (A = 1: reloaded with D at each fold end; A >= 2: Horner
        over the planes) and the output register, then the output stream."""
        p = self.params
        A, PE = p.a_bits, p.pe
        valid_a, plane_start_a, last_a = ctrl.valid, ctrl.plane_start, ctrl.last
        plane_a, fold_start_a = ctrl.plane, ctrl.fold_start
        acc_w = p.acc_width - 1 if A == 1 else p.acc_width
        out_valid = Signal()
        step = Signal()      # an accumulation cycle
        fold_end = Signal()  # ... that completes a fold
        m.d.comb += [step.eq(en & valid_a), fold_end.eq(en & valid_a & last_a)]
        outs = []
        for lane, cnt in enumerate(counts):
            q = lane % PE
            if A == 1:
                acc = Signal(signed(acc_w), init=int(d[0]), name=f"acc{lane}")
                s = Signal(signed(acc_w), name=f"sum{lane}")
                m.d.comb += s.eq(acc + cnt)
                out = Signal(signed(p.acc_width), name=f"out{lane}", reset_less=True)  # under out_valid
                # reload the constant with priority over the enable: the flip-flops' own
                # synchronous set/reset (ECP5 LSR), not a LUT multiplexer per bit
                with m.If(fold_end):
                    m.d.sync += acc.eq(d_lane[q])
                with m.Elif(step):
                    m.d.sync += acc.eq(s)
                with m.If(fold_end):
                    m.d.sync += out.eq(Cat(C(p.k & 1, 1), s).as_signed())
            else:
                acc = Signal(signed(acc_w), name=f"acc{lane}")
                s = Signal(signed(acc_w), name=f"sum{lane}")
                r_b = r_lane[q].bit_select(plane_a, 1) if A > 2 else r_lane[q][0]
                src = Mux(fold_start_a, d_lane[q], Mux(plane_start_a, Cat(r_b, acc[:-1]), acc))
                m.d.comb += s.eq(src + cnt)
                out = Signal(signed(p.acc_width), name=f"out{lane}", reset_less=True)  # under out_valid
                with m.If(en & valid_a):
                    m.d.sync += acc.eq(s)
                    with m.If(last_a):
                        m.d.sync += out.eq(s)
            outs.append(out)
        with m.If(en):
            m.d.sync += out_valid.eq(valid_a & last_a)
        m.d.comb += [self.o.valid.eq(out_valid)]
        for lane, out in enumerate(outs):
            m.d.comb += self.o.payload[lane].eq(out)
