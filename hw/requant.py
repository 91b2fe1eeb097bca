"""LSQ activation quantizer unit: accumulators -> next layer's activation codes (§7, §8).

Per row ``n`` (rows cycle through ``n / lanes`` beats per vector)::

    z    = sum_t acc_t * M_t[n] + B[n]
    code = clamp((z + 2**(S-1)) >> S, -2**(A-1), 2**(A-1) - 1)       out_bits >= 2
    bit  = z >= 0                                                     out_bits == 1

Two register stages: the products (so the multipliers sit alone between registers), then the
rounded and clamped codes. ``M``/``B`` come from a small ROM indexed by the beat within the
vector when they differ between the rows of a lane, from constants otherwise.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import C, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.params import RequantParams

__all__ = ["Requantizer"]


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
        m_rows = p.m.reshape(T, NF, L)   # [t, beat, lane]
        b_rows = p.b.reshape(NF, L)
        # per lane: are M and B the same for every beat? then a constant, else ROM fields
        vary = NF > 1 and not (np.all(m_rows == m_rows[:, :1, :]) and np.all(b_rows == b_rows[:1, :]))
        mult = [[None] * T for _ in range(L)]
        bias = [None] * L
        if not vary:
            for lane in range(L):
                for t in range(T):
                    mult[lane][t] = C(int(m_rows[t, 0, lane]), unsigned(mb))
                bias[lane] = C(int(b_rows[0, lane]), signed(bw))
        else:
            field = T * mb + bw
            words = []
            for beat in range(NF):
                word = 0
                for lane in range(L):
                    f = 0
                    for t in range(T):
                        f |= int(m_rows[t, beat, lane]) << (t * mb)
                    f |= (int(b_rows[beat, lane]) & ((1 << bw) - 1)) << (T * mb)
                    word |= f << (lane * field)
                words.append(word)
            m.submodules.crom = crom = memory.Memory(shape=unsigned(L * field), depth=NF, init=words)
            cread = crom.read_port()
            beat = Signal(range(NF))
            beat_next = Signal(range(NF))
            m.d.comb += beat_next.eq(Mux(accept, Mux(beat == NF - 1, 0, beat + 1), beat))
            m.d.sync += beat.eq(beat_next)
            # read the *next* beat's row so its constants are registered when it arrives
            m.d.comb += [cread.addr.eq(beat_next), cread.en.eq(1)]
            for lane in range(L):
                base = lane * field
                for t in range(T):
                    mult[lane][t] = cread.data[base + t * mb: base + (t + 1) * mb]
                bias[lane] = cread.data[base + T * mb: base + field].as_signed()

        # ---------------- stage 1: products ----------------
        v1 = Signal()
        prods = []
        for lane in range(L):
            row = []
            for t in range(T):
                pr = Signal(signed(p.acc_width + mb + 1), name=f"prod{lane}_{t}")
                with m.If(en):
                    m.d.sync += pr.eq(self.i.payload[lane][t] * mult[lane][t])
                row.append(pr)
            b1 = Signal(signed(bw), name=f"bias{lane}")
            with m.If(en):
                m.d.sync += b1.eq(bias[lane])
            prods.append((row, b1))
        with m.If(en):
            m.d.sync += v1.eq(accept)

        # ---------------- stage 2: sum, round half up, clamp ----------------
        v2 = Signal()
        lo, hi = -(1 << (p.out_bits - 1)), (1 << (p.out_bits - 1)) - 1
        for lane, (row, b1) in enumerate(prods):
            z = Signal(signed(p.z_width), name=f"z{lane}")
            total = b1
            for pr in row:
                total = total + pr
            m.d.comb += z.eq(total)
            out = Signal(self.o.payload[lane].shape(), name=f"q{lane}")
            if p.out_bits == 1:
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
        with m.If(en):
            m.d.sync += v2.eq(v1)
        m.d.comb += self.o.valid.eq(v2)
        return m
