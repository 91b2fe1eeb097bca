"""§19 the whole classifier (embeddings, encoder layers, pooler, classifier): the golden model.

See hw/golden/__init__.py for the conventions every op follows."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.errors import BinbertError
from hw.validate import int_field, set_field
from hw.golden.embedding import Embedding
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.linear import BinaryLinear, IntLinear, Linear
from hw.golden.requant import Requant


@dataclass(frozen=True, eq=False)
class EncoderParams:
    """The whole integer classifier (§19): embedding -> layers -> pooler -> classifier.

    pooler_in: requantizer of the [CLS] residual to the pooler's input codes (None when the
    pooler is an IntLinear reading the residual directly); pooler.out is the tanh Lut whose codes
    feed the classifier; logits = classifier(...) in units of 2^-logit_frac.
    """

    res_bits: int
    res_frac: int
    embedding: Embedding
    layers: tuple
    pooler_in: Requant | None
    pooler: Linear
    classifier: IntLinear
    logit_frac: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        o = "EncoderParams"
        set_field(self, "res_bits", int_field(o, "res_bits", self.res_bits, 2, 24))
        set_field(self, "res_frac", int_field(o, "res_frac", self.res_frac, 0, self.res_bits))
        set_field(self, "logit_frac", int_field(o, "logit_frac", self.logit_frac, 0, 31))
        set_field(self, "layers", tuple(self.layers))
        if not all(isinstance(layer, EncoderLayer) for layer in self.layers):
            raise BinbertError(f"{o}.layers: must be EncoderLayer objects")
        if not isinstance(self.embedding, Embedding):
            raise BinbertError(f"{o}.embedding: must be an Embedding")
        if self.embedding.ln.out_bits != self.res_bits:
            raise BinbertError(f"{o}.embedding.ln: out_bits must equal res_bits={self.res_bits}")
        for i, layer in enumerate(self.layers):
            if layer.qkv_in.acc_bits < self.res_bits or layer.ln2.out_bits != self.res_bits:
                raise BinbertError(f"{o}.layers[{i}]: residual widths differ from res_bits={self.res_bits}")
            if layer.attention.max_len < self.max_len:
                raise BinbertError(f"{o}.layers[{i}].attention: max_len below the position table")
            for name in ("query", "key", "value", "ffn_in"):  # the linears that read the residual
                k = getattr(layer, name).k
                if k != self.hidden:
                    raise BinbertError(f"{o}.layers[{i}].{name}: k={k} does not match the "
                                       f"hidden={self.hidden} features it reads")
        if isinstance(self.pooler, BinaryLinear) and self.pooler_in is None:
            raise BinbertError(f"{o}.pooler_in: a binary pooler needs an input requantizer")
        if not isinstance(self.classifier, IntLinear):
            raise BinbertError(f"{o}.classifier: must be an IntLinear")

    @property
    def hidden(self) -> int:
        return self.embedding.hidden

    @property
    def max_len(self) -> int:
        return self.embedding.max_len

    @property
    def num_labels(self) -> int:
        return self.classifier.n

    def token_ids(self, input_ids) -> np.ndarray:
        """``input_ids`` as a (batch, seq) array no longer than the position table."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2:
            raise BinbertError(f"input_ids: expected (batch, seq), got shape {ids.shape}")
        if ids.shape[1] > self.max_len:
            raise BinbertError(f"input_ids: sequence length {ids.shape[1]} exceeds the configured "
                               f"maximum {self.max_len}")
        return ids

    def hidden_states(self, input_ids, attention_mask=None, token_type_ids=None) -> list[np.ndarray]:
        """Residual stream after the embedding and after every layer (integers, §10)."""
        ids = self.token_ids(input_ids)
        valid = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask) != 0
        if valid.shape != ids.shape:
            raise BinbertError(f"attention_mask: shape {valid.shape} differs from input_ids {ids.shape}")
        states = [self.embedding.compute(ids, token_type_ids)]
        for layer in self.layers:
            states.append(layer.compute(states[-1], valid))
        return states

    def compute(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """Integer logits (batch, num_labels); real logit = value · 2^-logit_frac."""
        return self.head(self.hidden_states(input_ids, attention_mask, token_type_ids)[-1])

    def head(self, r) -> np.ndarray:
        """Pooler + classifier on final residual states ``r`` (batch, length, hidden): integer
        logits. Separate so a residual stream computed elsewhere (the RTL) gets the same tail."""
        cls = np.asarray(r, dtype=np.int64)[:, 0]
        x = cls if self.pooler_in is None else self.pooler_in.compute(cls[None])
        return self.classifier.compute(self.pooler.compute(x))

    def predict(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """argmax of the integer logits (first maximum on ties)."""
        return self.compute(input_ids, attention_mask, token_type_ids).argmax(axis=-1)
