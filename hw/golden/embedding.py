"""§18 embeddings: the golden op.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.errors import BinbertError
from hw.golden import arith
from hw.golden.arith import signed_range
from hw.validate import codes_in, int_array, int_field, set_field
from hw.golden.layernorm import LayerNorm


# §18: embeddings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Embedding:
    """e = word(id) + position[l] + token_type[t], in units of 2^-table_frac, then LayerNorm (§18).

    word(id) = Σ_t alpha[t, id]·(±1 bits of word_bits[t, id])   (binary table, T terms), or
             = word_table[id]                                    (full-precision table, rounded).
    alpha: (T, V) or (T, 1) non-negative; tables are signed table_bits-wide integers. The
    LayerNorm maps the sum to the residual format; table_frac only documents the scale (the
    LayerNorm's eps carries it).
    """

    hidden: int
    table_bits: int
    table_frac: int
    word_bits: np.ndarray | None
    alpha: np.ndarray | None
    word_table: np.ndarray | None
    position: np.ndarray
    token_type: np.ndarray
    ln: LayerNorm

    def __post_init__(self):
        o = "Embedding"
        set_field(self, "hidden", int_field(o, "hidden", self.hidden, 1))
        set_field(self, "table_bits", int_field(o, "table_bits", self.table_bits, 2, 24))
        set_field(self, "table_frac", int_field(o, "table_frac", self.table_frac, 0, 30))
        lo, hi = signed_range(self.table_bits)
        if (self.word_bits is None) == (self.word_table is None):
            raise BinbertError(f"{o}: exactly one of word_bits / word_table")
        if self.word_bits is not None:
            w = np.asarray(self.word_bits)
            if w.dtype != np.uint64 or w.ndim != 3 or w.shape[2] != arith.n_words(self.hidden):
                raise BinbertError(f"{o}.word_bits: expected (T, V, {arith.n_words(self.hidden)}) uint64, got {w.shape}")
            w = np.array(w)
            w.flags.writeable = False
            set_field(self, "word_bits", w)
            a = int_array(o, "alpha", self.alpha, ndim=2, lo=0, hi=hi)
            if a.shape[0] != w.shape[0] or a.shape[1] not in (1, w.shape[1]):
                raise BinbertError(f"{o}.alpha: shape {a.shape} does not match word_bits {w.shape}")
            if a.size and int(a.max(axis=1).sum()) > hi:
                raise BinbertError(f"{o}.alpha: Σ_t alpha exceeds the {self.table_bits}-bit table range")
            set_field(self, "alpha", a)
        else:
            set_field(self, "word_table", int_array(o, "word_table", self.word_table, ndim=2, lo=lo, hi=hi))
            if self.word_table.shape[1] != self.hidden:
                raise BinbertError(f"{o}.word_table: {self.word_table.shape[1]} columns, hidden={self.hidden}")
        set_field(self, "position", int_array(o, "position", self.position, ndim=2, lo=lo, hi=hi))
        set_field(self, "token_type", int_array(o, "token_type", self.token_type, ndim=2, lo=lo, hi=hi))
        for name in ("position", "token_type"):
            if getattr(self, name).shape[1] != self.hidden:
                raise BinbertError(f"{o}.{name}: {getattr(self, name).shape[1]} columns, hidden={self.hidden}")
        if not isinstance(self.ln, LayerNorm) or self.ln.n != self.hidden or self.ln.in_bits < self.table_bits + 2:
            raise BinbertError(f"{o}.ln: must be a LayerNorm over {self.hidden} features, "
                               f"in_bits >= {self.table_bits + 2}")

    @property
    def vocab(self) -> int:
        return self.word_bits.shape[1] if self.word_bits is not None else self.word_table.shape[0]

    @property
    def max_len(self) -> int:
        return self.position.shape[0]

    def word(self, ids: np.ndarray) -> np.ndarray:
        if self.word_table is not None:
            return self.word_table[ids]
        out = np.zeros(ids.shape + (self.hidden,), dtype=np.int64)
        for t in range(self.word_bits.shape[0]):
            pm = arith.bits_to_pm1(arith.unpack_bits(self.word_bits[t][ids], self.hidden)).astype(np.int64)
            a = self.alpha[t][ids] if self.alpha.shape[1] > 1 else self.alpha[t, 0]
            out += pm * np.asarray(a)[..., None]
        return out

    def compute(self, ids, types=None) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise BinbertError(f"Embedding: input_ids must be (batch, seq) integers, got {ids.shape} {ids.dtype}")
        if ids.shape[1] > self.max_len:
            raise BinbertError(f"Embedding: sequence length {ids.shape[1]} exceeds the maximum "
                               f"{self.max_len} (max_position_embeddings)")
        ids = codes_in("Embedding", "input_ids", ids, 0, self.vocab - 1)
        types = np.zeros_like(ids) if types is None else codes_in(
            "Embedding", "token_type_ids", np.asarray(types), 0, self.token_type.shape[0] - 1)
        e = self.word(ids) + self.position[None, : ids.shape[1]] + self.token_type[types]
        return self.ln.compute(e)
