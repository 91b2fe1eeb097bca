"""Requantizer and lookup-table nonlinearity: accumulators -> codes (docs/arithmetic.md §7, §10, §12).

Golden models: :class:`hw.golden.requant.Requant` (T terms, per-row or broadcast M/B, one shift,
clamp to [lo, hi] inside a signed ``out_bits`` range up to 32 bits, or the sign bit;
``hw.golden.fold.from_scales`` folds real scales into M, B and S per §8) and
:class:`hw.golden.requant.Lut` (that requantizer to an index code, then a ROM).
:class:`RequantUnitParams` wraps either over vectors of ``n`` rows, ``lanes`` rows per beat;
:func:`requant_pipeline` is the z / code pipeline that the attention block reuses.

Stream contract of :class:`RequantUnit`:
  * ``i``: ArrayLayout(signed(acc_bits), lanes·T); lane ``l·T + t`` is term ``t`` of row
    ``b·lanes + l`` for beat ``b`` of a vector (n / lanes beats per vector) -- the order of an
    MVU whose weight rows interleave the terms (row ``n·T + t``, see hw/rtl/linear.py);
  * ``o``: ArrayLayout(signed(out_bits), lanes) (``unsigned(1)`` bits for out_bits = 1).
A four-register pipeline (constants ROM read, its registered copy, z = Σ acc·M + B,
round/clamp; +1 for the Lut ROM) that stalls on backpressure: one beat per cycle. A one-term
requantizer to one bit (``Requant.is_threshold``, BiBERT's sign activations) stores a threshold
T per row instead of M and B and registers [acc >= T] where z would be: no multiplier, same
latency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.golden.requant import Lut, Requant
from hw.errors import BinbertError
from hw.validate import params_of, positive_int

__all__ = ["RequantUnitParams", "RequantUnit", "code_shape", "const_layout", "requant_pipeline",
           "rows_consts"]


def code_shape(bits: int):
    """Shape of one activation code in a stream: a bit for 1-bit codes, else signed(bits)."""
    return unsigned(1) if bits == 1 else signed(bits)


def const_layout(rq: Requant) -> data.StructLayout:
    """One row's constants as the RTL stores them: the threshold T, or M per term and B."""
    if rq.is_threshold:
        return data.StructLayout({"t": signed(rq.t_bits)})
    return data.StructLayout({"m": data.ArrayLayout(unsigned(max(1, rq.m_bits)), rq.terms),
                              "b": signed(rq.bias_bits)})


def rows_consts(rq: Requant) -> list[dict]:
    """Every row's constants (``const_layout`` fields as ints); one entry when all rows share
    them (broadcast M and B)."""
    if rq.is_threshold:
        return [{"t": int(v)} for v in rq.thresholds()]
    mult = np.broadcast_to(rq.mult, (rq.terms, rq.rows))
    bias = np.broadcast_to(rq.bias, (rq.rows,))
    return [{"m": [int(v) for v in mult[:, r]], "b": int(bias[r])} for r in range(rq.rows)]


@dataclass(frozen=True, kw_only=True, eq=False)
class RequantUnitParams:
    """A golden ``Requant`` or ``Lut`` over vectors of ``n`` rows, ``lanes`` rows per beat."""

    op: Requant | Lut
    n: int
    lanes: int = 1

    def __post_init__(self):
        o = "RequantUnitParams"
        if not isinstance(self.op, (Requant, Lut)):
            raise BinbertError(f"{o}: op must be a hw.golden.requant Requant or Lut, got {type(self.op).__name__}")
        for name in ("n", "lanes"):
            positive_int(o, name, getattr(self, name))
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

    @property
    def cycles(self) -> int:
        """Steady-state cycles per vector of ``n`` rows: one beat of ``lanes`` rows per cycle."""
        return self.beats

    def compute(self, accs) -> np.ndarray:
        """(T, ..., n) accumulators -> (..., n) codes."""
        return self.op.compute(accs)

    def create(self):
        return RequantUnit(self)


def requant_pipeline(m: Module, rq: Requant, accs, row_consts, en, *, lanes: int, name: str):
    """Registered z = Σ_t acc_t·M_t + B then rounded/clamped code, for ``lanes`` rows.

    ``accs[l][t]``: accumulator values (already registered by the caller); ``row_consts``: per
    lane the ``const_layout`` fields (a view or a dict of ints). Returns the code values
    (registered) one stage later than z; every register loads only while ``en``.
    """
    out_shape = code_shape(rq.out_bits)
    # data registers: no reset (the valid bits beside them say when they hold a value)
    codes = [Signal(out_shape, name=f"{name}_c{l}", reset_less=True) for l in range(lanes)]
    if rq.is_threshold:
        bits = [Signal(name=f"{name}_t{l}", reset_less=True) for l in range(lanes)]
        with m.If(en):
            for l in range(lanes):
                m.d.sync += [bits[l].eq(accs[l][0] >= row_consts[l]["t"]), codes[l].eq(bits[l])]
        return codes
    z = [Signal(signed(rq.z_bits), name=f"{name}_z{l}", reset_less=True) for l in range(lanes)]
    with m.If(en):
        for l in range(lanes):
            c = row_consts[l]
            m.d.sync += z[l].eq(sum(accs[l][t] * c["m"][t] for t in range(rq.terms)) + c["b"])
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
        self.params = p = params_of(self, params, RequantUnitParams)
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
        acc1 = [[Signal(signed(p.acc_bits), name=f"acc_{l}_{t}", reset_less=True) for t in range(terms)] for l in range(lanes)]
        with m.If(en):
            m.d.sync += v1.eq(self.i.valid)
            for l in range(lanes):
                for t in range(terms):
                    m.d.sync += acc1[l][t].eq(self.i.payload[l * terms + t])
        rows = rows_consts(rq)
        if len(rows) > 1:
            layout = data.ArrayLayout(const_layout(rq), lanes)
            init = [rows[b * lanes: (b + 1) * lanes] for b in range(beats)]
            rom = memory.Memory(shape=layout, depth=beats, init=init)
            m.submodules.consts = rom
            rd = rom.read_port(domain="sync")
            m.d.comb += [rd.addr.eq(beat), rd.en.eq(en)]
            # stage 1b: the constants registered (block RAM data is unregistered on ECP5 and
            # feeds the multipliers)
            held = Signal(layout, reset_less=True)
            with m.If(en):
                m.d.sync += held.eq(rd.data)
            consts = [held[l] for l in range(lanes)]
        else:
            consts = rows * lanes
        v1b = Signal()
        acc1b = [[Signal(signed(p.acc_bits), name=f"accb_{l}_{t}", reset_less=True) for t in range(terms)] for l in range(lanes)]
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
