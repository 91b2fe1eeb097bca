"""PyTorch integer-simulation path: the quantized model's forward with the silicon's semantics.

``integer_semantics(model)`` is a context manager under which ``model(**batch)`` (a quantized
BertForSequenceClassification) computes its logits exactly as docs/arithmetic.md §10-§19 say:
the model's current weights, scales and LSQ steps are folded by the same code as the exporter
(``sw.export.build_params``), then every op runs on integer torch tensors (int64, exact float64
matmuls below 2^53), on the model's device. It is a second, independent implementation of the
golden model (dense ±1 matmuls instead of bit-serial XNOR-popcount, torch instead of numpy):
its logits equal the golden model's bit for bit (tests/sw/test_intsim.py).

The activation quantizers' own half-up switch (``ActQuantConfig.integer``) makes the float
fake-quant forward round like the hardware; this module goes all the way (fixed-point
multipliers, integer softmax / LayerNorm / LUTs). It evaluates; it does not train (no gradients).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from hw.golden import arith
from hw.golden.attention import Attention
from hw.golden.embedding import Embedding
from hw.golden.encoder_layer import EncoderLayer
from hw.golden.layernorm import LayerNorm
from hw.golden.linear import BinaryLinear, IntLinear
from hw.golden.model import EncoderParams
from hw.golden.requant import Lut, Requant
from hw.golden.softmax import Softmax
from hw.errors import BinbertError

F64_EXACT = 1 << 53
F32_EXACT = 1 << 24


def _t(a, device) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.int64), device=device)  # copies: params are read-only


def _mm(a: torch.Tensor, b: torch.Tensor, bound: int) -> torch.Tensor:
    """Exact integer matmul: float32 / float64 when every partial sum is below 2^24 / 2^53 (the
    format then holds every integer on the way), else int64 on the CPU."""
    if bound < F32_EXACT and a.device.type == "cpu":  # (GPUs may run float32 as TF32)
        return torch.matmul(a.float(), b.float()).long()
    if bound < F64_EXACT:
        return torch.matmul(a.double(), b.double()).long()
    return torch.matmul(a.cpu().long(), b.cpu().long()).to(a.device)


def _rshift_round(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x + (1 << (s - 1))) >> s


class _Requant:
    def __init__(self, op: Requant, dev):
        self.op = op
        self.mult = _t(op.mult, dev)  # (T, N) or (T, 1)
        self.bias = _t(op.bias, dev)

    def __call__(self, accs: torch.Tensor) -> torch.Tensor:
        op = self.op
        z = self.bias if self.bias.shape[0] > 1 else self.bias[0]
        for t in range(op.terms):
            m = self.mult[t] if self.mult.shape[1] > 1 else self.mult[t, 0]
            z = z + accs[t] * m
        if op.out_bits == 1:
            return (z >= 0).long()
        return _rshift_round(z, op.shift).clamp(op.lo, op.hi)


class _Lut:
    def __init__(self, op: Lut, dev):
        self.index = _Requant(op.index, dev)
        self.lo = op.index.lo
        self.table = _t(op.table, dev)

    def __call__(self, accs):
        return self.table[self.index(accs) - self.lo]


def _out(op, dev):
    return _Lut(op, dev) if isinstance(op, Lut) else _Requant(op, dev)


def _values(x: torch.Tensor, bits: int) -> torch.Tensor:
    return 2 * x - 1 if bits == 1 else x


class _BinaryLinear:
    def __init__(self, op: BinaryLinear, dev):
        self.op = op
        pm = np.stack([arith.bits_to_pm1(arith.unpack_bits(op.weights[t], op.k)) for t in range(op.terms)])
        self.w = torch.as_tensor(pm.astype(np.float32), device=dev)  # (T, N, K) of ±1
        self.out = _out(op.out, dev)
        self.bound = op.k << max(op.in_bits - 1, 0)

    def __call__(self, x):
        v = _values(x, self.op.in_bits)
        accs = torch.stack([_mm(v, self.w[t].T, self.bound) for t in range(self.op.terms)])
        return self.out(accs)


class _IntLinear:
    def __init__(self, op: IntLinear, dev):
        self.op = op
        self.w = _t(op.weight, dev)
        self.out = _out(op.out, dev)

    def __call__(self, x):
        return self.out(_mm(x, self.w.T, self.op.bound)[None])


class _Softmax:
    def __init__(self, op: Softmax, dev):
        self.op = op
        self.table = _t(op.table, dev)

    def __call__(self, s, valid):
        op = self.op
        low = torch.iinfo(torch.int64).min
        m = torch.where(valid, s, low).amax(-1, keepdim=True)
        delta = torch.where(valid, m - s, 0)
        t = torch.clamp(_rshift_round(delta * op.mult, op.shift), max=op.t_max)
        e = self.table[t & ((1 << op.frac_bits) - 1)] >> (t >> op.frac_bits)
        e = torch.where(valid, e, 0)
        z = e.sum(-1, keepdim=True).clamp(min=1)
        r = torch.div(op.recip_num, z, rounding_mode="floor")
        return torch.clamp(_rshift_round(e * r, op.recip_shift), max=op.hi)


class _Attention:
    def __init__(self, op: Attention, dev):
        self.op = op
        self.probs = _Softmax(op.probs, dev) if isinstance(op.probs, Softmax) else None
        self.context = _Requant(op.context, dev)
        self.thresholds = None if op.thresholds is None else _t(op.thresholds, dev)[:, None, None]

    def _heads(self, x, bits):
        b, l, _ = x.shape
        return _values(x, bits).view(b, l, self.op.heads, self.op.head_dim).transpose(1, 2)

    def __call__(self, q, k, v, valid):
        op = self.op
        qh, kh, vh = self._heads(q, op.q_bits), self._heads(k, op.k_bits), self._heads(v, op.v_bits)
        s = _mm(qh, kh.transpose(2, 3), 1 << op.score_bits)
        vm = valid[:, None, None, :]
        if self.thresholds is not None:
            s = s - self.thresholds
        p = self.probs(s, vm) if self.probs is not None else ((s > 0) & vm).long()
        ctx = _mm(p, vh, 1 << op.context_bits).transpose(1, 2).reshape(q.shape[0], q.shape[1], op.hidden)
        return self.context(ctx[None])


def _isqrt(x: torch.Tensor) -> torch.Tensor:
    s = torch.floor(torch.sqrt(x.double())).long()
    for _ in range(2):
        s = torch.where(s * s > x, s - 1, s)
        s = torch.where((s + 1) * (s + 1) <= x, s + 1, s)
    return s


class _LayerNorm:
    def __init__(self, op: LayerNorm, dev):
        self.op = op
        self.gamma, self.beta = _t(op.gamma, dev), _t(op.beta, dev)

    def __call__(self, v):
        op = self.op
        total = v.sum(-1, keepdim=True) << op.extra_bits
        mu = torch.div(2 * total + op.n, 2 * op.n, rounding_mode="floor")
        d = (v << op.extra_bits) - mu
        var = torch.div((d * d).sum(-1, keepdim=True), op.n, rounding_mode="floor")
        std = _isqrt(var + op.eps).clamp(min=1)
        r = torch.div(torch.full_like(std, 1 << op.recip_shift), std, rounding_mode="floor")
        u = _rshift_round(d * r, op.norm_shift)
        lo, hi = -(1 << (op.out_bits - 1)), (1 << (op.out_bits - 1)) - 1
        return _rshift_round(u * self.gamma + self.beta, op.out_shift).clamp(lo, hi)


class _Embedding:
    def __init__(self, op: Embedding, dev):
        self.op = op
        if op.word_table is not None:
            self.table = _t(op.word_table, dev)
        else:  # the integer word table Σ_t alpha_t·(±1), expanded once
            table = np.zeros((op.vocab, op.hidden), dtype=np.int64)
            for t in range(op.word_bits.shape[0]):
                pm = arith.bits_to_pm1(arith.unpack_bits(op.word_bits[t], op.hidden)).astype(np.int64)
                table += pm * op.alpha[t][:, None]
            self.table = _t(table, dev)
        self.pos, self.tt = _t(op.position, dev), _t(op.token_type, dev)
        self.ln = _LayerNorm(op.ln, dev)

    def __call__(self, ids, types):
        e = self.table[ids] + self.pos[: ids.shape[1]][None] + self.tt[types]
        return self.ln(e)


class _Layer:
    def __init__(self, op: EncoderLayer, dev):
        self.qkv_in = _Requant(op.qkv_in, dev)
        self.query, self.key, self.value = (_BinaryLinear(x, dev) for x in (op.query, op.key, op.value))
        self.attention = _Attention(op.attention, dev)
        self.attn_out = _BinaryLinear(op.attn_out, dev)
        self.ln1 = _LayerNorm(op.ln1, dev)
        self.ffn_in_q = _Requant(op.ffn_in_q, dev)
        self.ffn_in, self.ffn_out = _BinaryLinear(op.ffn_in, dev), _BinaryLinear(op.ffn_out, dev)
        self.ln2 = _LayerNorm(op.ln2, dev)

    def __call__(self, r, valid):
        x = self.qkv_in(r[None])
        c = self.attention(self.query(x), self.key(x), self.value(x), valid)
        h = self.ln1(self.attn_out(c) + r)
        g = self.ffn_in(self.ffn_in_q(h[None]))
        return self.ln2(self.ffn_out(g) + h)


class IntSim:
    """Torch evaluation of an :class:`EncoderParams` (integer logits, same as ``params.compute``)."""

    def __init__(self, params: EncoderParams, device=None):
        if not isinstance(params, EncoderParams):
            raise BinbertError(f"IntSim needs an EncoderParams, got {type(params).__name__}")
        dev = torch.device(device or "cpu")
        self.params, self.device = params, dev
        self.embedding = _Embedding(params.embedding, dev)
        self.layers = [_Layer(layer, dev) for layer in params.layers]
        self.pooler_in = _Requant(params.pooler_in, dev) if params.pooler_in is not None else None
        self.pooler = (_BinaryLinear if isinstance(params.pooler, BinaryLinear) else _IntLinear)(params.pooler, dev)
        self.classifier = _IntLinear(params.classifier, dev)

    @torch.no_grad()
    def hidden_states(self, input_ids, attention_mask=None, token_type_ids=None) -> list[torch.Tensor]:
        ids = torch.as_tensor(input_ids, device=self.device).long()
        if ids.dim() != 2:
            raise BinbertError(f"input_ids: expected (batch, seq), got shape {tuple(ids.shape)}")
        if ids.shape[1] > self.params.max_len:
            raise BinbertError(f"input_ids: sequence length {ids.shape[1]} exceeds the configured "
                               f"maximum {self.params.max_len}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.params.embedding.vocab):
            raise BinbertError(f"input_ids: ids outside the vocabulary [0, {self.params.embedding.vocab})")
        valid = (torch.ones_like(ids, dtype=torch.bool) if attention_mask is None
                 else torch.as_tensor(attention_mask, device=self.device) != 0)
        types = (torch.zeros_like(ids) if token_type_ids is None
                 else torch.as_tensor(token_type_ids, device=self.device).long())
        states = [self.embedding(ids, types)]
        for layer in self.layers:
            states.append(layer(states[-1], valid))
        return states

    @torch.no_grad()
    def logits(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Integer logits (int64, units 2^-logit_frac)."""
        cls = self.hidden_states(input_ids, attention_mask, token_type_ids)[-1][:, 0]
        x = cls if self.pooler_in is None else self.pooler_in(cls[None])
        return self.classifier(self.pooler(x))

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Real-valued logits (float32) as the model's head would return them."""
        z = self.logits(input_ids, attention_mask, token_type_ids)
        return (z.double() / float(1 << self.params.logit_frac)).float()


def from_model(model: nn.Module, opts=None) -> IntSim:
    """Fold the model's current parameters (sw.export.build_params) into an IntSim on its device."""
    from sw.export import build_params

    dev = next(model.parameters()).device
    return IntSim(build_params(model, opts), device=dev)


@contextlib.contextmanager
def integer_semantics(model: nn.Module, opts=None):
    """``with integer_semantics(model): model(**batch)`` returns the integer model's logits.

    The weights are folded once on entry (evaluation: they must not change inside the block).
    Yields the :class:`IntSim`. ``labels`` give the usual loss (for reporting; no gradient).
    """
    from transformers.modeling_outputs import SequenceClassifierOutput

    sim = from_model(model, opts)
    had = "forward" in vars(model)
    old = vars(model).get("forward")

    def forward(input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_):
        if input_ids is None:
            raise BinbertError("integer semantics need input_ids (no inputs_embeds path in hardware)")
        logits = sim(input_ids, attention_mask, token_type_ids)
        loss = None
        if labels is not None:
            if logits.shape[-1] == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    model.forward = forward
    try:
        yield sim
    finally:
        if had:
            model.forward = old
        else:
            del model.forward
