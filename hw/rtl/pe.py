"""XNOR-popcount processing element (docs/arithmetic.md §4, §5).

:class:`PEParams` is one lane's parameter object (``compute``: the golden popcount,
``create``: the component); :func:`xnor_popcount` builds the popcount tree that every lane of
the MVU uses; :class:`XnorPopcountPE` wraps one lane as a stream component with full backpressure.

Tree shape (why; Yosys 0.70 ``synth_ecp5 -abc9 -nowidelut``, SIMD 64, LUT4 + 2*CCU2C per MAC):
the XNOR bits are summed by a plain balanced ``+`` tree with natural widths. Between two
register stages Yosys merges such a tree into one ``$macc`` and maps it as a carry-save
full-adder tree whose first level absorbs the XNORs (a LUT4 sees two (x, w) pairs), with one
carry-chain adder at the end: 2.58 (157 LUT4 + 4 CCU2C). Hand-built alternatives measured
worse or within noise, because they hide the tree from that mapping: XNOR-pair leaves
``{e0 & e1, e0 ^ e1}`` with range-exact truncated adders 3.16, pairs with natural widths 3.09,
groups of 3..8 MACs kept as separate cells 2.75..3.47, an explicit FA bit-heap 2.89, XNOR full
adders feeding an FA tree that absorbs one MAC per node, then a macc of the carries 2.52.
For scale, a popcount of 64 plain bits (no XNOR) maps to 1.78: folding the XNOR into a LUT4
fabric costs at least ~0.5 per MAC, since a LUT4 sees only two (x, w) pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.golden import arith
from hw.validate import bounded_int, params_of

__all__ = ["PEParams", "XnorPopcountPE", "popcount_width", "stage_levels", "tree_levels",
           "xnor_popcount"]


def tree_levels(simd: int) -> int:
    """Number of levels of the XNOR-popcount tree (see :mod:`hw.rtl.pe`): the XNORs + the adders."""
    return 1 + (int(simd) - 1).bit_length()


def popcount_width(simd: int) -> int:
    """Unsigned width of a popcount of ``simd`` bits (0 .. simd)."""
    return int(simd).bit_length()



def valid_delay(m: Module, valid, en, stages: int):
    """``valid`` through ``stages`` enabled registers (``valid_0`` ...): the valid bit of a
    pipeline whose data registers advance on ``en``."""
    for s in range(stages):
        v = Signal(name=f"valid_{s}")
        with m.If(en):
            m.d.sync += v.eq(valid)
        valid = v
    return valid


@dataclass(frozen=True, kw_only=True)
class PEParams:
    """One XNOR-popcount lane: ``o = popcount(XNOR(x, w))`` over ``simd`` bits (§4).

    ``pipeline`` register stages are spread over the adder-tree levels (0: combinational);
    at most :attr:`max_pipeline` (one per tree level).
    """

    simd: int
    pipeline: int = 1

    def __post_init__(self):
        bounded_int("PEParams", "simd", self.simd, 1)
        bounded_int("PEParams", "pipeline", self.pipeline, 0)
        if self.pipeline > self.max_pipeline:
            raise BinbertError(f"PEParams: pipeline={self.pipeline} exceeds the {self.max_pipeline} "
                               f"tree levels of simd={self.simd}")

    @property
    def max_pipeline(self) -> int:
        return tree_levels(self.simd)

    @property
    def latency(self) -> int:
        """Cycles from an accepted input beat to its output beat (no stalls)."""
        return self.pipeline

    @property
    def cycles(self) -> int:
        """Steady-state cycles per input beat (one (x, w) pair): the lane is fully pipelined."""
        return 1

    @property
    def out_width(self) -> int:
        return popcount_width(self.simd)

    def compute(self, x_bits, w_bits) -> np.ndarray:
        """popcount(XNOR(x, w)) per row: (..., simd) bits x (..., simd) bits -> (...) int64."""
        x = np.asarray(x_bits)
        w = np.asarray(w_bits)
        for name, a in (("x_bits", x), ("w_bits", w)):
            if a.ndim < 1 or a.shape[-1] != self.simd:
                raise BinbertError(f"PEParams.compute: {name} has shape {a.shape}, last axis must be "
                                   f"simd={self.simd}")
        xp = arith.pack_bits(x)
        wp = arith.pack_bits(w)
        diff = np.bitwise_count(np.bitwise_xor(xp, wp)).sum(-1).astype(np.int64)
        return self.simd - diff

    def create(self):
        return XnorPopcountPE(self)


def stage_levels(levels: int, pipeline: int) -> set[int]:
    """Tree levels after which a register stage sits: ``pipeline`` of them spread evenly,
    the last one always after the final level (so the output is registered when pipeline >= 1)."""
    return {-(-(i + 1) * levels // pipeline) - 1 for i in range(pipeline)} if pipeline else set()


def xnor_popcount(m: Module, x: Value, w: Value, *, simd: int, pipeline: int, en: Value = None,
                  domain: str = "sync", name: str = "pc") -> Value:
    """popcount(XNOR(x, w)) over ``simd`` bits with ``pipeline`` register stages.

    Level 0 is the XNORs, each further level adds pairs. Registers load only while ``en``
    (default: always), so a caller stalls the whole tree with its own handshake. Returns an
    unsigned value of ``bitlen(simd)`` bits, valid ``pipeline`` cycles after its inputs.
    """
    levels = tree_levels(simd)
    regs_after = stage_levels(levels, pipeline)
    nodes = [~(x[j] ^ w[j]) for j in range(simd)]
    level = 0
    while True:
        if level in regs_after:
            staged = []
            for idx, v in enumerate(nodes):
                # data only (a caller's valid bits travel beside it): no reset
                r = Signal(unsigned(len(v)), name=f"{name}_l{level}_{idx}", reset_less=True)
                if en is None:
                    m.d[domain] += r.eq(v)
                else:
                    with m.If(en):
                        m.d[domain] += r.eq(v)
                staged.append(r)
            nodes = staged
        if len(nodes) == 1:
            break
        level += 1
        nxt = [nodes[j] + nodes[j + 1] for j in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    assert level == levels - 1, (level, levels)
    out = Signal(unsigned(simd.bit_length()), name=f"{name}_out")
    m.d.comb += out.eq(nodes[0])
    return out


class XnorPopcountPE(wiring.Component):
    """One lane: ``o.payload = popcount(XNOR(i.payload.x, i.payload.w))``.

    Ports: ``i: In(stream.Signature(StructLayout({"x": SIMD, "w": SIMD})))``,
    ``o: Out(stream.Signature(unsigned(bitlen(SIMD))))``. Latency ``params.pipeline`` cycles;
    the pipeline advances when ``~o.valid | o.ready`` and valid bits travel with the data.
    """

    def __init__(self, params: PEParams):
        self.params = params_of(self, params, PEParams)
        layout = data.StructLayout({"x": unsigned(params.simd), "w": unsigned(params.simd)})
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(unsigned(params.out_width))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        if p.pipeline == 0:
            m.d.comb += [
                self.o.payload.eq(xnor_popcount(m, self.i.payload.x, self.i.payload.w,
                                                simd=p.simd, pipeline=0)),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            return m
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        count = xnor_popcount(m, self.i.payload.x, self.i.payload.w, simd=p.simd,
                              pipeline=p.pipeline, en=en)
        m.d.comb += [self.o.payload.eq(count),
                     self.o.valid.eq(valid_delay(m, self.i.valid, en, p.pipeline))]
        return m
