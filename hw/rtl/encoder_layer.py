"""One encoder layer in hardware (docs/arithmetic.md §11, §19): the attention block (qkv_in,
Q/K/V projections, attention core, output projection, + r, ln1) streaming into the FFN block
(ffn_in_q, ffn_in + GELU/ReLU, ffn_out, + h, ln2).

Golden model: ``EncoderLayer.compute(r, valid)`` of hw/golden/encoder_layer.py -- the params object
here only adds the folding. Ports: ``i``: In(stream of {r: ArrayLayout(signed(res_bits), lanes),
valid}), hidden/lanes beats per token, seq_len tokens per sequence, ``valid`` the token's mask
bit (1 = real token, read on its first beat); ``o``: Out(stream of ArrayLayout(signed(res_bits),
lanes)), the layer output in the same order.

:func:`tiny_layer` builds the small configuration used for ``make bitstream LAYER=encoder``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
from amaranth.hdl import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.attention import AttentionParams, LayerFolding, block_layout
from hw.golden.encoder_layer import EncoderLayer
from hw.validate import params_of
from hw.rtl.ffn import FfnParams

__all__ = ["EncoderLayerParams", "EncoderLayerUnit", "folding_for"]


@dataclass(frozen=True, kw_only=True, eq=False)
class EncoderLayerParams(LayerFolding):
    """``layer`` (the golden op) over sequences of ``seq_len`` tokens: the attention block's
    folding (:class:`hw.rtl.attention.LayerFolding`) plus the FFN's two MVUs (PE x SIMD)."""

    pe_ffn1: int
    simd_ffn1: int
    pe_ffn2: int
    simd_ffn2: int

    def __post_init__(self):
        super().__post_init__()
        self.attention, self.ffn  # noqa: B018  (their checks name a bad folding)

    @cached_property
    def attention(self) -> AttentionParams:
        return AttentionParams(**{f.name: getattr(self, f.name) for f in fields(LayerFolding)})

    @cached_property
    def ffn(self) -> FfnParams:
        return FfnParams.from_layer(self.layer, lanes=self.lanes, pe1=self.pe_ffn1, simd1=self.simd_ffn1,
                                    pe2=self.pe_ffn2, simd2=self.simd_ffn2,
                                    fifo_tokens=4, ln_multiplier=self.ln_multiplier,
                                    mvu_buffer=self.mvu_buffer)

    @property
    def stage_cycles(self) -> dict[str, int]:
        """Cycles per sequence of every stage in steady state."""
        s = dict(self.attention.stage_cycles)
        s.update({f"ffn.{k}": v * self.seq_len for k, v in self.ffn.stage_cycles.items()})
        return s

    @property
    def cycles(self) -> int:
        """Steady-state cycles per sequence of ``seq_len`` tokens: the slowest stage (the
        attention block's own model already accounts for one sequence bank serialising load and
        compute)."""
        ffn = self.ffn.cycles * self.seq_len
        return max(self.attention.cycles, ffn)

    cycles_per_sequence = cycles  # the name the encoder bench, the presets and the FPGA reports use

    @property
    def latency(self) -> int:
        return self.attention.latency + self.ffn.latency * self.seq_len

    def compute(self, r, valid) -> np.ndarray:
        """(B, L, hidden) residual, (B, L) mask -> (B, L, hidden) layer output."""
        return self.layer.compute(np.asarray(r, dtype=np.int64), np.asarray(valid, dtype=bool))

    def create(self):
        return EncoderLayerUnit(self)


class EncoderLayerUnit(wiring.Component):
    def __init__(self, params: EncoderLayerParams):
        self.params = params_of(self, params, EncoderLayerParams)
        super().__init__({
            "i": In(stream.Signature(block_layout(params.res_bits, params.lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(params.layer.ln2.out_bits), params.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.attention = att = p.attention.create()
        m.submodules.ffn = ffn = p.ffn.create()
        wiring.connect(m, wiring.flipped(self.i), att.i)
        wiring.connect(m, att.o, ffn.i)
        wiring.connect(m, ffn.o, wiring.flipped(self.o))
        return m


def _largest_divisor(n: int, at_most: int, multiple_of: int = 1) -> int:
    best = multiple_of
    for c in range(multiple_of, min(n, at_most) + 1, multiple_of):
        if n % c == 0:
            best = c
    return best


def folding_for(layer: EncoderLayer, *, seq_len: int, macs: int = 256, lanes: int | None = None,
                banks: int = 2, ln_multiplier: str = "parallel",
                mvu_buffer: str = "auto") -> EncoderLayerParams:
    """A balanced folding for ``layer``: every MVU gets about ``macs`` XNOR lanes (PE·SIMD),
    SIMD as wide as a row allows, PE the rest (a multiple of the weight terms); the LayerNorms
    with ``ln_multiplier`` multipliers, the MVUs' input buffers mapped as ``mvu_buffer``."""
    h = layer.ln1.n
    f = layer.ffn_in.n

    def fold(k: int, n_rows: int, terms: int) -> tuple[int, int]:
        simd = _largest_divisor(k, max(1, macs // terms))
        pe = _largest_divisor(terms * n_rows, max(terms, macs // simd), terms)
        return pe, simd

    ah = layer.attention.hidden  # heads·head_dim (below h when heads were pruned)
    pe_qkv, simd_qkv = fold(h, ah, layer.query.terms)
    pe_o, simd_o = fold(ah, h, layer.attn_out.terms)
    pe1, simd1 = fold(h, f, layer.ffn_in.terms)
    pe2, simd2 = fold(f, h, layer.ffn_out.terms)
    if lanes is None:
        lanes = _largest_divisor(h, 8)
    return EncoderLayerParams(layer=layer, seq_len=seq_len, lanes=lanes, pe_qkv=pe_qkv, simd_qkv=simd_qkv,
                              pe_o=pe_o, simd_o=simd_o, pe_ffn1=pe1, simd_ffn1=simd1, pe_ffn2=pe2,
                              simd_ffn2=simd2, banks=banks, ln_multiplier=ln_multiplier,
                              mvu_buffer=mvu_buffer)
