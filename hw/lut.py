"""Generalised requantizer and lookup-table nonlinearity (docs/arithmetic.md §10, §12).

Golden models: :class:`hw.encoder_params.Requant` (T terms, per-row or broadcast M/B, one shift,
clamp to [lo, hi] inside a signed ``out_bits`` range up to 32 bits, or the sign bit) and
:class:`hw.encoder_params.Lut` (that requantizer to an index code, then a ROM). H1's
``hw.requant.Requantizer`` covers §7 only (out_bits <= 8, no [lo, hi] clamp), so the encoder
blocks use this unit.

Stream contract of :class:`RequantUnit`:
  * ``i``: ArrayLayout(signed(acc_bits), lanes·T); lane ``l·T + t`` is term ``t`` of row
    ``b·lanes + l`` for beat ``b`` of a vector (n / lanes beats per vector) -- the order of an
    MVU whose weight rows interleave the terms (row ``n·T + t``, see hw/linear.py);
  * ``o``: ArrayLayout(signed(out_bits), lanes) (``unsigned(1)`` bits for out_bits = 1).
A four-register pipeline (constants ROM read, its registered copy, z = Σ acc·M + B,
round/clamp; +1 for the Lut ROM) that stalls on backpressure: one beat per cycle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.encoder_params import Lut, Requant
from hw.errors import BinbertError

__all__ = ["RequantUnitParams", "RequantUnit", "code_shape"]


def code_shape(bits: int):
    """Shape of one activation code in a stream: a bit for 1-bit codes, else signed(bits)."""
    return unsigned(1) if bits == 1 else signed(bits)


@dataclass(frozen=True, kw_only=True, eq=False)
class RequantUnitParams:
    """A golden ``Requant`` or ``Lut`` over vectors of ``n`` rows, ``lanes`` rows per beat."""

    op: Requant | Lut
    n: int
    lanes: int = 1

    def __post_init__(self):
        o = "RequantUnitParams"
        if not isinstance(self.op, (Requant, Lut)):
            raise BinbertError(f"{o}: op must be a hw.encoder_params Requant or Lut, got {type(self.op).__name__}")
        for name in ("n", "lanes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BinbertError(f"{o}: {name}={v!r} must be an integer >= 1")
        if self.n % self.lanes:
            raise BinbertError(f"{o}: lanes={self.lanes} does not divide n={self.n}")
        if self.requant.rows not in (1, self.n):
            raise BinbertError(f"{o}: op has {self.requant.rows} rows, vectors have n={self.n}")

    @property
    def requant(self) -> Requant:
        return self.op.index if isinstance(self.op, Lut) else self.op

    @property
    def is_lut(self) -> bool:
        return isinstance(self.op, Lut)

    @property
    def terms(self) -> int:
        return self.requant.terms

    @property
    def acc_bits(self) -> int:
        return self.requant.acc_bits

    @property
    def out_bits(self) -> int:
        return self.op.out_bits

    @property
    def beats(self) -> int:
        return self.n // self.lanes

    @property
    def latency(self) -> int:
        return 4 + self.is_lut

    def compute(self, accs) -> np.ndarray:
        """(T, ..., n) accumulators -> (..., n) codes."""
        return self.op.compute(accs)

    def create(self):
        return RequantUnit(self)


def requant_pipeline(m: Module, rq: Requant, accs, row_consts, en, *, lanes: int, name: str):
    """Registered z = Σ_t acc_t·M_t + B then rounded/clamped code, for ``lanes`` rows.

    ``accs[l][t]``: accumulator values (already registered by the caller); ``row_consts``: per
    lane (mult list, bias) values (signals or ints). Returns the code values (registered) one
    stage later than z; every register loads only while ``en``.
    """
    z = [Signal(signed(rq.z_bits), name=f"{name}_z{l}") for l in range(lanes)]
    with m.If(en):
        for l in range(lanes):
            mults, bias = row_consts[l]
            m.d.sync += z[l].eq(sum(accs[l][t] * mults[t] for t in range(rq.terms)) + bias)
    out_shape = code_shape(rq.out_bits)
    codes = [Signal(out_shape, name=f"{name}_c{l}") for l in range(lanes)]
    with m.If(en):
        for l in range(lanes):
            if rq.out_bits == 1:
                m.d.sync += codes[l].eq(z[l] >= 0)
            else:
                q = Signal(signed(rq.z_bits + 1), name=f"{name}_q{l}")
                m.d.comb += q.eq((z[l] + (1 << (rq.shift - 1))) >> rq.shift)
                m.d.sync += codes[l].eq(Mux(q < rq.lo, rq.lo, Mux(q > rq.hi, rq.hi, q)))
    return codes


class RequantUnit(wiring.Component):
    """Stream requantizer / LUT; see the module docstring for the port contract."""

    def __init__(self, params: RequantUnitParams):
        if not isinstance(params, RequantUnitParams):
            self._MustUse__silence = True
            raise BinbertError(f"RequantUnit: params must be RequantUnitParams, got {type(params).__name__}")
        self.params = params
        p = params
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(p.acc_bits), p.lanes * p.terms))),
            "o": Out(stream.Signature(data.ArrayLayout(code_shape(p.out_bits), p.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        rq = p.requant
        lanes, terms, beats = p.lanes, p.terms, p.beats
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(en)
        take = self.i.valid & self.i.ready

        beat = Signal(range(beats))
        with m.If(take):
            m.d.sync += beat.eq(Mux(beat == beats - 1, 0, beat + 1))

        # stage 1: accumulators registered, per-row constants read from a ROM by beat index
        v1 = Signal()
        acc1 = [[Signal(signed(p.acc_bits), name=f"acc_{l}_{t}") for t in range(terms)] for l in range(lanes)]
        with m.If(en):
            m.d.sync += v1.eq(self.i.valid)
            for l in range(lanes):
                for t in range(terms):
                    m.d.sync += acc1[l][t].eq(self.i.payload[l * terms + t])
        per_row_m = rq.mult.shape[1] > 1
        per_row_b = rq.bias.shape[0] > 1
        m_shape = unsigned(max(1, rq.m_bits))
        b_shape = signed(rq.bias_bits)
        if per_row_m or per_row_b:
            layout = data.StructLayout({
                "m": data.ArrayLayout(data.ArrayLayout(m_shape, terms), lanes),
                "b": data.ArrayLayout(b_shape, lanes)})

            def row(r):
                mm = [int(rq.mult[t, r if per_row_m else 0]) for t in range(terms)]
                return mm, int(rq.bias[r if per_row_b else 0])

            init = []
            for b in range(beats):
                rows = [row(b * lanes + l) for l in range(lanes)]
                init.append({"m": [mm for mm, _ in rows], "b": [bb for _, bb in rows]})
            rom = memory.Memory(shape=layout, depth=beats, init=init)
            m.submodules.consts = rom
            rd = rom.read_port(domain="sync")
            m.d.comb += [rd.addr.eq(beat), rd.en.eq(en)]
            # stage 1b: the constants registered (block RAM data is unregistered on ECP5 and
            # feeds the multipliers)
            held = Signal(layout)
            with m.If(en):
                m.d.sync += held.eq(rd.data)
            consts = [([held.m[l][t] for t in range(terms)], held.b[l]) for l in range(lanes)]
        else:
            consts = [([int(rq.mult[t, 0]) for t in range(terms)], int(rq.bias[0]))] * lanes
        v1b = Signal()
        acc1b = [[Signal(signed(p.acc_bits), name=f"accb_{l}_{t}") for t in range(terms)] for l in range(lanes)]
        with m.If(en):
            m.d.sync += v1b.eq(v1)
            for l in range(lanes):
                for t in range(terms):
                    m.d.sync += acc1b[l][t].eq(acc1[l][t])

        # stage 2 (z) and stage 3 (code)
        v2, v3 = Signal(), Signal()
        with m.If(en):
            m.d.sync += [v2.eq(v1b), v3.eq(v2)]
        codes = requant_pipeline(m, rq, acc1b, consts, en, lanes=lanes, name="rq")
        if not p.is_lut:
            m.d.comb += self.o.valid.eq(v3)
            for l in range(lanes):
                m.d.comb += self.o.payload[l].eq(codes[l])
            return m

        # stage 4: the table ROM, one read port per lane
        lut = p.op
        shape = code_shape(lut.out_bits)
        table = [int(x) for x in lut.table]
        v4 = Signal()
        with m.If(en):
            m.d.sync += v4.eq(v3)
        m.d.comb += self.o.valid.eq(v4)
        tab = memory.Memory(shape=shape, depth=len(table), init=table)
        m.submodules.table = tab
        for l in range(lanes):
            rd = tab.read_port(domain="sync")
            m.d.comb += [rd.addr.eq(codes[l] - rq.lo), rd.en.eq(en), self.o.payload[l].eq(rd.data)]
        return m
