"""Small-pin-count FPGA tops: any streaming block behind 8-bit valid/ready byte ports.

A block such as the MVU has wide stream ports (SIMD·A·MMV bits in, PE·MMV accumulators out)
that no small package can bond out. :class:`ByteStreamTop` puts width converters around it:

* ``byte_i`` (8 bits, valid/ready) -> :class:`Deserializer` -> ``block.i`` (one word per
  ``ceil(width/8)`` bytes, least significant byte first, the contract's LSB-first order);
* ``block.o`` -> :class:`Serializer` -> ``byte_o`` (same byte order; signed payloads keep their
  two's-complement bits).

:class:`BoardTop` binds those two byte streams to 20 header pins of a real board (iCEBreaker
PMODs for the iCE40 UP5K SG48, ULX3S GPIO header for the ECP5-85k), clocked by the board
oscillator. The block's clock in a deployment would come from a PLL; timing is analysed by
nextpnr at the requested frequency (see :mod:`hw.fpga.pnr`), not at the oscillator's.
"""
from __future__ import annotations

from typing import Callable

from amaranth import Cat, Elaboratable, Module, Shape, Signal, Value
from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.validate import int_value, silence

BUS_BITS = 8


def stream_width(port) -> int:
    """Bit width of a stream port's payload (a plain value or a data.View)."""
    return Shape.cast(port.payload.shape()).width


class _ByteConverter(wiring.Component):
    """A ``width``-bit word stream on one side and its ``ceil(width/8)`` bytes on the other
    (``word_in``: the word is the input ``i``)."""

    def __init__(self, width: int, *, word_in: bool):
        silence(self)  # until validated: a refused converter is never elaborated
        int_value(width, f"{type(self).__name__}: width={width!r} must be a positive int", lo=1)
        silence(self, False)
        self.width = width
        self.n_bytes = -(-width // BUS_BITS)
        i, o = (width, BUS_BITS) if word_in else (BUS_BITS, width)
        super().__init__({"i": In(stream.Signature(i)), "o": Out(stream.Signature(o))})


class Deserializer(_ByteConverter):
    """``ceil(width/8)`` bytes in, one ``width``-bit word out; the first byte is the LSB."""

    def __init__(self, *, width: int):
        super().__init__(width, word_in=False)

    def elaborate(self, platform):
        m = Module()
        buf = Signal(self.n_bytes * BUS_BITS)
        count = Signal(range(max(2, self.n_bytes)))
        full = Signal()
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.valid.eq(full),
            self.o.payload.eq(buf[: self.width]),
        ]
        with m.If(self.i.valid & self.i.ready):
            # Shift right and enter at the top: after n bytes the first one sits at bits [0, 8).
            m.d.sync += buf.eq(Cat(buf[BUS_BITS:], self.i.payload) if self.n_bytes > 1
                               else self.i.payload)
            with m.If(count == self.n_bytes - 1):
                m.d.sync += [count.eq(0), full.eq(1)]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        return m


class Serializer(_ByteConverter):
    """One ``width``-bit word in, ``ceil(width/8)`` bytes out, least significant byte first.

    ``i.ready`` is a flip-flop output (``idle``), not a gate: the block's stall enable
    (``~o.valid | o.ready``) fans out to its whole pipeline, so every LUT level in front of it
    costs Fmax (one level = 2.6 ns on the iCE40).
    """

    def __init__(self, *, width: int):
        super().__init__(width, word_in=True)

    def elaborate(self, platform):
        m = Module()
        buf = Signal(self.n_bytes * BUS_BITS)
        count = Signal(range(max(2, self.n_bytes)))
        idle = Signal(init=1)
        m.d.comb += [
            self.i.ready.eq(idle),
            self.o.valid.eq(~idle),
            self.o.payload.eq(buf[:BUS_BITS]),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [buf.eq(self.i.payload), idle.eq(0), count.eq(0)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += buf.eq(buf >> BUS_BITS)
            with m.If(count == self.n_bytes - 1):
                m.d.sync += idle.eq(1)
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class ByteStreamTop(wiring.Component):
    """``block`` (a component with stream ports ``i`` and ``o``) behind 8-bit byte streams.

    The block is kept as submodule ``core`` so the flow can count its cells apart from the
    converters (see :mod:`hw.fpga.synthesis`).
    """

    def __init__(self, block: wiring.Component):
        for name in ("i", "o"):
            if not hasattr(block, name) or not hasattr(getattr(block, name), "payload"):
                silence(self)
                raise BinbertError(f"ByteStreamTop: block {type(block).__name__} has no stream "
                                   f"port '{name}'")
        self.block = block
        self.in_width = stream_width(block.i)
        self.out_width = stream_width(block.o)
        super().__init__({"byte_i": In(stream.Signature(BUS_BITS)),
                          "byte_o": Out(stream.Signature(BUS_BITS))})

    @property
    def in_bytes(self) -> int:
        return -(-self.in_width // BUS_BITS)

    @property
    def out_bytes(self) -> int:
        return -(-self.out_width // BUS_BITS)

    def elaborate(self, platform):
        m = Module()
        m.submodules.deser = deser = Deserializer(width=self.in_width)
        m.submodules.core = core = self.block
        m.submodules.ser = ser = Serializer(width=self.out_width)
        wiring.connect(m, wiring.flipped(self.byte_i), deser.i)
        wiring.connect(m, ser.o, wiring.flipped(self.byte_o))
        # Payload shapes differ (plain bits vs. the block's layouts): wire the bits by hand.
        m.d.comb += [
            Value.cast(core.i.payload).eq(deser.o.payload),
            core.i.valid.eq(deser.o.valid),
            deser.o.ready.eq(core.i.ready),
            ser.i.payload.eq(Value.cast(core.o.payload)),
            ser.i.valid.eq(core.o.valid),
            core.o.ready.eq(ser.i.ready),
        ]
        return m


# 20 header pins: byte_i = data[8] + valid (in) + ready (out); byte_o = data[8] + valid (out)
# + ready (in). Pin names are the boards' connector pins (amaranth-boards numbering).
def _byte_resources(conn_in, conn_hs, conn_out, attrs) -> list[Resource]:
    (ci, pi), (ch, ph), (co, po) = conn_in, conn_hs, conn_out
    return [
        Resource("byte_i", 0,
                 Subsignal("data", Pins(pi, dir="i", conn=ci)),
                 Subsignal("valid", Pins(ph[0], dir="i", conn=ch)),
                 Subsignal("ready", Pins(ph[1], dir="o", conn=ch)),
                 attrs),
        Resource("byte_o", 0,
                 Subsignal("data", Pins(po, dir="o", conn=co)),
                 Subsignal("valid", Pins(ph[2], dir="o", conn=ch)),
                 Subsignal("ready", Pins(ph[3], dir="i", conn=ch)),
                 attrs),
    ]


def board_resources(family: str) -> list[Resource]:
    """Byte-stream pin resources for the board of ``family`` ('ice40' or 'ecp5')."""
    if family == "ice40":  # iCEBreaker: PMOD1A in, PMOD1B handshakes, PMOD2 out
        pmod = "1 2 3 4 7 8 9 10"
        return _byte_resources((("pmod", 0), pmod), (("pmod", 1), ["1", "2", "3", "4"]),
                               (("pmod", 2), pmod), Attrs(IO_STANDARD="SB_LVCMOS"))
    if family == "ecp5":  # ULX3S: GPIO header pairs 0..9
        gp = [f"{i}{s}" for i in range(10) for s in "+-"]
        return _byte_resources((("gpio", 0), " ".join(gp[0:8])), (("gpio", 0), gp[8:12]),
                               (("gpio", 0), " ".join(gp[12:20])), Attrs(IO_TYPE="LVCMOS33"))
    raise BinbertError(f"board_resources: unknown family {family!r} (ice40, ecp5)")


class BoardTop(Elaboratable):
    """:class:`ByteStreamTop` of ``make_block()`` bound to the board's byte-stream pins."""

    def __init__(self, make_block: Callable[[], wiring.Component]):
        self.make_block = make_block

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = ByteStreamTop(self.make_block())
        if platform is None:
            return m
        bi = platform.request("byte_i", 0, dir="-")
        bo = platform.request("byte_o", 0, dir="-")
        bufs = {}
        for name, port, direction in (("i_data", bi.data, "i"), ("i_valid", bi.valid, "i"),
                                      ("i_ready", bi.ready, "o"), ("o_data", bo.data, "o"),
                                      ("o_valid", bo.valid, "o"), ("o_ready", bo.ready, "i")):
            bufs[name] = m.submodules[f"pin_{name}"] = io.Buffer(direction, port)
        m.d.comb += [
            top.byte_i.payload.eq(bufs["i_data"].i),
            top.byte_i.valid.eq(bufs["i_valid"].i),
            bufs["i_ready"].o.eq(top.byte_i.ready),
            bufs["o_data"].o.eq(top.byte_o.payload),
            bufs["o_valid"].o.eq(top.byte_o.valid),
            top.byte_o.ready.eq(bufs["o_ready"].i),
        ]
        return m
