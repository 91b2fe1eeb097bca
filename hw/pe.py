"""XNOR-popcount processing element (docs/arithmetic.md §4, §5).

:func:`xnor_popcount` builds the LUT4-friendly popcount tree that every lane of the MVU uses;
:class:`XnorPopcountPE` wraps one lane as a stream component with full backpressure.

Tree shape (why): the first level takes two (x, w) pairs -- exactly four LUT inputs -- and emits
their 2-bit count ``{XNOR0 & XNOR1, XNOR0 ^ XNOR1}`` (two LUT4s per two MACs, the XNORs folded in);
the levels above add the partial counts with range-exact widths (a sum of c MACs is
``bitlen(c)`` bits), so no adder bit is spent on values that cannot occur.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.params import PEParams, tree_levels

__all__ = ["XnorPopcountPE", "xnor_popcount", "stage_levels"]


def stage_levels(levels: int, pipeline: int) -> set[int]:
    """Tree levels after which a register stage sits: ``pipeline`` of them spread evenly,
    the last one always after the final level (so the output is registered when pipeline >= 1)."""
    return {-(-(i + 1) * levels // pipeline) - 1 for i in range(pipeline)} if pipeline else set()


def _leaves(x: Value, w: Value, simd: int) -> list[tuple[Value, int]]:
    """Level 0: (value, max) per pair of MACs; a 4-input function per output bit."""
    out = []
    for j in range(0, simd - 1, 2):
        e0 = ~(x[j] ^ w[j])
        e1 = ~(x[j + 1] ^ w[j + 1])
        out.append((Cat(e0 ^ e1, e0 & e1), 2))
    if simd % 2:
        out.append((~(x[simd - 1] ^ w[simd - 1]), 1))
    return out


def xnor_popcount(m: Module, x: Value, w: Value, *, simd: int, pipeline: int, en: Value = None,
                  domain: str = "sync", name: str = "pc") -> Value:
    """popcount(XNOR(x, w)) over ``simd`` bits with ``pipeline`` register stages.

    Registers load only while ``en`` (default: always), so a caller stalls the whole tree with
    its own handshake. Returns an unsigned value of ``bitlen(simd)`` bits, valid ``pipeline``
    cycles after its inputs.
    """
    levels = tree_levels(simd)
    regs_after = stage_levels(levels, pipeline)
    nodes = _leaves(x, w, simd)
    level = 0
    while True:
        if level in regs_after:
            staged = []
            for idx, (v, top) in enumerate(nodes):
                r = Signal(unsigned(top.bit_length()), name=f"{name}_l{level}_{idx}")
                if en is None:
                    m.d[domain] += r.eq(v)
                else:
                    with m.If(en):
                        m.d[domain] += r.eq(v)
                staged.append((r, top))
            nodes = staged
        if len(nodes) == 1:
            break
        level += 1
        nxt = []
        for j in range(0, len(nodes) - 1, 2):
            (a, ta), (b, tb) = nodes[j], nodes[j + 1]
            top = ta + tb
            nxt.append(((a + b)[:top.bit_length()], top))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    assert level == levels - 1, (level, levels)
    v, _ = nodes[0]
    out = Signal(unsigned(simd.bit_length()), name=f"{name}_out")
    m.d.comb += out.eq(v)
    return out


class XnorPopcountPE(wiring.Component):
    """One lane: ``o.payload = popcount(XNOR(i.payload.x, i.payload.w))``.

    Ports: ``i: In(stream.Signature(StructLayout({"x": SIMD, "w": SIMD})))``,
    ``o: Out(stream.Signature(unsigned(bitlen(SIMD))))``. Latency ``params.pipeline`` cycles;
    the pipeline advances when ``~o.valid | o.ready`` and valid bits travel with the data.
    """

    def __init__(self, params: PEParams):
        if not isinstance(params, PEParams):
            from hw.errors import BinbertError
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise BinbertError(f"XnorPopcountPE: params must be PEParams, got {type(params).__name__}")
        self.params = params
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
        valid = self.i.valid
        for s in range(p.pipeline):
            v = Signal(name=f"valid_{s}")
            with m.If(en):
                m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += [self.o.payload.eq(count), self.o.valid.eq(valid)]
        return m
