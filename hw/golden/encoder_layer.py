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

    The halves are :meth:`attention_block` (r -> h) and :meth:`ffn_block` (h -> out), the two
    hardware blocks (hw/rtl/attention.py, hw/rtl/ffn.py).
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

    def attention_sum(self, r, valid) -> np.ndarray:
        """attn_out(c) + r: the attention branch plus the residual, the sum ln1 normalises.
        (B, L, hidden) residual, (B, L) mask -> (B, L, hidden)."""
        r = np.asarray(r)
        x = self.qkv_in.compute(r[None])
        c = self.attention.compute(self.query.compute(x), self.key.compute(x), self.value.compute(x), valid)
        return self.attn_out.compute(c) + r

    def attention_block(self, r, valid) -> np.ndarray:
        """The first half, h = ln1(attn_out(c) + r): (B, L, hidden) residual, (B, L) mask ->
        (B, L, hidden)."""
        return self.ln1.compute(self.attention_sum(r, valid))

    def ffn_block(self, h) -> np.ndarray:
        """The second half, out = ln2(ffn_out(ffn_in(ffn_in_q(h))) + h), token by token:
        (..., hidden) -> (..., hidden)."""
        return feed_forward(h, ffn_in_q=self.ffn_in_q, ffn_in=self.ffn_in, ffn_out=self.ffn_out, ln=self.ln2)

    def compute(self, r, valid) -> np.ndarray:
        return self.ffn_block(self.attention_block(r, valid))


def feed_forward(h, *, ffn_in_q: Requant, ffn_in: BinaryLinear, ffn_out: BinaryLinear,
                 ln: LayerNorm) -> np.ndarray:
    """§19's FFN half from its ops: g = ffn_in(ffn_in_q(h)); ln(ffn_out(g) + h). What
    :meth:`EncoderLayer.ffn_block` computes with the layer's ops, for a block that holds the
    four ops alone (hw.rtl.ffn.FfnParams)."""
    h = np.asarray(h)
    g = ffn_in.compute(ffn_in_q.compute(h[None]))
    return ln.compute(ffn_out.compute(g) + h)
