"""FINN-style folded binary matrix-vector unit (docs/arithmetic.md §2, §4, §5).

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

import numpy as np
from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.rtl.params import MVUParams
from hw.rtl.pe import xnor_popcount

__all__ = ["MatrixVectorUnit"]


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
        if not isinstance(params, MVUParams):
            self._MustUse__silence = True
            raise BinbertError(f"MatrixVectorUnit: params must be MVUParams, got {type(params).__name__}")
        self.params = params
        super().__init__({
            "i": In(stream.Signature(unsigned(params.in_width))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(params.acc_width), params.pe * params.mmv))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        A, SF, NF, PE, SIMD, MMV = p.a_bits, p.sf, p.nf, p.pe, p.simd, p.mmv
        row_bits = SIMD * MMV
        lanes = PE * MMV

        # ---------------- input side: ping-pong buffer, one beat per cycle ----------------
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

        # ---------------- issue: counters over (nf, plane, sf) ----------------
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
        plane1 = ctrl1[4:]
        ctrlP = _delay(m, ctrl1, p.pipeline, en, "ctrlp")
        valid_a, plane_start_a, last_a, plane_a = ctrlP[0], ctrlP[1], ctrlP[2], ctrlP[4:]
        fold_start_a = plane_start_a & ctrlP[3]  # first sf of the sign plane

        # ---------------- lanes ----------------
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

        # ---------------- per-row constants (D, R) ----------------
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

        # ---------------- accumulators and the output register ----------------
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
        return m
