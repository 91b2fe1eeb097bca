"""FFN block of an encoder layer (docs/arithmetic.md §11), token by token, streaming:

    h --Fork--> ffn_in_q (Requant) -> ffn_in (MVU + GELU Lut / ReLU Requant) -> ffn_out (MVU +
     |          requant to the residual format)  --\\
     \\--------> FIFO (the residual h) -------------+--> add -> ln2 (LayerNorm unit) --> out

Golden model: the layer's own ops, composed exactly as ``EncoderLayer.compute`` does:
``ln2(ffn_out(ffn_in(ffn_in_q(h))) + h)``. Ports: ``i`` residual h and ``o`` the layer output,
both ArrayLayout(signed(res_bits), lanes), hidden/lanes beats per token.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from amaranth.hdl import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.golden.encoder_layer import EncoderLayer, feed_forward
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear
from hw.golden.requant import Requant
from hw.errors import BinbertError
from hw.validate import params_of, positive_int
from hw.rtl.block import DerivedParts
from hw.rtl.layernorm import AddNormParams, shared_or_parallel
from hw.rtl.linear import LinearUnitParams
from hw.rtl.requant import RequantUnitParams, code_shape
from hw.rtl.stream import Fork, Regroup, StreamFifo

__all__ = ["FfnParams", "FfnBlock"]


@dataclass(frozen=True, kw_only=True, eq=False)
class FfnParams(DerivedParts):
    """The FFN ops of one layer plus the folding: ``lanes`` residual features per beat, the two
    MVUs' PE x SIMD, and a residual FIFO of ``fifo_tokens`` tokens."""

    ffn_in_q: Requant
    ffn_in: BinaryLinear
    ffn_out: BinaryLinear
    ln: LayerNorm
    lanes: int
    pe1: int
    simd1: int
    pe2: int
    simd2: int
    fifo_tokens: int = 4
    ln_multiplier: str = "parallel"  # ln2's (hw.rtl.layernorm.LayerNormUnitParams.multiplier)
    mvu_buffer: str = "auto"  # both MVUs' input buffers (hw.rtl.mvu.MVUParams.buffer)

    def __post_init__(self):
        o = "FfnParams"
        for name, cls in (("ffn_in_q", Requant), ("ffn_in", BinaryLinear), ("ffn_out", BinaryLinear),
                          ("ln", LayerNorm)):
            if not isinstance(getattr(self, name), cls):
                raise BinbertError(f"{o}: {name} must be a {cls.__module__}.{cls.__name__}")
        for name in ("lanes", "fifo_tokens"):
            positive_int(o, name, getattr(self, name))
        if self.ffn_in.k != self.hidden or self.ffn_out.n != self.hidden or self.ffn_out.k != self.ffn_in.n:
            raise BinbertError(f"{o}: shapes do not chain (ffn_in {self.ffn_in.n}x{self.ffn_in.k}, "
                               f"ffn_out {self.ffn_out.n}x{self.ffn_out.k})")
        if self.ffn_in_q.out_bits != self.ffn_in.in_bits or self.ffn_in.out.out_bits != self.ffn_out.in_bits:
            raise BinbertError(f"{o}: activation widths do not chain")
        if self.hidden % self.lanes:
            raise BinbertError(f"{o}: lanes={self.lanes} does not divide hidden={self.hidden}")
        # build every part once: their own checks name the bad folding
        self.lin1, self.lin2, self.qin, self.addnorm  # noqa: B018

    @classmethod
    def from_layer(cls, layer: EncoderLayer, **folding) -> "FfnParams":
        if not isinstance(layer, EncoderLayer):
            raise BinbertError(f"FfnParams.from_layer: expected an EncoderLayer, got {type(layer).__name__}")
        return cls(ffn_in_q=layer.ffn_in_q, ffn_in=layer.ffn_in, ffn_out=layer.ffn_out, ln=layer.ln2, **folding)

    @property
    def hidden(self) -> int:
        return self.ln.n

    @property
    def res_bits(self) -> int:
        return self.ffn_out.out.out_bits

    @property
    def beats(self) -> int:
        return self.hidden // self.lanes

    @cached_property
    def qin(self) -> RequantUnitParams:
        return RequantUnitParams(op=self.ffn_in_q, n=self.hidden, lanes=self.lanes)

    @cached_property
    def lin1(self) -> LinearUnitParams:
        return LinearUnitParams(lin=self.ffn_in, pe=self.pe1, simd=self.simd1, out_lanes=self.simd2,
                                buffer=self.mvu_buffer)

    @cached_property
    def lin2(self) -> LinearUnitParams:
        return LinearUnitParams(lin=self.ffn_out, pe=self.pe2, simd=self.simd2, out_lanes=self.lanes,
                                buffer=self.mvu_buffer)

    @cached_property
    def addnorm(self) -> AddNormParams:
        return AddNormParams(norm=shared_or_parallel(self.ln, self.lanes, self.ln_multiplier),
                             a_bits=self.res_bits, b_bits=self.res_bits)

    @property
    def stage_cycles(self) -> dict[str, int]:
        return {"residual": self.beats, "ffn_in": self.lin1.cycles,
                "ffn_out": self.lin2.cycles, "ln": self.addnorm.cycles}

    @property
    def cycles(self) -> int:
        """Steady-state cycles per token (``hidden / lanes`` residual beats): the busiest stage."""
        return max(self.stage_cycles.values())

    cycles_per_token = cycles  # the name the FFN bench reports

    @property
    def latency(self) -> int:
        """First input beat of a token to its last output beat (no stalls, upper bound)."""
        return (self.beats + self.lin1.latency + self.lin2.latency + self.addnorm.latency
                + self.qin.latency + 4)

    @property
    def fifo_depth(self) -> int:
        return self.fifo_tokens * self.beats

    def compute(self, h) -> np.ndarray:
        """(..., hidden) residual -> (..., hidden) layer output: the second half of
        EncoderLayer.compute."""
        return feed_forward(np.asarray(h, dtype=np.int64), ffn_in_q=self.ffn_in_q, ffn_in=self.ffn_in,
                            ffn_out=self.ffn_out, ln=self.ln)

    def create(self):
        return FfnBlock(self)


class FfnBlock(wiring.Component):
    def __init__(self, params: FfnParams):
        self.params = params_of(self, params, FfnParams)
        layout = data.ArrayLayout(signed(params.res_bits), params.lanes)
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(data.ArrayLayout(signed(params.ln.out_bits), params.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        layout = data.ArrayLayout(signed(p.res_bits), p.lanes)
        m.submodules.fork = fork = Fork(layout, 2)
        m.submodules.fifo = fifo = StreamFifo(layout, p.fifo_depth)
        m.submodules.qin = qin = p.qin.create()
        m.submodules.to_simd = to_simd = Regroup(code_shape(p.ffn_in.in_bits), p.lanes, p.simd1)
        m.submodules.lin1 = lin1 = p.lin1.create()
        m.submodules.lin2 = lin2 = p.lin2.create()
        m.submodules.addnorm = addnorm = p.addnorm.create()
        wiring.connect(m, wiring.flipped(self.i), fork.i)
        wiring.connect(m, fork.o1, fifo.i)
        for j in range(p.lanes):
            m.d.comb += qin.i.payload[j].eq(fork.o0.payload[j])
        m.d.comb += [qin.i.valid.eq(fork.o0.valid), fork.o0.ready.eq(qin.i.ready)]
        wiring.connect(m, qin.o, to_simd.i)
        wiring.connect(m, to_simd.o, lin1.i)
        wiring.connect(m, lin1.o, lin2.i)
        wiring.connect(m, lin2.o, addnorm.a)
        wiring.connect(m, fifo.o, addnorm.b)
        wiring.connect(m, addnorm.o, wiring.flipped(self.o))
        return m
