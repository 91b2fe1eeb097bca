"""Bit-serial arithmetic units with stream handshakes: restoring divider, square root and
shift-add multiplier.

One result bit per cycle (docs/arithmetic.md §13, §17: one division per row, the isqrt of the
LayerNorm). Each unit takes one operand beat, works ``bits`` cycles, holds its result until it
is taken, and accepts the next operand in the cycle its result leaves, so back-to-back
operations cost ``bits + 1`` cycles each. A ``tag`` payload travels through unchanged, so a
caller can carry side data (signs, sums) along a chain of units without its own bookkeeping.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import BinbertError
from hw.validate import int_value, positive_int, silence

__all__ = ["SeqDivider", "SeqMultiplier", "SeqSqrt", "quotient_bits"]


def _tag_shape(tag):
    return Shape.cast(tag) if not isinstance(tag, data.Layout) else tag.as_shape()


def quotient_bits(max_dividend: int, min_divisor: int) -> int:
    """Quotient width that holds max_dividend // min_divisor (>= 1)."""
    if max_dividend < 0 or min_divisor < 1:
        raise BinbertError(f"quotient_bits: dividend {max_dividend} / divisor {min_divisor} invalid")
    return max(1, (max_dividend // min_divisor).bit_length())


class SeqDivider(wiring.Component):
    """Unsigned floor division ``q = n // d``, one quotient bit per cycle (restoring).

    ``i.payload``: {n: dividend_bits, d: divisor_bits, tag}; ``o.payload``: {q: q_bits, tag}.
    The caller guarantees ``n < d << q_bits`` and ``d >= 1`` (sized with :func:`quotient_bits`);
    a constant divisor may be given as ``divisor`` (then ``i.payload.d`` is absent).
    ``steps`` restoring steps run per cycle (radix 2^steps; a chain of ``steps`` subtractors).
    Cycles per operation: ceil(q_bits / steps) + 1.
    """

    def __init__(self, *, dividend_bits: int, divisor_bits: int, q_bits: int, tag=0,
                 divisor: int | None = None, steps: int = 1):
        silence(self)  # until validated: a refused unit is never elaborated
        for name, v in (("dividend_bits", dividend_bits), ("divisor_bits", divisor_bits),
                        ("q_bits", q_bits), ("steps", steps)):
            positive_int("SeqDivider", name, v)
        if divisor is not None and not 1 <= divisor < (1 << divisor_bits):
            raise BinbertError(f"SeqDivider: divisor={divisor} does not fit {divisor_bits} bits")
        silence(self, False)
        self.dividend_bits, self.divisor_bits, self.q_bits = dividend_bits, divisor_bits, q_bits
        self.divisor = divisor
        self.steps = steps
        self.iters = -(-q_bits // steps)
        self.tag_shape = tag
        fields = {"n": unsigned(dividend_bits)}
        if divisor is None:
            fields["d"] = unsigned(divisor_bits)
        fields["tag"] = tag
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(fields))),
            "o": Out(stream.Signature(data.StructLayout({"q": unsigned(q_bits), "tag": tag}))),
        })

    @property
    def cycles(self) -> int:
        return self.iters + 1

    def elaborate(self, platform):
        m = Module()
        qb = self.iters * self.steps                       # padded: extra leading quotient bits are 0
        # operands and result: no reset, all loaded with the operand (busy/o_valid guard them)
        rem = Signal(self.divisor_bits, name="rem", reset_less=True)  # always < d
        q = Signal(qb, name="q", reset_less=True)          # dividend low bits, then quotient
        d = Signal(self.divisor_bits, name="d", reset_less=True)
        tag = Signal(_tag_shape(self.tag_shape), name="tag", reset_less=True)
        busy = Signal()
        count = Signal(range(self.iters + 1))
        o_valid = Signal()

        divisor = self.i.payload.d if self.divisor is None else Const(self.divisor, self.divisor_bits)
        m.d.comb += [
            self.i.ready.eq(~busy & (~o_valid | self.o.ready)),
            self.o.valid.eq(o_valid),
            self.o.payload.q.eq(q[:self.q_bits]),
            self.o.payload.tag.eq(tag),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)
        # `steps` restoring steps, chained combinationally
        r, bits = rem, []
        for k in range(self.steps):
            trial = Cat(q[qb - 1 - k], r)                  # 2*rem + next dividend bit, < 2d
            diff = Signal(self.divisor_bits + 2, name=f"diff{k}")
            m.d.comb += diff.eq(trial - d)
            fits = ~diff[-1]
            nr = Signal(self.divisor_bits, name=f"rem{k}")
            m.d.comb += nr.eq(Mux(fits, diff, trial))
            r = nr
            bits.append(fits)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                rem.eq(self.i.payload.n >> qb),
                q.eq(self.i.payload.n),                    # the low qb bits (zero-extended)
                d.eq(divisor),
                tag.eq(self.i.payload.tag),
                busy.eq(1),
                count.eq(self.iters),
            ]
        with m.Elif(busy):
            low = q[:qb - self.steps] if qb > self.steps else Const(0, 0)
            m.d.sync += [
                rem.eq(r),
                q.eq(Cat(*reversed(bits), low) if qb > self.steps else Cat(*reversed(bits))),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), o_valid.eq(1)]
        return m


class SeqSqrt(wiring.Component):
    """Floor square root ``s = isqrt(x)`` of an unsigned ``x_bits`` operand, one bit per cycle.

    ``i.payload``: {x, tag}; ``o.payload``: {s: ceil(x_bits/2) bits, tag}.
    Cycles per operation: ceil(x_bits / 2) + 1.
    """

    def __init__(self, *, x_bits: int, tag=0):
        silence(self)  # until validated: a refused unit is never elaborated
        positive_int("SeqSqrt", "x_bits", x_bits)
        silence(self, False)
        self.x_bits = x_bits + (x_bits & 1)  # even: one result bit per pair of operand bits
        self.s_bits = self.x_bits // 2
        self.tag_shape = tag
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"x": unsigned(x_bits), "tag": tag}))),
            "o": Out(stream.Signature(data.StructLayout({"s": unsigned(self.s_bits), "tag": tag}))),
        })

    @property
    def cycles(self) -> int:
        return self.s_bits + 1

    def elaborate(self, platform):
        m = Module()
        w, sb = self.x_bits, self.s_bits
        # Digit-by-digit: rem holds x - s^2 for the bits seen so far; each step brings in two
        # more operand bits and tries the next result bit (trial = 4*s + 1).
        # no reset: loaded with the operand (busy/o_valid guard them)
        x = Signal(w, name="x", reset_less=True)
        rem = Signal(sb + 2, name="rem", reset_less=True)
        s = Signal(sb, name="s", reset_less=True)
        tag = Signal(_tag_shape(self.tag_shape), name="tag", reset_less=True)
        busy = Signal()
        count = Signal(range(sb + 1))
        o_valid = Signal()
        m.d.comb += [
            self.i.ready.eq(~busy & (~o_valid | self.o.ready)),
            self.o.valid.eq(o_valid),
            self.o.payload.s.eq(s),
            self.o.payload.tag.eq(tag),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)
        cur = Signal(sb + 3)
        m.d.comb += cur.eq(Cat(x[w - 2:w], rem))           # 4*rem + next two bits
        trial = Signal(sb + 3)
        m.d.comb += trial.eq(Cat(Const(1, 2), s))          # 4*s + 1
        diff = Signal(sb + 4)
        m.d.comb += diff.eq(cur - trial)
        fits = ~diff[-1]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [x.eq(self.i.payload.x), rem.eq(0), s.eq(0),
                         tag.eq(self.i.payload.tag), busy.eq(1), count.eq(sb)]
        with m.Elif(busy):
            m.d.sync += [
                x.eq(x << 2),
                rem.eq(Mux(fits, diff, cur)),
                s.eq(Cat(fits, s[:sb - 1])),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), o_valid.eq(1)]
        return m


class SeqMultiplier(wiring.Component):
    """Signed product ``p = a * b``, ``steps`` bits of ``b`` per cycle, least significant first
    (shift-add; b's sign bit weighs -2^(b_bits-1), so no correction step is needed).

    ``i.payload``: {a: signed(a_bits), b: signed(b_bits), tag}; ``o.payload``:
    {p: signed(a_bits + b_bits), tag}. An unsigned operand is passed zero-extended by one bit.
    Cycles per operation: ceil(b_bits / steps) + 1. A LayerNorm shares one of these for all
    its products where full-width multipliers do not fit (hw/rtl/layernorm.py, ``multiplier``).
    """

    def __init__(self, *, a_bits: int, b_bits: int, tag=0, steps: int = 1):
        silence(self)  # until validated: a refused unit is never elaborated
        for name, v in (("a_bits", a_bits), ("b_bits", b_bits), ("steps", steps)):
            lo = 2 if name != "steps" else 1
            int_value(v, f"SeqMultiplier: {name}={v!r} must be an integer >= {lo}", lo=lo)
        silence(self, False)
        self.a_bits, self.b_bits, self.steps = a_bits, b_bits, steps
        self.iters = -(-b_bits // steps)
        self.tag_shape = tag
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"a": signed(a_bits), "b": signed(b_bits),
                                                        "tag": tag}))),
            "o": Out(stream.Signature(data.StructLayout({"p": signed(a_bits + b_bits),
                                                         "tag": tag}))),
        })

    @property
    def cycles(self) -> int:
        return self.iters + 1

    def elaborate(self, platform):
        m = Module()
        bb = self.iters * self.steps                       # b sign-extended to whole cycles
        # Classic shift-add, least significant bit first: ``hi`` holds the partial sum's upper
        # part (|hi| <= |a|), ``lo`` the multiplier bits not yet used and, from the top, the
        # product bits already final; the adder is a_bits + 2 wide, not a_bits + b_bits.
        # no reset: loaded with the operands (busy/o_valid guard them)
        hi = Signal(signed(self.a_bits + 1), name="hi", reset_less=True)
        lo = Signal(bb, name="lo", reset_less=True)
        a = Signal(signed(self.a_bits), name="a", reset_less=True)
        tag = Signal(_tag_shape(self.tag_shape), name="tag", reset_less=True)
        busy = Signal()
        count = Signal(range(self.iters + 1))
        o_valid = Signal()
        m.d.comb += [
            self.i.ready.eq(~busy & (~o_valid | self.o.ready)),
            self.o.valid.eq(o_valid),
            self.o.payload.p.eq(Cat(lo, hi)[:self.a_bits + self.b_bits]),
            self.o.payload.tag.eq(tag),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)
        h, low = hi, lo
        for k in range(self.steps):
            # b's sign bit (the last bit of the last cycle) weighs -2^(bb-1): subtract a
            msb = (count == 1) if k == self.steps - 1 else Const(0, 1)
            t = Signal(signed(self.a_bits + 2), name=f"t{k}")
            m.d.comb += t.eq(h + Mux(low[0], Mux(msb, -a, a), 0))
            nh = Signal(signed(self.a_bits + 1), name=f"hi{k}")
            nl = Signal(bb, name=f"lo{k}")
            m.d.comb += [nh.eq(t >> 1), nl.eq(Cat(low[1:], t[0]))]
            h, low = nh, nl
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                hi.eq(0),
                lo.eq(self.i.payload.b.as_signed()),       # sign-extends to bb bits
                a.eq(self.i.payload.a),
                tag.eq(self.i.payload.tag),
                busy.eq(1),
                count.eq(self.iters),
            ]
        with m.Elif(busy):
            m.d.sync += [hi.eq(h), lo.eq(low), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), o_valid.eq(1)]
        return m
