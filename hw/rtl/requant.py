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

import numpy as np
from amaranth.hdl import C, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.rtl.params import RequantParams

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
