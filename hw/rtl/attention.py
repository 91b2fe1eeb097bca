"""Attention in hardware (docs/arithmetic.md §11, §13-§15).

:class:`AttentionCore` -- scores, probabilities, P·V and the context requantizer, between the
Q/K/V requantizers and the output projection. Golden: ``Attention.compute(q, k, v, valid)``.
  * LOAD (``_load``): the q, k, v streams (one beat per token and head: ArrayLayout(code, head_dim),
    token-major) and the ``mask`` stream (one bit per token, 1 = real token) fill one of
    ``banks`` sequence buffers; with two banks the next sequence loads while this one computes.
  * PRODUCER (``_scores``): per query row (token i, head h): Q[i, h] into a register, then one score per cycle
    S_j = Q·K[j, h] (d small multipliers, or d − 2·popcount(q XOR k) for 1-bit Q and K) with
    the key's mask bit, into the probabilities unit (hw/rtl/softmax.py: softmax §13 or Heaviside §14).
  * CONSUMER (``_context``): one probability per cycle, C += p_j·V[j, h] over d lanes; after
    the row's last key the context requantizer (§15, ``_requantize``) emits the row's d codes,
    ``ctx_lanes`` per output beat.
:class:`AttentionBlock` -- the attention half of an encoder layer (§11): qkv_in requant, the
Q/K/V projections (three LinearUnits, hw/rtl/linear.py), the core, the output projection, the
residual add and ln1. Golden: ``EncoderLayer.attention_block``.
:class:`LayerFolding` -- an EncoderLayer plus the attention half's folding: the base of both
:class:`AttentionParams` and hw/rtl/encoder_layer.py's ``EncoderLayerParams``, so the ops and their checks
live once, in the golden ``EncoderLayer``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.golden.arith import signed_bits
from hw.golden.attention import Attention
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.layernorm import LayerNorm
from hw.errors import BinbertError
from hw.validate import params_of, positive_int
from hw.rtl.block import DerivedParts
from hw.rtl.layernorm import MULTIPLIERS, AddNormParams, shared_or_parallel
from hw.rtl.linear import LinearUnitParams
from hw.rtl.mvu import BUFFER_STYLES
from hw.rtl.requant import RequantUnitParams, code_shape, const_layout, requant_pipeline, rows_consts
from hw.rtl.softmax import ProbsParams
from hw.rtl.stream import Fork, Regroup, StreamFifo

__all__ = ["AttentionCoreParams", "AttentionCore", "LayerFolding", "AttentionParams", "AttentionBlock",
           "block_layout"]


def block_layout(res_bits: int, lanes: int) -> data.StructLayout:
    """Input beat of the attention block / encoder layer: residual lanes + the token's mask bit
    (the same on every beat of a token; read on its first)."""
    return data.StructLayout({"r": data.ArrayLayout(signed(res_bits), lanes), "valid": unsigned(1)})


@dataclass(frozen=True, kw_only=True, eq=False)
class AttentionCoreParams(DerivedParts):
    """The golden ``Attention`` over sequences of ``seq_len`` tokens, ``banks`` sequence buffers."""

    att: Attention
    seq_len: int
    banks: int = 2
    probs_banks: int | None = None
    ctx_lanes: int | None = None   # context values requantized per cycle (None: as few as keep up)

    def __post_init__(self):
        o = "AttentionCoreParams"
        if not isinstance(self.att, Attention):
            raise BinbertError(f"{o}: att must be a hw.golden.attention.Attention, got {type(self.att).__name__}")
        positive_int(o, "seq_len", self.seq_len)
        if self.seq_len > self.att.max_len:
            raise BinbertError(f"{o}: seq_len={self.seq_len} exceeds the attention's max_len={self.att.max_len}")
        if self.banks not in (1, 2):
            raise BinbertError(f"{o}: banks={self.banks!r} must be 1 or 2")
        if self.ctx_lanes is None:
            d = self.att.head_dim
            fast = max(self.seq_len + 1, self.probs.cycles) - 1
            object.__setattr__(self, "ctx_lanes", min(c for c in range(1, d + 1) if d % c == 0 and d // c <= fast))
        positive_int(o, "ctx_lanes", self.ctx_lanes)
        if self.att.head_dim % self.ctx_lanes:
            raise BinbertError(f"{o}: ctx_lanes={self.ctx_lanes} does not divide head_dim={self.att.head_dim}")
        if self.att.context.rows not in (1, self.att.hidden):
            raise BinbertError(f"{o}: the context requantizer has {self.att.context.rows} rows, "
                               f"expected 1 or hidden={self.att.hidden}")

    @cached_property
    def probs(self) -> ProbsParams:
        return ProbsParams(probs=self.att.probs, length=self.seq_len, banks=self.probs_banks)

    @property
    def heads(self) -> int:
        return self.att.heads

    @property
    def head_dim(self) -> int:
        return self.att.head_dim

    @property
    def rows(self) -> int:
        """Query rows per sequence (tokens x heads)."""
        return self.seq_len * self.heads

    @property
    def row_cycles(self) -> int:
        """Steady-state cycles per query row: the producer (Q read + L scores), the
        probabilities unit, the consumer (L products), the context serializer (d/ctx_lanes)."""
        return max(self.seq_len + 1, self.probs.cycles, self.head_dim // self.ctx_lanes + 1)

    @property
    def cycles(self) -> int:
        """Compute cycles per sequence (of ``seq_len`` Q/K/V tokens) once loaded, steady state
        over many sequences."""
        return self.rows * self.row_cycles

    @property
    def latency(self) -> int:
        """Last load beat of a sequence to its last context beat (no stalls, upper bound)."""
        return self.cycles + self.probs.latency + 8

    def compute(self, q, k, v, valid) -> np.ndarray:
        return self.att.compute(q, k, v, valid)

    def create(self):
        return AttentionCore(self)


def _values(m: Module, word, bits: int, lanes: int, name: str):
    """Arithmetic values of ``lanes`` codes packed in ``word``: ±1 for bits, the code otherwise."""
    out = []
    for e in range(lanes):
        v = Signal(signed(max(2, bits)), name=f"{name}{e}")
        if bits == 1:
            m.d.comb += v.eq(Mux(word[e], 1, -1))
        else:
            m.d.comb += v.eq(word[e * bits:(e + 1) * bits].as_signed())
        out.append(v)
    return out


def _mul_small(m: Module, x, y, y_bits: int, *, signed_b: bool, name: str):
    """x · y for a narrow ``y`` (a code of y_bits) as a sum of shifted copies of x: adders,
    not a DSP block -- the core has 2·head_dim of these and DSPs are scarce (ECP5: 156)."""
    if y_bits == 1 and not signed_b:
        return Mux(y[0], x, 0)
    terms = []
    for i in range(y_bits):
        part = Signal(signed(len(x) + i + 1), name=f"{name}_p{i}")
        neg = signed_b and i == y_bits - 1   # two's complement: the top bit weighs -2^(n-1)
        m.d.comb += part.eq(Mux(y[i], (-(x << i)) if neg else (x << i), 0))
        terms.append(part)
    return sum(terms)



def _nxt(x, top):
    """x + 1, wrapping to 0 after top - 1 (a counter over 0 .. top - 1)."""
    return Mux(x == top - 1, 0, x + 1)


class AttentionCore(wiring.Component):
    """Ports: ``q``, ``k``, ``v``: In(stream of ArrayLayout(code, head_dim)), one beat per
    (token, head), token-major; ``mask``: In(stream of unsigned(1)), one beat per token;
    ``o``: Out(stream of ArrayLayout(context code, ctx_lanes)), head_dim / ctx_lanes beats per
    (token, head), the row's context in order."""

    def __init__(self, params: AttentionCoreParams):
        self.params = params_of(self, params, AttentionCoreParams)
        a = params.att
        d = a.head_dim
        super().__init__({
            "q": In(stream.Signature(data.ArrayLayout(code_shape(a.q_bits), d))),
            "k": In(stream.Signature(data.ArrayLayout(code_shape(a.k_bits), d))),
            "v": In(stream.Signature(data.ArrayLayout(code_shape(a.v_bits), d))),
            "mask": In(stream.Signature(unsigned(1))),
            "o": Out(stream.Signature(data.ArrayLayout(code_shape(a.context.out_bits), params.ctx_lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        mems, masks, done, produced, free_bank, free_now = self._load(m)
        m.submodules.probs = probs = self.params.probs.create()
        self._scores(m, probs, mems, masks, done, produced)
        en, ctx, ser_c, ser_h, ser_issue = self._context(m, probs, mems, produced, free_bank, free_now)
        self._requantize(m, en, ctx, ser_c, ser_h, ser_issue)
        return m

    def _load(self, m):
        """LOAD: the Q, K, V sequence buffers (``banks`` sequences each) and the mask bits, one
        loader per input stream. Returns the buffers, the masks, each loader's per-bank done
        bits, the producer's per-bank done bits and the consumer's bank release."""
        p = self.params
        a = p.att
        L, H, d, B = p.seq_len, p.heads, p.head_dim, p.banks
        rows = L * H
        mems = {}
        for name, bits in (("q", a.q_bits), ("k", a.k_bits), ("v", a.v_bits)):
            mem = memory.Memory(shape=unsigned(d * bits), depth=B * rows, init=[])
            m.submodules[f"{name}buf"] = mem
            mems[name] = mem
        masks = Signal(data.ArrayLayout(unsigned(L), B))
        # done[X][b]: loader X finished bank b; produced[b]: the producer is done with bank b
        loaders = ("q", "k", "v", "mask")
        done = {x: Signal(B, name=f"done_{x}") for x in loaders}
        produced = Signal(B)
        free_bank = Signal(range(B))
        free_now = Signal()
        for x in loaders:
            port = getattr(self, x)
            bank = Signal(range(B), name=f"{x}_bank")
            count = Signal(range(rows if x != "mask" else L), name=f"{x}_count")
            top = rows if x != "mask" else L
            can = ~done[x].bit_select(bank, 1)
            m.d.comb += port.ready.eq(can)
            take = port.valid & port.ready
            if x == "mask":
                with m.If(take):
                    m.d.sync += masks[bank].bit_select(count, 1).eq(port.payload)
            else:
                wr = mems[x].write_port()
                m.d.comb += [wr.addr.eq(bank * rows + count), wr.data.eq(port.payload.as_value()),
                             wr.en.eq(take)]
            with m.If(take):
                m.d.sync += count.eq(_nxt(count, top))
                with m.If(count == top - 1):
                    m.d.sync += [done[x].bit_select(bank, 1).eq(1), bank.eq(_nxt(bank, B))]
            with m.If(free_now):   # the consumer released a bank (never the one being loaded)
                m.d.sync += done[x].bit_select(free_bank, 1).eq(0)

        return mems, masks, done, produced, free_bank, free_now

    def _scores(self, m, probs, mems, masks, done, produced):
        """PRODUCER: per query row the Q read, then the L scores Q·K (or the XOR popcount of
        bits, minus the head's Bi-Attention threshold) with their key mask into ``probs``."""
        p = self.params
        a = p.att
        L, H, d, B = p.seq_len, p.heads, p.head_dim, p.banks
        rows = L * H
        pb = Signal(range(B))
        p_run = Signal()
        p_row = Signal(range(rows))      # i·H + h
        p_h = Signal(range(H))
        p_j = Signal(range(L + 1))       # L: the Q read of the row
        ready_bank = Signal()
        m.d.comb += ready_bank.eq(done["q"].bit_select(pb, 1) & done["k"].bit_select(pb, 1)
                                  & done["v"].bit_select(pb, 1) & done["mask"].bit_select(pb, 1)
                                  & ~produced.bit_select(pb, 1))
        en_p = Signal()
        m.d.comb += en_p.eq(~probs.i.valid | probs.i.ready)
        q_rd = mems["q"].read_port(domain="sync")
        k_rd = mems["k"].read_port(domain="sync")
        is_q = p_j == L
        m.d.comb += [q_rd.addr.eq(pb * rows + p_row), q_rd.en.eq(en_p),
                     k_rd.addr.eq(pb * rows + p_j * H + p_h), k_rd.en.eq(en_p)]
        with m.If(~p_run & ready_bank):
            m.d.sync += [p_run.eq(1), p_row.eq(0), p_h.eq(0), p_j.eq(L)]
        issue = Signal()
        m.d.comb += issue.eq(p_run & en_p)
        with m.If(issue):
            with m.If(is_q):
                m.d.sync += p_j.eq(0)
            with m.Elif(p_j == L - 1):
                m.d.sync += [p_j.eq(L), p_h.eq(_nxt(p_h, H)), p_row.eq(_nxt(p_row, rows))]
                with m.If(p_row == rows - 1):
                    m.d.sync += [p_run.eq(0), produced.bit_select(pb, 1).eq(1), pb.eq(_nxt(pb, B))]
            with m.Else():
                m.d.sync += p_j.eq(p_j + 1)
        # stage 1: Q word into the row register, or a K word -> score
        s1_valid, s1_isq = Signal(), Signal()
        s1_mask = Signal()
        s1_bank = Signal(range(B))
        # the row's head travels with each score for the per-head Bi-Attention threshold (§14)
        s1_h, s1b_h, s2_h = Signal(range(H)), Signal(range(H)), Signal(range(H))
        with m.If(en_p):
            m.d.sync += [s1_valid.eq(issue), s1_isq.eq(is_q), s1_bank.eq(pb),
                         s1_mask.eq(masks[pb].bit_select(p_j, 1)), s1_h.eq(p_h)]
        # datapath registers below carry no reset: the valid bits beside them do
        q_reg = Signal(d * a.q_bits, reset_less=True)
        with m.If(en_p & s1_valid & s1_isq):
            m.d.sync += q_reg.eq(q_rd.data)
        # stage 1b: the K word registered (block RAM data is unregistered on ECP5); q_reg still
        # holds this row's Q here (the next row's Q lands one cycle after its last K)
        k_reg = Signal(d * a.k_bits, reset_less=True)
        s1b_valid, s1b_mask = Signal(), Signal()
        with m.If(en_p):
            m.d.sync += [k_reg.eq(k_rd.data), s1b_valid.eq(s1_valid & ~s1_isq), s1b_mask.eq(s1_mask),
                         s1b_h.eq(s1_h)]
        # stage 2: per-lane products (or XORs) registered; stage 3: their sum, the score
        if a.q_bits == 1 and a.k_bits == 1:
            part_bits = [Signal(name=f"qk{e}", reset_less=True) for e in range(d)]
            with m.If(en_p):
                m.d.sync += [part_bits[e].eq(q_reg[e] ^ k_reg[e]) for e in range(d)]
            score = d - 2 * sum(part_bits)
        else:
            qv = _values(m, q_reg, a.q_bits, d, "qv")
            kv = _values(m, k_reg, a.k_bits, d, "kv")
            prods = []
            for e, (x, y) in enumerate(zip(qv, kv)):
                pr = Signal(signed(len(x) + max(2, a.k_bits) + 1), name=f"qkp{e}", reset_less=True)
                with m.If(en_p):
                    m.d.sync += pr.eq(_mul_small(m, x, y, max(2, a.k_bits), signed_b=True, name=f"qk{e}"))
                prods.append(pr)
            score = sum(prods)
        if a.thresholds is not None and a.thresholds.any():
            thr = Signal(signed(signed_bits(int(a.thresholds.min()), int(a.thresholds.max()))))
            if H == 1:
                m.d.comb += thr.eq(int(a.thresholds[0]))
            else:
                with m.Switch(s2_h):
                    for h, t in enumerate(a.thresholds.tolist()):
                        with m.Case(h):
                            m.d.comb += thr.eq(t)
            score = score - thr
        s2_valid, s2_mask = Signal(), Signal()
        s_valid = Signal()
        s_out = Signal(p.probs.score_bits, reset_less=True)
        s_mask = Signal()
        with m.If(en_p):
            m.d.sync += [s2_valid.eq(s1b_valid), s2_mask.eq(s1b_mask), s2_h.eq(s1b_h),
                         s_valid.eq(s2_valid), s_out.eq(score), s_mask.eq(s2_mask)]
        m.d.comb += [probs.i.valid.eq(s_valid), probs.i.payload.s.eq(s_out.as_signed()),
                     probs.i.payload.valid.eq(s_mask)]

    def _context(self, m, probs, mems, produced, free_bank, free_now):
        """CONSUMER: each probability times its V word, accumulated over the row's keys into
        the context registers ``ctx``; releases a bank after its last row. Returns the output
        enable, ``ctx`` and the serializer's chunk index, head and issue."""
        p = self.params
        a = p.att
        L, H, d, B = p.seq_len, p.heads, p.head_dim, p.banks
        rows = L * H
        # en: the output side; en_c: the P·V pipeline, which also waits while the context of the
        # previous row is still being requantized chunk by chunk
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        cl = p.ctx_lanes
        chunks = d // cl
        ser_active = Signal()
        ser_c = Signal(range(chunks))
        ser_h = Signal(range(H))
        ser_last = ser_c == chunks - 1
        ser_issue = Signal()
        m.d.comb += ser_issue.eq(ser_active & en)
        en_c = Signal()
        c1_valid, c1_last = Signal(), Signal()
        # a row's final sum may enter ctx only once the previous context has fully left
        m.d.comb += en_c.eq(en & ~(c1_valid & c1_last & ser_active & ~(ser_issue & ser_last)))
        cb = Signal(range(B))
        c_j = Signal(range(L))
        c_h = Signal(range(H))
        c_row = Signal(range(rows))
        v_rd = mems["v"].read_port(domain="sync")
        take = Signal()
        m.d.comb += [take.eq(en_c & probs.o.valid), probs.o.ready.eq(en_c),
                     v_rd.addr.eq(cb * rows + c_j * H + c_h), v_rd.en.eq(en_c)]
        m.d.comb += [free_bank.eq(cb), free_now.eq(0)]
        with m.If(take):
            with m.If(c_j == L - 1):
                m.d.sync += [c_j.eq(0), c_h.eq(_nxt(c_h, H)), c_row.eq(_nxt(c_row, rows))]
                with m.If(c_row == rows - 1):
                    m.d.comb += free_now.eq(1)
                    m.d.sync += [cb.eq(_nxt(cb, B)), produced.bit_select(cb, 1).eq(0)]
            with m.Else():
                m.d.sync += c_j.eq(c_j + 1)
        c1_p = Signal(unsigned(p.probs.p_bits), reset_less=True)
        c1_h = Signal(range(H), reset_less=True)
        with m.If(en_c):
            m.d.sync += [c1_valid.eq(take), c1_last.eq(c_j == L - 1), c1_p.eq(probs.o.payload), c1_h.eq(c_h)]
        vv = _values(m, v_rd.data, a.v_bits, d, "vv")
        cbits = a.context.acc_bits
        acc = [Signal(signed(cbits), name=f"acc{e}") for e in range(d)]  # reset: the first row adds to 0
        ctx = [Signal(signed(cbits), name=f"ctx{e}", reset_less=True) for e in range(d)]
        load_ctx = Signal()
        m.d.comb += load_ctx.eq(en_c & c1_valid & c1_last)
        for e in range(d):
            prod = _mul_small(m, vv[e], c1_p, p.probs.p_bits, signed_b=False, name=f"pv{e}")
            with m.If(en_c & c1_valid):
                with m.If(c1_last):
                    m.d.sync += [acc[e].eq(0), ctx[e].eq(acc[e] + prod)]
                with m.Else():
                    m.d.sync += acc[e].eq(acc[e] + prod)
        # serializer: ctx_lanes context values per cycle into the requantizer
        with m.If(load_ctx):
            m.d.sync += [ser_active.eq(1), ser_c.eq(0), ser_h.eq(c1_h)]
        with m.Elif(ser_issue):
            m.d.sync += ser_c.eq(ser_c + 1)
            with m.If(ser_last):
                m.d.sync += ser_active.eq(0)
        return en, ctx, ser_c, ser_h, ser_issue

    def _requantize(self, m, en, ctx, ser_c, ser_h, ser_issue):
        """The context requantizer, ``ctx_lanes`` values per cycle: the chunk registered with
        its constants, then z and the codes (:func:`requant_pipeline`), then the output."""
        p = self.params
        a = p.att
        H, d = p.heads, p.head_dim
        cl = p.ctx_lanes
        chunks = d // cl
        cbits = a.context.acc_bits
        # stage S: the chunk's values registered, its constants read (per-row requantizer)
        rq = a.context
        per_row = rq.rows > 1
        s_val = [Signal(signed(cbits), name=f"chunk{e}", reset_less=True) for e in range(cl)]
        s_valid = Signal()
        with m.If(en):
            m.d.sync += s_valid.eq(ser_issue)
            for e in range(cl):
                with m.Switch(ser_c):
                    for c in range(chunks):
                        with m.Case(c):
                            m.d.sync += s_val[e].eq(ctx[c * cl + e])
        rows = rows_consts(rq)
        if per_row:
            init = [rows[h * d + c * cl: h * d + (c + 1) * cl] for h in range(H) for c in range(chunks)]
            crom = memory.Memory(shape=data.ArrayLayout(const_layout(rq), cl), depth=H * chunks,
                                 init=init)
            m.submodules.ctx_consts = crom
            c_rd = crom.read_port(domain="sync")
            m.d.comb += [c_rd.addr.eq(ser_h * chunks + ser_c), c_rd.en.eq(en)]
            consts = [c_rd.data[e] for e in range(cl)]
        else:
            consts = rows * cl
        codes = requant_pipeline(m, rq, [[v] for v in s_val], consts, en, lanes=cl, name="ctx")
        z_valid, o_valid = Signal(), Signal()
        with m.If(en):
            m.d.sync += [z_valid.eq(s_valid), o_valid.eq(z_valid)]
        m.d.comb += self.o.valid.eq(o_valid)
        for e in range(cl):
            m.d.comb += self.o.payload[e].eq(codes[e])


@dataclass(frozen=True, kw_only=True, eq=False)
class LayerFolding(DerivedParts):
    """An encoder ``layer`` (the golden op) over sequences of ``seq_len`` tokens with ``lanes``
    residual features per beat and the folding of its attention half: the Q/K/V MVUs' PE x SIMD
    (each of the three), the output MVU's, ``banks`` sequence buffers. Shared by the attention
    block and the whole layer (hw/rtl/encoder_layer.py adds the FFN's folding)."""

    layer: EncoderLayer
    seq_len: int
    lanes: int
    pe_qkv: int
    simd_qkv: int
    pe_o: int
    simd_o: int
    banks: int = 2
    ln_multiplier: str = "parallel"  # the LayerNorms' (hw.rtl.layernorm.LayerNormUnitParams.multiplier)
    mvu_buffer: str = "auto"  # every MVU's input buffer (hw.rtl.mvu.MVUParams.buffer)

    def __post_init__(self):
        o = type(self).__name__
        if not isinstance(self.layer, EncoderLayer):
            raise BinbertError(f"{o}: layer must be a hw.golden.encoder_layer.EncoderLayer, got {type(self.layer).__name__}")
        positive_int(o, "lanes", self.lanes)
        if self.ln_multiplier not in MULTIPLIERS:
            raise BinbertError(f"{o}: ln_multiplier={self.ln_multiplier!r} must be one of "
                               f"{', '.join(MULTIPLIERS)}")
        if self.mvu_buffer not in BUFFER_STYLES:
            raise BinbertError(f"{o}: mvu_buffer={self.mvu_buffer!r} must be one of "
                               f"{', '.join(BUFFER_STYLES)}")
        if self.hidden % self.lanes:
            raise BinbertError(f"{o}: lanes={self.lanes} does not divide hidden={self.hidden}")

    @property
    def hidden(self) -> int:
        return self.layer.ln1.n

    @property
    def res_bits(self) -> int:
        """The residual stream's width (the block's input lanes)."""
        return self.layer.qkv_in.acc_bits

    @property
    def beats(self) -> int:
        return self.hidden // self.lanes


@dataclass(frozen=True, kw_only=True, eq=False)
class AttentionParams(LayerFolding):
    """The attention half of ``layer`` (§11): qkv_in, Q/K/V, the core, attn_out, + r, ln1.
    EncoderLayer already checks that the ops chain; this adds their fit to the residual width."""

    def __post_init__(self):
        super().__post_init__()
        lyr, o = self.layer, "AttentionParams"
        for name in ("query", "key", "value"):
            k = getattr(lyr, name).k
            if k != self.hidden:
                raise BinbertError(f"{o}: {name} reads {k} features, expected hidden={self.hidden}")
        if lyr.attn_out.n != self.hidden:
            raise BinbertError(f"{o}: attn_out has {lyr.attn_out.n} rows, expected hidden={self.hidden}")
        self.core, self.projections, self.out_proj, self.addnorm, self.qin  # noqa: B018

    @property
    def ln(self) -> LayerNorm:
        """ln1: the block's output op (sim/benches/encoder.py reads its out_bits)."""
        return self.layer.ln1

    @cached_property
    def qin(self) -> RequantUnitParams:
        return RequantUnitParams(op=self.layer.qkv_in, n=self.hidden, lanes=self.lanes)

    @cached_property
    def projections(self) -> tuple[LinearUnitParams, ...]:
        lyr = self.layer
        return tuple(LinearUnitParams(lin=lin, pe=self.pe_qkv, simd=self.simd_qkv, out_lanes=lyr.attention.head_dim,
                                      buffer=self.mvu_buffer)
                     for lin in (lyr.query, lyr.key, lyr.value))

    @cached_property
    def core(self) -> AttentionCoreParams:
        return AttentionCoreParams(att=self.layer.attention, seq_len=self.seq_len, banks=self.banks)

    @cached_property
    def out_proj(self) -> LinearUnitParams:
        return LinearUnitParams(lin=self.layer.attn_out, pe=self.pe_o, simd=self.simd_o, out_lanes=self.lanes,
                                buffer=self.mvu_buffer)

    @cached_property
    def addnorm(self) -> AddNormParams:
        """ln1 of attn_out's output (a) + the residual (b)."""
        return AddNormParams(norm=shared_or_parallel(self.ln, self.lanes, self.ln_multiplier),
                             a_bits=self.layer.attn_out.out.out_bits, b_bits=self.res_bits)

    @property
    def stage_cycles(self) -> dict[str, int]:
        """Cycles per sequence of each stage in steady state."""
        L = self.seq_len
        return {"input": L * self.beats, "qkv": L * max(pr.cycles for pr in self.projections),
                "attention": self.core.cycles, "attn_out": L * self.out_proj.cycles,
                "ln1": L * self.addnorm.cycles}

    @property
    def cycles(self) -> int:
        """Steady-state cycles per sequence of ``seq_len`` tokens: with two sequence banks the
        stages overlap across sequences; with one, loading the next sequence waits for the
        attention to finish this one."""
        s = self.stage_cycles
        if self.banks == 2:
            return max(s.values())
        return max(s["input"], s["qkv"]) + s["attention"] + self.core.probs.latency

    @property
    def fifo_tokens(self) -> int:
        """The residual waits in a FIFO until its token's attention output: up to ``banks``
        whole sequences (loading and computing) plus a token in flight."""
        return self.banks * self.seq_len + 2

    @property
    def latency(self) -> int:
        L = self.seq_len
        return (L * (self.beats + max(pr.cycles for pr in self.projections))
                + self.core.latency + self.out_proj.latency * L + self.addnorm.latency * L + 50)

    def compute(self, r, valid) -> np.ndarray:
        """(B, L, hidden) residual, (B, L) mask -> (B, L, hidden) ln1 output: the first half of
        EncoderLayer.compute."""
        return self.layer.attention_block(np.asarray(r, dtype=np.int64), valid)

    def create(self):
        return AttentionBlock(self)


class TokenMask(wiring.Component):
    """The mask bit of each token's first beat of a {r, valid} stream, as a one-beat-per-token
    stream; the residual lanes go on unchanged."""

    def __init__(self, layout: data.StructLayout, beats: int):
        self.beats = beats
        super().__init__({"i": In(stream.Signature(layout)),
                          "r": Out(stream.Signature(layout.members["r"])),
                          "mask": Out(stream.Signature(unsigned(1)))})

    def elaborate(self, platform):
        m = Module()
        beat = Signal(range(self.beats))
        need_mask = beat == 0
        # as in Fork: each output takes the beat once, possibly in different cycles
        r_done, m_done = Signal(), Signal()
        r_ok = r_done | self.r.ready
        m_ok = ~need_mask | m_done | self.mask.ready
        m.d.comb += [self.r.payload.eq(self.i.payload.r), self.mask.payload.eq(self.i.payload.valid),
                     self.r.valid.eq(self.i.valid & ~r_done),
                     self.mask.valid.eq(self.i.valid & need_mask & ~m_done),
                     self.i.ready.eq(r_ok & m_ok)]
        with m.If(self.i.valid):
            with m.If(self.i.ready):
                m.d.sync += [r_done.eq(0), m_done.eq(0), beat.eq(Mux(beat == self.beats - 1, 0, beat + 1))]
            with m.Else():
                with m.If(self.r.valid & self.r.ready):
                    m.d.sync += r_done.eq(1)
                with m.If(self.mask.valid & self.mask.ready):
                    m.d.sync += m_done.eq(1)
        return m


class AttentionBlock(wiring.Component):
    """Ports: ``i``: In(stream of :func:`block_layout`), hidden/lanes beats per token, seq_len
    tokens per sequence; ``o``: Out(stream of ArrayLayout(signed(res_bits), lanes)), ln1's output."""

    def __init__(self, params: AttentionParams):
        self.params = params_of(self, params, AttentionParams)
        super().__init__({
            "i": In(stream.Signature(block_layout(params.res_bits, params.lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(params.ln.out_bits), params.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        r_layout = data.ArrayLayout(signed(p.res_bits), p.lanes)
        m.submodules.split = split = TokenMask(block_layout(p.res_bits, p.lanes), p.beats)
        m.submodules.fork_r = fork_r = Fork(r_layout, 2)
        m.submodules.rfifo = rfifo = StreamFifo(r_layout, p.fifo_tokens * p.beats)
        m.submodules.qin = qin = p.qin.create()
        x_shape = code_shape(p.layer.qkv_in.out_bits)
        m.submodules.to_simd = to_simd = Regroup(x_shape, p.lanes, p.simd_qkv)
        m.submodules.fork_x = fork_x = Fork(data.ArrayLayout(x_shape, p.simd_qkv), 3)
        m.submodules.core = core = p.core.create()
        wiring.connect(m, wiring.flipped(self.i), split.i)
        wiring.connect(m, split.r, fork_r.i)
        wiring.connect(m, split.mask, core.mask)
        wiring.connect(m, fork_r.o1, rfifo.i)
        wiring.connect(m, fork_r.o0, qin.i)
        wiring.connect(m, qin.o, to_simd.i)
        wiring.connect(m, to_simd.o, fork_x.i)
        for idx, (name, pr) in enumerate(zip(("q", "k", "v"), p.projections)):
            unit = pr.create()
            m.submodules[f"proj_{name}"] = unit
            wiring.connect(m, fork_x.outs()[idx], unit.i)
            wiring.connect(m, unit.o, getattr(core, name))
        m.submodules.to_o = to_o = Regroup(code_shape(p.layer.attention.context.out_bits), p.core.ctx_lanes, p.simd_o)
        m.submodules.out_proj = out_proj = p.out_proj.create()
        m.submodules.addnorm = addnorm = p.addnorm.create()
        wiring.connect(m, core.o, to_o.i)
        wiring.connect(m, to_o.o, out_proj.i)
        wiring.connect(m, out_proj.o, addnorm.a)
        wiring.connect(m, rfifo.o, addnorm.b)
        wiring.connect(m, addnorm.o, wiring.flipped(self.o))
        return m
