"""Attention probabilities: integer softmax (docs/arithmetic.md §13) and Heaviside (§14) units.

Both take a row of ``length`` scores as a stream of {s, valid} beats (key j of the row in beat
j; ``valid`` = the key mask) and emit ``length`` probability codes (unsigned, 0 … hi) in the
same order. Golden models: :class:`hw.golden.softmax.Softmax` / ``Heaviside`` ``.compute``.

:class:`SoftmaxUnit` is four decoupled stages around ``banks`` row buffers, so consecutive
rows overlap:
* **IN**: scores (and mask bits) into the bank, running max over the valid keys;
* **EXP**: per key δ = m − s, t = min((δ·M + 2^(S−1)) >> S, t_max), E = table[t mod 2^G] >>
  (t >> G) (ROM + shifter; 0 for a masked key), E back into the bank, Z = Σ E;
* **DIV**: R = C // Z on the bit-serial divider (one quotient bit per cycle; Z is 0 only when
  no key is valid, and then every E, hence every p, is 0 whatever R is);
* **OUT**: p = min((E·R + 2^(P−1)) >> P, hi), a stall-able three-register pipeline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.golden.arith import signed_range
from hw.golden.softmax import Heaviside, Softmax
from hw.errors import BinbertError
from hw.validate import int_value, positive_int, silence
from hw.rtl.seqarith import SeqDivider

__all__ = ["ProbsParams", "SoftmaxUnit", "HeavisideUnit", "score_layout"]

EXP_LATENCY = 3   # EXP pass: bank read, t, table read (+ the E write)
OUT_LATENCY = 3   # OUT pass: bank read, E·R, round/min


def score_layout(score_bits: int) -> data.StructLayout:
    return data.StructLayout({"s": signed(score_bits), "valid": unsigned(1)})


@dataclass(frozen=True, kw_only=True, eq=False)
class ProbsParams:
    """A golden ``Softmax`` or ``Heaviside`` over rows of ``length`` keys; ``banks`` row
    buffers for the softmax (None: enough for one row per :attr:`cycles`)."""

    probs: Softmax | Heaviside
    length: int
    banks: int | None = None
    div_steps: int = 2   # quotient bits per cycle of the Z reciprocal divider

    def __post_init__(self):
        o = "ProbsParams"
        int_value(self.div_steps, f"{o}: div_steps={self.div_steps!r} must be an integer in 1..4", lo=1, hi=4)
        if not isinstance(self.probs, (Softmax, Heaviside)):
            raise BinbertError(f"{o}: probs must be a hw.golden.softmax Softmax or Heaviside, "
                               f"got {type(self.probs).__name__}")
        positive_int(o, "length", self.length)
        if self.banks is None:
            object.__setattr__(self, "banks", self.auto_banks)
        else:
            positive_int(o, "banks", self.banks)

    @property
    def is_softmax(self) -> bool:
        return isinstance(self.probs, Softmax)

    @property
    def score_bits(self) -> int:
        return self.probs.score_bits

    @property
    def p_bits(self) -> int:
        """Unsigned width of a probability code (0 … hi)."""
        return max(1, self.probs.hi.bit_length())

    @property
    def z_bits(self) -> int:
        return self.probs.exp_bits + 1 + (self.length - 1).bit_length() if self.is_softmax else 0

    @property
    def div_cycles(self) -> int:
        return -(-max(1, self.probs.recip_bits) // self.div_steps) + 1 if self.is_softmax else 0

    @property
    def stage_cycles(self) -> dict[str, int]:
        if not self.is_softmax:
            return {"in": self.length}
        # EXP: start, L reads, the drain, and the hand-over of Z to the divider
        return {"in": self.length, "exp": self.length + EXP_LATENCY + 2, "div": self.div_cycles,
                "out": self.length}

    @property
    def latency(self) -> int:
        """Cycles from a row's first score beat to its last probability beat (no stalls)."""
        if not self.is_softmax:
            return self.length - 1
        s = self.stage_cycles
        return s["in"] + 1 + s["exp"] + s["div"] + s["out"] + OUT_LATENCY - 1

    @property
    def auto_banks(self) -> int:
        if not self.is_softmax:
            return 1
        return max(2, math.ceil(self.latency / max(self.stage_cycles.values())))

    @property
    def cycles(self) -> int:
        """Steady-state cycles per row of ``length`` scores: the busiest stage, or the row
        buffers when too few (Heaviside: one score per cycle)."""
        if not self.is_softmax:
            return self.length
        return max(max(self.stage_cycles.values()), math.ceil(self.latency / self.banks))

    def compute(self, scores, valid) -> np.ndarray:
        return self.probs.compute(scores, valid)

    def create(self):
        return SoftmaxUnit(self) if self.is_softmax else HeavisideUnit(self)



def _nxt(x, top):
    """x + 1, wrapping to 0 after top - 1 (a counter over 0 .. top - 1)."""
    return Mux(x == top - 1, 0, x + 1)


class _ProbsBase(wiring.Component):
    def __init__(self, params: ProbsParams, want_softmax: bool):
        if not isinstance(params, ProbsParams) or params.is_softmax != want_softmax:
            silence(self)
            raise BinbertError(f"{type(self).__name__}: params must be ProbsParams of a "
                               f"{'Softmax' if want_softmax else 'Heaviside'}")
        self.params = params
        super().__init__({
            "i": In(stream.Signature(score_layout(params.score_bits))),
            "o": Out(stream.Signature(unsigned(params.p_bits))),
        })


class HeavisideUnit(_ProbsBase):
    """p = 1 if s > 0 and the key is valid, else 0 (§14); combinational, no latency."""

    def __init__(self, params: ProbsParams):
        super().__init__(params, False)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                     self.o.payload.eq((self.i.payload.s > 0) & self.i.payload.valid)]
        return m


class SoftmaxUnit(_ProbsBase):
    """Integer softmax over rows of ``length`` keys; see the module docstring."""

    def __init__(self, params: ProbsParams):
        super().__init__(params, True)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        sm = p.probs
        L, banks = p.length, p.banks
        sb = p.score_bits
        eb = sm.exp_bits
        g = sm.frac_bits

        sbuf = memory.Memory(shape=score_layout(sb), depth=banks * L, init=[])
        ebuf = memory.Memory(shape=unsigned(eb + 1), depth=banks * L, init=[])
        table = memory.Memory(shape=unsigned(eb + 1), depth=1 << g, init=[int(x) for x in sm.table])
        m.submodules.sbuf, m.submodules.ebuf, m.submodules.table = sbuf, ebuf, table
        s_wr, s_rd = sbuf.write_port(), sbuf.read_port(domain="sync")
        e_wr, e_rd = ebuf.write_port(), ebuf.read_port(domain="sync")
        t_rd = table.read_port(domain="sync")

        occupied = Signal(range(banks + 1))
        inc, dec = Signal(), Signal()
        m.d.sync += occupied.eq(occupied + inc - dec)

        hand_valid, hand_max = self._scores_in(m, s_wr, occupied, inc)
        z_valid, z_hold = self._exponentials(m, s_rd, e_wr, t_rd, hand_valid, hand_max)
        div = self._reciprocal(m, z_valid, z_hold)
        self._probabilities(m, e_rd, div, dec)
        return m

    def _scores_in(self, m, s_wr, occupied, inc):
        """IN: a row's scores and mask bits into a free bank, the running max over the valid
        keys; returns the hand-over register (valid, max) the EXP pass takes."""
        p = self.params
        L, banks = p.length, p.banks
        sb = p.score_bits
        lowest = signed_range(sb)[0]
        in_bank = Signal(range(banks))
        in_j = Signal(range(L))
        run_max = Signal(signed(sb), init=lowest)
        hand_valid = Signal()
        hand_max = Signal(signed(sb))
        last_in = in_j == L - 1
        m.d.comb += self.i.ready.eq(((in_j != 0) | (occupied < banks)) & (~last_in | ~hand_valid))
        take = self.i.valid & self.i.ready
        s_in = self.i.payload.s
        new_max = Signal(signed(sb))
        m.d.comb += new_max.eq(Mux(self.i.payload.valid & (s_in > run_max), s_in, run_max))
        m.d.comb += [s_wr.addr.eq(in_bank * L + in_j), s_wr.data.eq(self.i.payload), s_wr.en.eq(take)]
        with m.If(take):
            m.d.comb += inc.eq(in_j == 0)
            with m.If(last_in):
                m.d.sync += [in_j.eq(0), run_max.eq(lowest), hand_valid.eq(1), hand_max.eq(new_max),
                             in_bank.eq(_nxt(in_bank, banks))]
            with m.Else():
                m.d.sync += [in_j.eq(in_j + 1), run_max.eq(new_max)]
        return hand_valid, hand_max

    def _exponentials(self, m, s_rd, e_wr, t_rd, hand_valid, hand_max):
        """EXP: per key δ = max − s, t = min((δ·M + 2^(S−1)) >> S, t_max), E = table[t mod 2^G]
        >> (t >> G) (0 for a masked key) back into the bank, Z = Σ E; returns the Z hand-over
        register (valid, Z) the divider takes."""
        p = self.params
        sm = p.probs
        L, banks = p.length, p.banks
        sb = p.score_bits
        eb = sm.exp_bits
        g = sm.frac_bits
        ex_bank = Signal(range(banks))
        ex_j = Signal(range(L))
        ex_busy = Signal()      # from the start of a pass until its Z is handed on
        ex_issuing = Signal()   # while bank reads are issued
        ex_max = Signal(signed(sb))
        z_acc = Signal(unsigned(p.z_bits))
        z_valid = Signal()      # Z waiting for the divider
        z_hold = Signal(unsigned(p.z_bits))
        start_ex = hand_valid & ~ex_busy & ~z_valid
        with m.If(start_ex):
            m.d.sync += [ex_busy.eq(1), ex_issuing.eq(1), ex_j.eq(0), ex_max.eq(hand_max), z_acc.eq(0)]
            m.d.sync += hand_valid.eq(0)  # (a new last score cannot land while hand_valid is set)
        # c0: bank read
        v1, v2, v3 = Signal(), Signal(), Signal()
        j1, j2, j3 = Signal(range(L)), Signal(range(L)), Signal(range(L))
        m.d.comb += [s_rd.addr.eq(ex_bank * L + ex_j), s_rd.en.eq(1)]
        ex_last = Signal()
        with m.If(ex_issuing):
            with m.If(ex_j == L - 1):
                m.d.sync += ex_issuing.eq(0)
            with m.Else():
                m.d.sync += ex_j.eq(ex_j + 1)
        m.d.sync += [v1.eq(ex_issuing), j1.eq(ex_j), v2.eq(v1), j2.eq(j1), v3.eq(v2), j3.eq(j2),
                     ex_last.eq(ex_issuing & (ex_j == L - 1))]
        # c1: t from δ
        s1 = s_rd.data
        delta = Signal(unsigned(sb + 1))
        m.d.comb += delta.eq(ex_max - s1.s)
        t_full = Signal(unsigned(sb + 1 + sm.m_bits))
        m.d.comb += t_full.eq((delta * sm.mult + (1 << (sm.shift - 1))) >> sm.shift)
        t2 = Signal(unsigned(sm.t_max.bit_length()))
        valid2 = Signal()
        m.d.sync += [t2.eq(Mux(t_full > sm.t_max, sm.t_max, t_full)), valid2.eq(s1.valid)]
        # c2: table read, integer part of t kept for the shift
        m.d.comb += [t_rd.addr.eq(t2[:g]), t_rd.en.eq(1)]
        sh3 = Signal(unsigned(max(1, (sm.t_max >> g).bit_length())))
        valid3 = Signal()
        m.d.sync += [sh3.eq(t2 >> g), valid3.eq(valid2)]
        # c3: E = table >> (t >> G), masked; write back, accumulate Z
        e3 = Signal(unsigned(eb + 1))
        m.d.comb += e3.eq(Mux(valid3, t_rd.data >> sh3, 0))
        last3 = Signal()
        last2 = Signal()
        m.d.sync += [last2.eq(ex_last), last3.eq(last2)]
        # bank of the pass being drained (ex_bank advances only when its last E is written)
        m.d.comb += [e_wr.addr.eq(ex_bank * L + j3), e_wr.data.eq(e3), e_wr.en.eq(v3)]
        with m.If(v3):
            m.d.sync += z_acc.eq(z_acc + e3)
            with m.If(last3):
                m.d.sync += [z_valid.eq(1), z_hold.eq(z_acc + e3), ex_bank.eq(_nxt(ex_bank, banks)),
                             ex_busy.eq(0)]
        return z_valid, z_hold

    def _reciprocal(self, m, z_valid, z_hold):
        """DIV: R = C // Z on the bit-serial divider (Z = 0 only when no key is valid)."""
        p = self.params
        sm = p.probs
        eb = sm.exp_bits
        m.submodules.div = div = SeqDivider(dividend_bits=sm.recip_num.bit_length(),
                                            divisor_bits=p.z_bits, q_bits=max(1, sm.recip_bits),
                                            steps=p.div_steps)
        m.d.comb += [div.i.valid.eq(z_valid), div.i.payload.n.eq(sm.recip_num),
                     div.i.payload.d.eq(Mux(z_hold == 0, 1 << eb, z_hold))]
        with m.If(div.i.valid & div.i.ready):
            m.d.sync += z_valid.eq(0)
        return div

    def _probabilities(self, m, e_rd, div, dec):
        """OUT: p = min((E·R + 2^(P−1)) >> P, hi) per key, a stall-able three-register pipeline;
        frees the bank after the row's last probability."""
        p = self.params
        sm = p.probs
        L, banks = p.length, p.banks
        eb = sm.exp_bits
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        out_bank = Signal(range(banks))
        out_j = Signal(range(L))
        first = out_j == 0
        issue = Signal()
        r_held = Signal(unsigned(max(1, sm.recip_bits)))
        r_now = Signal(unsigned(max(1, sm.recip_bits)))
        m.d.comb += [issue.eq(en & (~first | div.o.valid)),
                     r_now.eq(Mux(first, div.o.payload.q, r_held)),
                     div.o.ready.eq(en & first),
                     e_rd.addr.eq(out_bank * L + out_j), e_rd.en.eq(en)]
        with m.If(issue & first):
            m.d.sync += r_held.eq(div.o.payload.q)
        with m.If(issue):
            with m.If(out_j == L - 1):
                m.d.sync += [out_j.eq(0), out_bank.eq(_nxt(out_bank, banks))]
            with m.Else():
                m.d.sync += out_j.eq(out_j + 1)
        o1, o2, o3 = Signal(), Signal(), Signal()
        l1, l2, l3 = Signal(), Signal(), Signal()
        r1 = Signal.like(r_held)
        prod = Signal(unsigned(eb + 1 + max(1, sm.recip_bits)))
        pcode = Signal(unsigned(p.p_bits))
        with m.If(en):
            m.d.sync += [o1.eq(issue), l1.eq(out_j == L - 1), r1.eq(r_now),
                         o2.eq(o1), l2.eq(l1), prod.eq(e_rd.data * r1),
                         o3.eq(o2), l3.eq(l2)]
            rounded = (prod + (1 << (sm.recip_shift - 1))) >> sm.recip_shift
            m.d.sync += pcode.eq(Mux(rounded > sm.hi, sm.hi, rounded))
        m.d.comb += [self.o.valid.eq(o3), self.o.payload.eq(pcode), dec.eq(self.o.valid & self.o.ready & l3)]
