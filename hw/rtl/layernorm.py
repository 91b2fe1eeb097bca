"""Integer LayerNorm unit (docs/arithmetic.md §17), one token at a time, streaming.

Golden model: :class:`hw.golden.layernorm.LayerNorm` (``params.ln.compute``). The unit is three
decoupled stages around a token buffer of ``slots`` tokens, so consecutive tokens overlap:

* **A (input pass)**: ``n / lanes`` beats in; each element is written to the buffer and Σv, Σv²
  accumulate.
* **B (per-token scalars)**, a chain of bit-serial units (hw/rtl/seqarith.py), each one token at a
  time: μ = (2·Σv·2^E + n) // 2n (sign handled by dividing ~a and inverting the quotient: for
  a < 0, floor(a/b) = ~(~a // b)); Σd² = Σv²·2^2E − μ·(2·Σv·2^E − n·μ) (exact, so no second pass
  over the buffer); var = Σd² // n; σ = max(isqrt(var + eps), 1); R = 2^P // σ.
* **C (output pass)**: re-reads the buffer: d = v·2^E − μ, u = (d·R + 2^(Sn−1)) >> Sn,
  y = clamp((u·γ + β + 2^(So−1)) >> So); a three-register pipeline that stalls on backpressure.

Steady state one token per :attr:`LayerNormUnitParams.cycles` cycles.

``multiplier="shared"`` builds :class:`SharedLayerNormUnit` instead: the same op, one token at a
time, every product on one bit-serial :class:`hw.rtl.seqarith.SeqMultiplier` and no full-width
multiplier at all (the parallel unit needs 2·lanes + 3 of them, up to 22 x 37 bits: 11 iCE40
DSPs per LayerNorm), at ~3 products per feature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.golden.arith import signed_range
from hw.golden.layernorm import LayerNorm
from hw.errors import BinbertError
from hw.validate import int_value, params_of, positive_int, silence
from hw.rtl.seqarith import SeqDivider, SeqMultiplier, SeqSqrt, quotient_bits

__all__ = ["LayerNormUnitParams", "LayerNormUnit", "SharedLayerNormUnit", "AddNormParams", "AddNorm",
           "shared_or_parallel"]

C_LATENCY = 4  # registers of the output pass: buffer read, d, d·R, u·γ + β (+ the output register)
MULTIPLIERS = ("parallel", "shared")
SHARED_OVERHEAD = 2  # the shared unit's hand-over cycles into the mean and var dividers


@dataclass(frozen=True, kw_only=True, eq=False)
class LayerNormUnitParams:
    """The golden LayerNorm op plus the unit's folding: ``lanes`` features per beat and a
    buffer of ``slots`` tokens (None: just enough for one token per :attr:`cycles`)."""

    ln: LayerNorm
    lanes: int = 1
    slots: int | None = None
    div_steps: int = 2   # quotient bits per cycle of the three dividers (radix 2^div_steps)
    # "parallel": 2·lanes + 1 full-width multipliers, one token per busiest stage (above);
    # "shared": one bit-serial multiplier (hw.rtl.seqarith.SeqMultiplier) for every product, one
    # token at a time: no DSP and a few hundred LUTs, for parts as small as the iCE40 UP5K
    multiplier: str = "parallel"
    mul_steps: int = 2   # multiplier bits per cycle of the shared multiplier

    def __post_init__(self):
        o = "LayerNormUnitParams"
        for name in ("div_steps", "mul_steps"):
            v = getattr(self, name)
            int_value(v, f"{o}: {name}={v!r} must be an integer in 1..4", lo=1, hi=4)
        if self.multiplier not in MULTIPLIERS:
            raise BinbertError(f"{o}: multiplier={self.multiplier!r} must be one of "
                               f"{', '.join(MULTIPLIERS)}")
        if self.shared and self.slots not in (None, 1):
            raise BinbertError(f"{o}: slots={self.slots!r}: a shared-multiplier unit buffers "
                               f"one token (slots 1 or null)")
        if not isinstance(self.ln, LayerNorm):
            raise BinbertError(f"{o}: ln must be a hw.golden.layernorm.LayerNorm, got {type(self.ln).__name__}")
        positive_int(o, "lanes", self.lanes)
        if self.ln.n % self.lanes:
            raise BinbertError(f"{o}: lanes={self.lanes} does not divide n={self.ln.n}")
        if self.slots is None:
            object.__setattr__(self, "slots", 1 if self.shared else self.auto_slots)
        else:
            positive_int(o, "slots", self.slots)

    # ---- golden ---------------------------------------------------------------------------
    def compute(self, v) -> np.ndarray:
        return self.ln.compute(v)

    def create(self):
        return SharedLayerNormUnit(self) if self.shared else LayerNormUnit(self)

    @property
    def shared(self) -> bool:
        return self.multiplier == "shared"

    # ---- widths of the scalar chain -------------------------------------------------------
    @property
    def n(self) -> int:
        return self.ln.n

    @property
    def beats(self) -> int:
        return self.ln.n // self.lanes

    @property
    def sumsq_acc_bits(self) -> int:
        """Unsigned width of Σv² (n values of at most 2^(2(in_bits-1)))."""
        return (self.n << (2 * (self.ln.in_bits - 1))).bit_length()

    @property
    def mean_dividend_bits(self) -> int:
        """|2·Σv·2^E + n| (or its complement) fits this many unsigned bits."""
        lo, hi = signed_range(self.ln.in_bits)
        e = self.ln.extra_bits
        return max(abs((2 * self.n * lo << e) + self.n) - 1, (2 * self.n * hi << e) + self.n).bit_length()

    @property
    def mean_q_bits(self) -> int:
        return quotient_bits((1 << self.mean_dividend_bits) - 1, 2 * self.n)

    @property
    def mu_bits(self) -> int:
        """Signed width of μ (units 2^-E of v: inside the input range times 2^E)."""
        lo, hi = signed_range(self.ln.in_bits)
        e = self.ln.extra_bits
        return max((lo << e).bit_length(), (hi << e).bit_length()) + 1

    @property
    def max_abs_d(self) -> int:
        """|d| = |v·2^E − μ| <= (max v − min v)·2^E: μ rounds a mean of the v·2^E."""
        lo, hi = signed_range(self.ln.in_bits)
        return (hi - lo) << self.ln.extra_bits

    @property
    def sumd2_bits(self) -> int:
        """Unsigned width of Σd² (var's dividend)."""
        return (self.n * self.max_abs_d ** 2).bit_length()

    @property
    def var_q_bits(self) -> int:
        return quotient_bits((1 << self.sumd2_bits) - 1, self.n)

    @property
    def var_eps_bits(self) -> int:
        return ((1 << self.var_q_bits) - 1 + self.ln.eps).bit_length()

    @property
    def std_bits(self) -> int:
        return (self.var_eps_bits + 1) // 2

    @property
    def recip_q_bits(self) -> int:
        return self.ln.recip_shift + 1

    # shared multiplier: a = d, R or u times b = d, d or gamma. The cycles follow b, so the
    # wide R (recip_shift + 1 bits) goes to a
    @property
    def mul_a_bits(self) -> int:
        return max(self.ln.d_bits, self.ln.recip_bits + 1, self.ln.norm_bits)

    @property
    def mul_b_bits(self) -> int:
        return max(self.ln.d_bits, self.ln.gamma_bits)

    @property
    def mul_cycles(self) -> int:
        """FSM cycles per shared product: issue, ceil(b/steps) busy, take the result."""
        return -(-self.mul_b_bits // self.mul_steps) + 2

    @property
    def stage_cycles(self) -> dict[str, int]:
        """Cycles each stage spends on one token (bit-serial units: bits + 1). Shared: the
        passes over the buffer are a read cycle plus products per feature (variance: d·d;
        output: d·R, then u·gamma) and an output cycle per beat."""
        def div(q_bits):
            return -(-q_bits // self.div_steps) + 1
        s = {"input": self.beats, "mean": div(self.mean_q_bits), "var": div(self.var_q_bits),
             "sqrt": self.std_bits + 1, "recip": div(self.recip_q_bits), "output": self.beats}
        if self.shared:
            s["sumsq"] = self.n * self.mul_cycles + self.beats - 1
            s["output"] = self.n * (2 * self.mul_cycles - 1) + 2 * self.beats - 1
        return s

    @property
    def latency(self) -> int:
        """Cycles from a token's first input beat to its last output beat (no stalls)."""
        s = self.stage_cycles
        if self.shared:  # one stage after another, a hand-over cycle between them
            return sum(s.values()) + SHARED_OVERHEAD
        return s["input"] + 3 + s["mean"] + s["var"] + s["sqrt"] + s["recip"] + s["output"] + C_LATENCY

    @property
    def auto_slots(self) -> int:
        """Buffer slots so that the buffer never limits throughput."""
        busiest = max(self.stage_cycles.values())
        # a slot is held from the first input beat to the last output beat
        return max(2, math.ceil(self.latency / busiest))

    @property
    def cycles(self) -> int:
        """Steady-state cycles per token: the busiest stage, or the buffer when too small
        (shared: the whole latency, one token at a time)."""
        if self.shared:
            return self.latency
        return max(max(self.stage_cycles.values()), math.ceil(self.latency / self.slots))

    cycles_per_token = cycles  # the name the LayerNorm bench reports

    @property
    def buffer_bits(self) -> int:
        return self.slots * self.n * self.ln.in_bits


def _ports(p: "LayerNormUnitParams") -> dict:
    """Both units' ports: ``lanes`` features per beat in and out."""
    return {"i": In(stream.Signature(data.ArrayLayout(signed(p.ln.in_bits), p.lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(p.ln.out_bits), p.lanes)))}


def _gamma_beta(ln: LayerNorm, lanes: int) -> memory.Memory:
    """γ and β of each beat's lanes, one word per beat."""
    return memory.Memory(
        shape=data.StructLayout({"g": data.ArrayLayout(signed(ln.gamma_bits), lanes),
                                 "b": data.ArrayLayout(signed(ln.beta_bits), lanes)}),
        depth=ln.n // lanes,
        init=[{"g": [int(x) for x in ln.gamma[b * lanes:(b + 1) * lanes]],
               "b": [int(x) for x in ln.beta[b * lanes:(b + 1) * lanes]]} for b in range(ln.n // lanes)])


def _var_to_recip(m: Module, p: "LayerNormUnitParams") -> tuple[SeqDivider, SeqDivider]:
    """The scalar chain after Σd²: var = Σd² // n, σ = max(isqrt(var + eps), 1),
    R = 2^P // σ, handing over by themselves. Returns (var divider: feed Σd²; recip: take R)."""
    ln = p.ln
    m.submodules.var = var = SeqDivider(dividend_bits=p.sumd2_bits, divisor_bits=p.n.bit_length(),
                                        q_bits=p.var_q_bits, divisor=p.n, steps=p.div_steps)
    m.submodules.sqrt = sqrt = SeqSqrt(x_bits=p.var_eps_bits)
    m.submodules.recip = recip = SeqDivider(dividend_bits=ln.recip_shift + 1,
                                            divisor_bits=max(1, p.std_bits),
                                            q_bits=p.recip_q_bits, steps=p.div_steps)
    sigma = sqrt.o.payload.s
    m.d.comb += [sqrt.i.valid.eq(var.o.valid), var.o.ready.eq(sqrt.i.ready),
                 sqrt.i.payload.x.eq(var.o.payload.q + ln.eps),
                 recip.i.valid.eq(sqrt.o.valid), sqrt.o.ready.eq(recip.i.ready),
                 recip.i.payload.n.eq(1 << ln.recip_shift),
                 recip.i.payload.d.eq(Mux(sigma == 0, 1, sigma))]
    return var, recip


class LayerNormUnit(wiring.Component):
    """Ports: ``i``: In(stream of ArrayLayout(signed(in_bits), lanes)), ``n/lanes`` beats per
    token (feature ``b*lanes + j`` in lane ``j`` of beat ``b``); ``o``: Out(stream of
    ArrayLayout(signed(out_bits), lanes)), same order."""

    def __init__(self, params: LayerNormUnitParams):
        self.params = params_of(self, params, LayerNormUnitParams)
        super().__init__(_ports(params))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        ln = p.ln
        lanes, beats, slots = p.lanes, p.beats, p.slots

        buf = memory.Memory(shape=unsigned(lanes * ln.in_bits), depth=slots * beats, init=[])
        m.submodules.buf = buf
        wr = buf.write_port()
        rd = buf.read_port(domain="sync")

        occupied = Signal(range(slots + 1))
        inc, dec = Signal(), Signal()
        m.d.sync += occupied.eq(occupied + inc - dec)

        hand_valid, hand_s1, hand_s2 = self._input_pass(m, wr, occupied, inc)
        mean = self._mean(m, hand_valid, hand_s1, hand_s2)
        mu_store, recip = self._variance(m, mean)
        self._output_pass(m, rd, mu_store, recip, dec)
        return m

    def _input_pass(self, m, wr, occupied, inc):
        """A: the token's beats into the buffer, Σv and Σv² accumulated; returns the
        hand-over register (valid, Σv, Σv²) the mean divider takes."""
        p = self.params
        ln = p.ln
        lanes, beats, slots = p.lanes, p.beats, p.slots
        # A0 takes the beat into a register (cuts the path from the upstream adder/FIFO), A1
        # writes it to the buffer and accumulates Σv, Σv²
        a_slot = Signal(range(slots))
        a_beat = Signal(range(beats))
        s1 = Signal(signed(ln.sum_bits))
        s2 = Signal(unsigned(p.sumsq_acc_bits))
        hand_valid = Signal()                      # (Σv, Σv²) waiting for the mean divider
        hand_s1 = Signal(signed(ln.sum_bits))
        hand_s2 = Signal(unsigned(p.sumsq_acc_bits))
        a1_valid, a1_last = Signal(), Signal()
        a1_addr = Signal(range(slots * beats))
        a1_v = Signal(data.ArrayLayout(signed(ln.in_bits), lanes))
        last_in = a_beat == beats - 1
        can_start = (a_beat != 0) | (occupied < slots)
        # a token's last beat waits until the hand-over register is free for it
        m.d.comb += self.i.ready.eq(can_start & (~last_in | (~hand_valid & ~(a1_valid & a1_last))))
        take = self.i.valid & self.i.ready
        m.d.sync += a1_valid.eq(take)
        with m.If(take):
            m.d.comb += inc.eq(a_beat == 0)
            m.d.sync += [a1_v.eq(self.i.payload), a1_last.eq(last_in), a1_addr.eq(a_slot * beats + a_beat)]
            with m.If(last_in):
                m.d.sync += [a_beat.eq(0), a_slot.eq(Mux(a_slot == slots - 1, 0, a_slot + 1))]
            with m.Else():
                m.d.sync += a_beat.eq(a_beat + 1)
        beat_sum = sum(a1_v[j] for j in range(lanes))
        beat_sq = sum(a1_v[j] * a1_v[j] for j in range(lanes))
        m.d.comb += [wr.addr.eq(a1_addr), wr.data.eq(a1_v.as_value()), wr.en.eq(a1_valid)]
        with m.If(a1_valid):
            with m.If(a1_last):
                m.d.sync += [s1.eq(0), s2.eq(0), hand_valid.eq(1),
                             hand_s1.eq(s1 + beat_sum), hand_s2.eq(s2 + beat_sq)]
            with m.Else():
                m.d.sync += [s1.eq(s1 + beat_sum), s2.eq(s2 + beat_sq)]
        return hand_valid, hand_s1, hand_s2

    def _mean(self, m, hand_valid, hand_s1, hand_s2):
        """B, first step: μ = (2·Σv·2^E + n) // 2n on the mean divider, Σv and Σv² riding
        along as its tag."""
        p = self.params
        ln = p.ln
        n = ln.n
        tag1 = data.StructLayout({"neg": unsigned(1), "s1": signed(ln.sum_bits),
                                  "s2": unsigned(p.sumsq_acc_bits)})
        m.submodules.mean = mean = SeqDivider(dividend_bits=p.mean_dividend_bits,
                                              divisor_bits=(2 * n).bit_length(),
                                              q_bits=p.mean_q_bits, tag=tag1, divisor=2 * n,
                                              steps=p.div_steps)
        e = ln.extra_bits
        a = Signal(signed(ln.sum_bits + e + 2))
        m.d.comb += a.eq((hand_s1 << (e + 1)) + n)
        m.d.comb += [
            mean.i.valid.eq(hand_valid),
            mean.i.payload.n.eq(Mux(a < 0, ~a, a)),
            mean.i.payload.tag.neg.eq(a < 0),
            mean.i.payload.tag.s1.eq(hand_s1),
            mean.i.payload.tag.s2.eq(hand_s2),
        ]
        with m.If(mean.i.valid & mean.i.ready):
            # a token's last beat never reaches A1 while hand_valid is set (see i.ready)
            m.d.sync += hand_valid.eq(0)
        return mean

    def _variance(self, m, mean):
        """B, the rest: μ from the quotient, Σd² = Σv²·2^2E − μ·(2·Σv·2^E − n·μ) registered into
        the var divider, then σ and R (:func:`_var_to_recip`); μ of each slot kept for the
        output pass. Returns (μ per slot, the R divider)."""
        p = self.params
        ln = p.ln
        slots, n = p.slots, ln.n
        e = ln.extra_bits
        mu_bits = p.mu_bits
        mu_store = Signal(data.ArrayLayout(signed(mu_bits), slots))
        b_slot = Signal(range(slots))
        mu = Signal(signed(mu_bits))
        q = mean.o.payload.q
        q_s = Cat(q, Const(0, 1)).as_signed()             # zero-extended: q itself is unsigned
        m.d.comb += mu.eq(Mux(mean.o.payload.tag.neg, ~q_s, q_s))
        t1 = mean.o.payload.tag
        sumd2 = Signal(unsigned(p.sumd2_bits))
        m.d.comb += sumd2.eq((t1.s2 << (2 * e)) - mu * ((t1.s1 << (e + 1)) - n * mu))

        var, recip = _var_to_recip(m, p)
        # Σd² is registered on its way to the var divider (two multiplies deep: a long path)
        sq_valid = Signal()
        sq_held = Signal(unsigned(p.sumd2_bits))
        m.d.comb += [mean.o.ready.eq(~sq_valid | var.i.ready),
                     var.i.valid.eq(sq_valid), var.i.payload.n.eq(sq_held)]
        with m.If(var.i.valid & var.i.ready):
            m.d.sync += sq_valid.eq(0)
        with m.If(mean.o.valid & mean.o.ready):
            m.d.sync += [sq_valid.eq(1), sq_held.eq(sumd2)]
        with m.If(mean.o.valid & mean.o.ready):
            m.d.sync += [mu_store[b_slot].eq(mu), b_slot.eq(Mux(b_slot == slots - 1, 0, b_slot + 1))]
        return mu_store, recip

    def _output_pass(self, m, rd, mu_store, recip, dec):
        """C: the buffer re-read, d = v·2^E − μ, d·R, u = round(d·R) >> Sn, u·γ + β, then the
        rounded, saturated output; frees the token's slot after its last beat."""
        p = self.params
        ln = p.ln
        lanes, beats, slots = p.lanes, p.beats, p.slots
        e = ln.extra_bits
        mu_bits = p.mu_bits
        m.submodules.gb = gb = _gamma_beta(ln, lanes)
        gb_layout = gb.shape
        gb_rd = gb.read_port(domain="sync")

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        c_slot = Signal(range(slots))
        c_beat = Signal(range(beats))
        issue = Signal()
        # R leaves the divider at the first beat (so it can start the next token) and is held
        # here for the rest of the token's output pass.
        r_held = Signal(unsigned(ln.recip_bits))
        r_now = Signal(unsigned(ln.recip_bits))
        first = c_beat == 0
        m.d.comb += [issue.eq(en & (~first | recip.o.valid)),
                     r_now.eq(Mux(first, recip.o.payload.q, r_held))]
        m.d.comb += [rd.addr.eq(c_slot * beats + c_beat), rd.en.eq(en),
                     gb_rd.addr.eq(c_beat), gb_rd.en.eq(en),
                     recip.o.ready.eq(en & first)]
        with m.If(issue & first):
            m.d.sync += r_held.eq(recip.o.payload.q)
        with m.If(issue):
            with m.If(c_beat == beats - 1):
                m.d.sync += [c_beat.eq(0), c_slot.eq(Mux(c_slot == slots - 1, 0, c_slot + 1))]
            with m.Else():
                m.d.sync += c_beat.eq(c_beat + 1)

        # stage 1: buffer word, gamma/beta, mu and R of the token
        v1, last1 = Signal(), Signal()
        mu1 = Signal(signed(mu_bits))
        r1 = Signal(unsigned(ln.recip_bits))
        with m.If(en):
            m.d.sync += [v1.eq(issue), last1.eq(c_beat == beats - 1),
                         mu1.eq(mu_store[c_slot]), r1.eq(r_now)]
        words = data.View(data.ArrayLayout(signed(ln.in_bits), lanes), rd.data)
        # stage 1b: d = v·2^E − μ registered (the block RAM's output is unregistered on ECP5)
        v1b, last1b = Signal(), Signal()
        r1b = Signal(unsigned(ln.recip_bits))
        g1b = Signal(gb_layout)
        dd = [Signal(signed(ln.d_bits), name=f"d{j}") for j in range(lanes)]
        with m.If(en):
            m.d.sync += [v1b.eq(v1), last1b.eq(last1), r1b.eq(r1), g1b.eq(gb_rd.data)]
            for j in range(lanes):
                m.d.sync += dd[j].eq((words[j] << e) - mu1)
        # stage 2: d·R
        v2, last2 = Signal(), Signal()
        dr = [Signal(signed(ln.d_r_bits), name=f"dr{j}") for j in range(lanes)]
        g2 = Signal(gb_layout)
        with m.If(en):
            m.d.sync += [v2.eq(v1b), last2.eq(last1b), g2.eq(g1b)]
            for j in range(lanes):
                m.d.sync += dr[j].eq(dd[j] * r1b)  # R unsigned: zero-extended
        # stage 3: u·γ + β
        v3, last3 = Signal(), Signal()
        z = [Signal(signed(ln.z_bits), name=f"z{j}") for j in range(lanes)]
        half_n = 1 << (ln.norm_shift - 1)
        with m.If(en):
            m.d.sync += [v3.eq(v2), last3.eq(last2)]
            for j in range(lanes):
                u = Signal(signed(ln.norm_bits), name=f"u{j}")
                m.d.comb += u.eq((dr[j] + half_n) >> ln.norm_shift)
                m.d.sync += z[j].eq(u * g2.g[j] + g2.b[j])
        # output register: rounding and saturation
        lo, hi = signed_range(ln.out_bits)
        out = Signal(data.ArrayLayout(signed(ln.out_bits), lanes))
        o_valid, o_last = Signal(), Signal()
        half_o = 1 << (ln.out_shift - 1)
        with m.If(en):
            m.d.sync += [o_valid.eq(v3), o_last.eq(last3)]
            for j in range(lanes):
                y = Signal(signed(ln.z_bits + 1), name=f"y{j}")
                m.d.comb += y.eq((z[j] + half_o) >> ln.out_shift)
                m.d.sync += out[j].eq(Mux(y < lo, lo, Mux(y > hi, hi, y)))
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(out),
                     dec.eq(self.o.valid & self.o.ready & o_last)]


class SharedLayerNormUnit(wiring.Component):
    """The same op (§17, ports as :class:`LayerNormUnit`) with one bit-serial multiplier for
    every product, one token at a time: the input pass buffers the token and sums it; μ; a
    second pass sums d² = (v·2^E − μ)² (exact, as the golden model: no Σv² and no wide
    per-token products); var, σ, R as :class:`LayerNormUnit`; the output pass computes d·R,
    then u·γ, per feature and sends each beat when its lanes are done."""

    def __init__(self, params: LayerNormUnitParams):
        if not isinstance(params, LayerNormUnitParams) or not params.shared:
            silence(self)
            raise BinbertError("SharedLayerNormUnit: params must be LayerNormUnitParams with "
                               "multiplier='shared'")
        self.params = params
        super().__init__(_ports(params))

    def elaborate(self, platform):
        m = Module()
        wr, rd, gb_rd, mean, var, recip, mul = self._units(m)
        dp = self._datapath(m, wr, rd, gb_rd, mean, recip, mul)
        with m.FSM():
            self._input_states(m, dp, wr, mean)
            self._variance_states(m, dp, mul, var, recip)
            self._output_states(m, dp, mul, mean, recip)
        return m

    def _units(self, m):
        """The token buffer, the γ/β ROM, the mean, var, sqrt and recip dividers and the one
        multiplier: (buffer write and read ports, γ/β read port, mean, var, recip, mul)."""
        p = self.params
        ln = p.ln
        lanes, beats, n = p.lanes, p.beats, p.n
        m.submodules.buf = buf = memory.Memory(shape=unsigned(lanes * ln.in_bits), depth=beats, init=[])
        wr, rd = buf.write_port(), buf.read_port(domain="sync")
        # named *rom*: the bitstream flow pins it to block RAM (hw/fpga/synthesis.py ROM_NAMES), which a
        # part small enough to need this unit has to spare
        m.submodules.gbrom = gb = _gamma_beta(ln, lanes)
        gb_rd = gb.read_port(domain="sync")
        # μ (with its sign as the tag) and R stay in their dividers' output registers, not taken,
        # until the token's last beat has left: no registers of their own
        m.submodules.mean = mean = SeqDivider(dividend_bits=p.mean_dividend_bits,
                                              divisor_bits=(2 * n).bit_length(),
                                              q_bits=p.mean_q_bits, divisor=2 * n, steps=p.div_steps,
                                              tag=1)
        var, recip = _var_to_recip(m, p)   # the FSM feeds var; R waits in recip
        m.submodules.mul = mul = SeqMultiplier(a_bits=p.mul_a_bits, b_bits=p.mul_b_bits,
                                               steps=p.mul_steps)
        return wr, rd, gb_rd, mean, var, recip, mul

    def _datapath(self, m, wr, rd, gb_rd, mean, recip, mul):
        """The counters (beat, lane), the registers (Σv, Σd², u, the output beat) and the
        combinational values every state reads: d = v·2^E − μ of the current feature, the
        mean's dividend, the sliced products. Returned by name."""
        p = self.params
        ln = p.ln
        lanes, beats, n, e = p.lanes, p.beats, p.n, ln.extra_bits
        beat = Signal(range(beats))
        lane = Signal(range(lanes))
        last_beat = beat == beats - 1
        last_lane = lane == lanes - 1
        s1 = Signal(signed(ln.sum_bits))
        mu = Signal(signed(p.mu_bits))
        sumd2 = Signal(unsigned(p.sumd2_bits), reset_less=True)   # cleared in MEAN before use
        r = recip.o.payload.q
        u = Signal(signed(ln.norm_bits))
        out = Signal(data.ArrayLayout(signed(ln.out_bits), lanes), reset_less=True)  # sent in SEND

        m.d.comb += [rd.addr.eq(beat), gb_rd.addr.eq(beat),   # read ports follow the beat counter
                     wr.addr.eq(beat), wr.data.eq(self.i.payload.as_value()),
                     self.o.payload.eq(out)]
        words = data.View(data.ArrayLayout(signed(ln.in_bits), lanes), rd.data)
        word = Signal(signed(ln.in_bits))
        g = gb_rd.data
        m.d.comb += word.eq(words[lane])
        d = Signal(signed(ln.d_bits))
        m.d.comb += d.eq((word << e) - mu)
        a = Signal(signed(ln.sum_bits + e + 2))
        m.d.comb += a.eq((s1 << (e + 1)) + n)
        q = mean.o.payload.q
        q_s = Cat(q, Const(0, 1)).as_signed()
        m.d.comb += mu.eq(Mux(mean.o.payload.tag, ~q_s, q_s))
        # each product sliced to the width its values need (the shared multiplier's output is
        # as wide as its widest operands): narrower adders after it
        prod = mul.o.payload.p
        sq = prod[:(p.max_abs_d ** 2).bit_length()]            # d² >= 0
        dr = prod[:ln.d_r_bits].as_signed()                    # |R·d| < d_r_bound
        ug = prod[:ln.norm_bits + ln.gamma_bits].as_signed()   # u·gamma
        return SimpleNamespace(beat=beat, lane=lane, last_beat=last_beat, last_lane=last_lane, s1=s1,
                               sumd2=sumd2, r=r, u=u, out=out, d=d, a=a, g=g, sq=sq, dr=dr, ug=ug)

    @staticmethod
    def _advance(m, dp, pass_done, next_elem):
        """Next feature of a pass over the buffer (lanes, then beats)."""
        lane, beat, last_lane, last_beat = dp.lane, dp.beat, dp.last_lane, dp.last_beat
        with m.If(~last_lane):
            m.d.sync += lane.eq(lane + 1)
            m.next = next_elem
        with m.Else():
            m.d.sync += lane.eq(0)
            with m.If(last_beat):
                m.d.sync += beat.eq(0)
                m.next = pass_done
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
                m.next = "VAR_READ"

    def _input_states(self, m, dp, wr, mean):
        """INPUT: the token into the buffer, Σv; MEAN, MEAN_WAIT: μ on the mean divider."""
        lanes = self.params.lanes
        beat, last_beat, s1, sumd2, a = dp.beat, dp.last_beat, dp.s1, dp.sumd2, dp.a
        with m.State("INPUT"):
            m.d.comb += [self.i.ready.eq(1), wr.en.eq(self.i.valid)]
            with m.If(self.i.valid):
                m.d.sync += s1.eq(s1 + sum(self.i.payload[j] for j in range(lanes)))
                with m.If(last_beat):
                    m.d.sync += beat.eq(0)
                    m.next = "MEAN"
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
        with m.State("MEAN"):
            m.d.comb += [mean.i.valid.eq(1), mean.i.payload.n.eq(Mux(a < 0, ~a, a)),
                         mean.i.payload.tag.eq(a < 0)]
            with m.If(mean.i.ready):
                m.d.sync += [s1.eq(0), sumd2.eq(0)]
                m.next = "MEAN_WAIT"
        with m.State("MEAN_WAIT"):
            with m.If(mean.o.valid):
                m.next = "VAR_MUL"          # beat 0 has been on the read port since INPUT

    def _variance_states(self, m, dp, mul, var, recip):
        """VAR_*: Σd² over a second pass, one d·d per feature on the multiplier, then var, σ and
        R on the divider chain (RECIP_WAIT)."""
        sumd2, d, sq = dp.sumd2, dp.d, dp.sq
        with m.State("VAR_READ"):           # the new beat's word reaches the read port
            m.next = "VAR_MUL"
        with m.State("VAR_MUL"):
            m.d.comb += [mul.i.valid.eq(1), mul.i.payload.a.eq(d), mul.i.payload.b.eq(d)]
            with m.If(mul.i.ready):
                m.next = "VAR_WAIT"
        with m.State("VAR_WAIT"):
            m.d.comb += mul.o.ready.eq(1)
            with m.If(mul.o.valid):
                m.d.sync += sumd2.eq(sumd2 + sq)
                self._advance(m, dp, "VAR_DIV", "VAR_MUL")
        with m.State("VAR_DIV"):
            m.d.comb += [var.i.valid.eq(1), var.i.payload.n.eq(sumd2)]
            with m.If(var.i.ready):
                m.next = "RECIP_WAIT"
        with m.State("RECIP_WAIT"):
            with m.If(recip.o.valid):
                m.next = "NORM_MUL"

    def _output_states(self, m, dp, mul, mean, recip):
        """NORM_MUL, NORM_WAIT: R·d then u·γ per feature on the multiplier; SCALE_WAIT: + β,
        rounded and saturated into the output beat; SEND: the beat out (μ and R released
        after the token's last beat)."""
        ln = self.params.ln
        beat, lane, last_beat, last_lane = dp.beat, dp.lane, dp.last_beat, dp.last_lane
        r, u, out, d, g, dr, ug = dp.r, dp.u, dp.out, dp.d, dp.g, dp.dr, dp.ug
        lo, hi = signed_range(ln.out_bits)
        with m.State("OUT_READ"):
            m.next = "NORM_MUL"
        with m.State("NORM_MUL"):           # R·d (R unsigned: zero-extended)
            m.d.comb += [mul.i.valid.eq(1), mul.i.payload.a.eq(Cat(r, Const(0, 1)).as_signed()),
                         mul.i.payload.b.eq(d)]
            with m.If(mul.i.ready):
                m.next = "NORM_WAIT"
        with m.State("NORM_WAIT"):
            # R·d leaves the multiplier as u·gamma enters it, in the same cycle.
            # (x + 2^(s-1)) >> s == ((x >> (s-1)) + 1) >> 1: the add skips the low bits
            m.d.comb += [u.eq(((dr >> (ln.norm_shift - 1)) + 1) >> 1),
                         mul.o.ready.eq(1), mul.i.valid.eq(mul.o.valid),
                         mul.i.payload.a.eq(u), mul.i.payload.b.eq(g.g[lane])]
            with m.If(mul.o.valid):
                m.next = "SCALE_WAIT"
        with m.State("SCALE_WAIT"):
            m.d.comb += mul.o.ready.eq(1)
            with m.If(mul.o.valid):
                z = Signal(signed(ln.z_bits))
                y = Signal(signed(ln.z_bits + 1))
                m.d.comb += [z.eq(ug + g.b[lane]), y.eq(((z >> (ln.out_shift - 1)) + 1) >> 1)]
                m.d.sync += out[lane].eq(Mux(y < lo, lo, Mux(y > hi, hi, y)))
                with m.If(last_lane):
                    m.d.sync += lane.eq(0)
                    m.next = "SEND"
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
                    m.next = "NORM_MUL"
        with m.State("SEND"):
            m.d.comb += self.o.valid.eq(1)
            with m.If(self.o.ready):
                with m.If(last_beat):
                    m.d.comb += [mean.o.ready.eq(1), recip.o.ready.eq(1)]  # μ, R done
                    m.d.sync += beat.eq(0)
                    m.next = "INPUT"
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
                    m.next = "OUT_READ"


def shared_or_parallel(ln: LayerNorm, lanes: int, multiplier: str) -> LayerNormUnitParams:
    """An encoder's LayerNorm unit: the parallel one as is, or the shared one at its smallest
    (radix-2 dividers, one multiplier bit per cycle), the choice for a part it must fit."""
    if multiplier == "shared":
        return LayerNormUnitParams(ln=ln, lanes=lanes, multiplier="shared", div_steps=1, mul_steps=1)
    return LayerNormUnitParams(ln=ln, lanes=lanes, multiplier=multiplier)


@dataclass(frozen=True, kw_only=True, eq=False)
class AddNormParams:
    """Residual add then LayerNorm (§11: ``v = dense + r`` exact, then §17): the dense branch
    and the residual are signed ``a_bits`` / ``b_bits`` values, ``lanes`` features per beat."""

    norm: LayerNormUnitParams
    a_bits: int
    b_bits: int

    def __post_init__(self):
        o = "AddNormParams"
        if not isinstance(self.norm, LayerNormUnitParams):
            raise BinbertError(f"{o}: norm must be LayerNormUnitParams, got {type(self.norm).__name__}")
        for name in ("a_bits", "b_bits"):
            positive_int(o, name, getattr(self, name))
        need = max(self.a_bits, self.b_bits) + 1
        if self.norm.ln.in_bits < need:
            raise BinbertError(f"{o}: the LayerNorm reads {self.norm.ln.in_bits}-bit inputs, "
                               f"a {self.a_bits}-bit + {self.b_bits}-bit sum needs {need}")

    @property
    def lanes(self) -> int:
        return self.norm.lanes

    @property
    def cycles(self) -> int:
        """Steady-state cycles per token (a pair of a and b beats per feature group): the
        LayerNorm's."""
        return self.norm.cycles

    @property
    def latency(self) -> int:
        return self.norm.latency

    def compute(self, a, b) -> np.ndarray:
        return self.norm.compute(np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64))

    def create(self):
        return AddNorm(self)


class AddNorm(wiring.Component):
    """Ports ``a`` (dense branch), ``b`` (residual): In(stream of ArrayLayout(signed, lanes)),
    beats paired one to one; ``o``: the LayerNorm's output stream."""

    def __init__(self, params: AddNormParams):
        self.params = p = params_of(self, params, AddNormParams)
        super().__init__({
            "a": In(stream.Signature(data.ArrayLayout(signed(p.a_bits), p.lanes))),
            "b": In(stream.Signature(data.ArrayLayout(signed(p.b_bits), p.lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(p.norm.ln.out_bits), p.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.ln = ln = p.norm.create()
        both = self.a.valid & self.b.valid
        m.d.comb += [ln.i.valid.eq(both), self.a.ready.eq(both & ln.i.ready),
                     self.b.ready.eq(both & ln.i.ready)]
        for j in range(p.lanes):
            m.d.comb += ln.i.payload[j].eq(self.a.payload[j] + self.b.payload[j])
        wiring.connect(m, ln.o, wiring.flipped(self.o))
        return m
