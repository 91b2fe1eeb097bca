"""§19 one encoder layer: the golden op.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.errors import BinbertError
from hw.golden.attention import Attention
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear
from hw.golden.requant import Requant


# §19: encoder layer and the whole classifier
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EncoderLayer:
    """One BERT layer on the residual stream r (signed res_bits, 2^-res_frac units), §19.

    x = qkv_in(r);  q, k, v = query(x), key(x), value(x);  c = attention(q, k, v)
    h = ln1(attn_out(c) + r);  g = ffn_in(ffn_in_q(h));  out = ln2(ffn_out(g) + h)
    """

    qkv_in: Requant
    query: BinaryLinear
    key: BinaryLinear
    value: BinaryLinear
    attention: Attention
    attn_out: BinaryLinear
    ln1: LayerNorm
    ffn_in_q: Requant
    ffn_in: BinaryLinear
    ffn_out: BinaryLinear
    ln2: LayerNorm

    def __post_init__(self):
        a = self.attention
        pairs = (("query", self.query, a.q_bits), ("key", self.key, a.k_bits), ("value", self.value, a.v_bits))
        for name, lin, bits in pairs:
            if lin.in_bits != self.qkv_in.out_bits or lin.out.out_bits != bits or lin.n != a.hidden:
                raise BinbertError(f"EncoderLayer.{name}: widths do not chain (in {lin.in_bits}, "
                                   f"out {lin.out.out_bits}, rows {lin.n})")
        if self.attn_out.in_bits != a.context.out_bits or self.attn_out.k != a.hidden:
            raise BinbertError("EncoderLayer.attn_out: input does not match the attention context")
        if self.ffn_in.in_bits != self.ffn_in_q.out_bits or self.ffn_out.in_bits != self.ffn_in.out.out_bits:
            raise BinbertError("EncoderLayer.ffn: widths do not chain")
        if self.ffn_out.k != self.ffn_in.n:
            raise BinbertError("EncoderLayer.ffn_out: k does not match ffn_in rows")
        for ln in (self.ln1, self.ln2):
            if ln.in_bits < self.attn_out.out.out_bits + 1:
                raise BinbertError("EncoderLayer: LayerNorm in_bits too narrow for residual + branch")

    def compute(self, r, valid) -> np.ndarray:
        x = self.qkv_in.compute(np.asarray(r)[None])
        c = self.attention.compute(self.query.compute(x), self.key.compute(x), self.value.compute(x), valid)
        h = self.ln1.compute(self.attn_out.compute(c) + r)
        g = self.ffn_in.compute(self.ffn_in_q.compute(h[None]))
        return self.ln2.compute(self.ffn_out.compute(g) + h)
