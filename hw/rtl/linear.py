"""A binary linear layer in hardware: the matrix-vector unit (hw/rtl/mvu.py) + the requantizer
unit (hw/rtl/requant.py).

Golden model: :class:`hw.golden.linear.BinaryLinear` (T binary weight terms, §4-§6, then its
``out`` Requant or Lut, §10/§12). The T term matrices are stacked into one MVU weight matrix
with the terms interleaved -- row ``n·T + t`` is row ``n`` of term ``t`` -- so every MVU output
beat carries whole output rows (PE must be a multiple of T) and the requantizer combines T
neighbouring lanes. The export's ROM rows (one packed row per word, §11) are refolded to the
MVU's PE x SIMD words by :class:`hw.rtl.mvu.MVUParams` (``rom_words``).

Ports: ``i``: ArrayLayout(code, SIMD) (exactly the MVU's input beat, SF = K/SIMD per vector);
``o``: ArrayLayout(code, out_lanes), N/out_lanes beats per vector.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.golden import arith
from hw.golden.linear import BinaryLinear
from hw.errors import BinbertError
from hw.validate import params_of, positive_int
from hw.rtl.block import DerivedParts
from hw.rtl.mvu import MVUParams
from hw.rtl.requant import RequantUnitParams, code_shape
from hw.rtl.stream import Regroup

__all__ = ["LinearUnitParams", "LinearUnit", "stacked_weight_bits"]


def stacked_weight_bits(lin: BinaryLinear) -> np.ndarray:
    """(T·N, K) weight bits with row n·T + t = row n of term t."""
    bits = arith.unpack_bits(lin.weights, lin.k)           # (T, N, K)
    return np.ascontiguousarray(bits.transpose(1, 0, 2).reshape(lin.terms * lin.n, lin.k))


@dataclass(frozen=True, kw_only=True, eq=False)
class LinearUnitParams(DerivedParts):
    """``lin`` folded as PE stacked rows (PE/T output rows) x SIMD columns per cycle."""

    lin: BinaryLinear
    pe: int
    simd: int
    out_lanes: int | None = None
    pipeline: int = 1
    buffer: str = "auto"  # the MVU's input ping-pong buffer (MVUParams.buffer)

    def __post_init__(self):
        o = "LinearUnitParams"
        if not isinstance(self.lin, BinaryLinear):
            raise BinbertError(f"{o}: lin must be a hw.golden.linear.BinaryLinear, got {type(self.lin).__name__}")
        positive_int(o, "pe", self.pe)
        positive_int(o, "simd", self.simd)
        if self.pe % self.lin.terms:
            raise BinbertError(f"{o}: pe={self.pe} must be a multiple of the {self.lin.terms} weight terms")
        if (self.lin.terms * self.lin.n) % self.pe:
            raise BinbertError(f"{o}: pe={self.pe} does not divide T·N = {self.lin.terms * self.lin.n}")
        if self.lin.k % self.simd:
            raise BinbertError(f"{o}: simd={self.simd} does not divide k={self.lin.k}")
        if self.out_lanes is None:
            object.__setattr__(self, "out_lanes", self.rows_per_beat)
        positive_int(o, "out_lanes", self.out_lanes)
        if self.lin.n % self.out_lanes:
            raise BinbertError(f"{o}: out_lanes={self.out_lanes} does not divide n={self.lin.n}")
        self.mvu  # validates pipeline against the PE tree

    @property
    def rows_per_beat(self) -> int:
        return self.pe // self.lin.terms

    @cached_property
    def mvu(self) -> MVUParams:
        lin = self.lin
        return MVUParams(k=lin.k, n=lin.terms * lin.n, pe=self.pe, simd=self.simd,
                         weights=stacked_weight_bits(lin), a_bits=lin.in_bits, pipeline=self.pipeline,
                         buffer=self.buffer)

    @cached_property
    def requant(self) -> RequantUnitParams:
        return RequantUnitParams(op=self.lin.out, n=self.lin.n, lanes=self.rows_per_beat)

    @property
    def in_bits(self) -> int:
        return self.lin.in_bits

    @property
    def out_bits(self) -> int:
        return self.lin.out.out_bits

    @property
    def in_beats(self) -> int:
        return self.lin.k // self.simd

    @property
    def out_beats(self) -> int:
        return self.lin.n // self.out_lanes

    @property
    def cycles(self) -> int:
        """Steady-state cycles per input vector: the MVU's A·NF·SF."""
        return self.mvu.cycles

    @property
    def latency(self) -> int:
        """Last input beat of a vector to its last output beat (no stalls, upper bound)."""
        return self.cycles + self.mvu.latency + self.requant.latency + 2

    def compute(self, x) -> np.ndarray:
        return self.lin.compute(x)

    def create(self):
        return LinearUnit(self)


class LinearUnit(wiring.Component):
    def __init__(self, params: LinearUnitParams):
        self.params = params_of(self, params, LinearUnitParams)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(code_shape(params.in_bits), params.simd))),
            "o": Out(stream.Signature(data.ArrayLayout(code_shape(params.out_bits), params.out_lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.mvu = mvu = p.mvu.create()
        m.submodules.rq = rq = p.requant.create()
        m.submodules.regroup = rg = Regroup(code_shape(p.out_bits), p.rows_per_beat, p.out_lanes)
        # the code lanes flatten exactly as the MVU's input word (element s at bits [s·A, +A))
        m.d.comb += [mvu.i.payload.eq(self.i.payload.as_value()), mvu.i.valid.eq(self.i.valid),
                     self.i.ready.eq(mvu.i.ready)]
        # lane by lane: the op's acc_bits may be wider than the MVU's (sign extension)
        for lane in range(p.pe):
            m.d.comb += rq.i.payload[lane].eq(mvu.o.payload[lane])
        m.d.comb += [rq.i.valid.eq(mvu.o.valid), mvu.o.ready.eq(rq.i.ready)]
        wiring.connect(m, rq.o, rg.i)
        wiring.connect(m, rg.o, wiring.flipped(self.o))
        return m
