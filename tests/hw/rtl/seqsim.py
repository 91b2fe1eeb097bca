"""Sequence-level Amaranth-simulator helpers shared by tests/hw/rtl/test_attention.py and
tests/hw/rtl/test_encoder_layer.py: both blocks take {r, valid} beats (hw.rtl.attention.block_layout), seq_len
tokens per sequence, and return the residual-width output in the same order."""
from __future__ import annotations

import numpy as np

from hw.golden.random import res_inputs
from tests.hw.rtl.hwsim import run, send


def masked_residuals(rng: np.random.Generator, seqs: int, seq_len: int, hidden: int, keep: float = 0.8):
    """(seqs, seq_len, hidden) random residuals and a padding mask (token 0 always real)."""
    r = res_inputs(rng, seqs * seq_len, hidden).reshape(seqs, seq_len, hidden)
    valid = rng.random((seqs, seq_len)) < keep
    valid[:, 0] = True
    return r, valid


def run_sequences(params, r, valid, *, idle: float = 0.0, stall: float = 0.0):
    """Stream the sequences through ``params.create()`` (random idles on the input, random
    backpressure on the output): (outputs shaped like ``r``, the cycle each sequence ended)."""
    dut = params.create()
    lanes = params.lanes
    seqs, L, hidden = r.shape
    payloads = [{"r": [int(x) for x in r[s, t, j:j + lanes]], "valid": int(valid[s, t])}
                for s in range(seqs) for t in range(L) for j in range(0, hidden, lanes)]
    got, ends = [], []

    async def prod(ctx):
        await send(ctx, dut.i, payloads, np.random.default_rng(1), idle)

    async def cons(ctx):
        # like hwsim.recv, but keeps the cycle of every sequence's last beat (the steady state)
        rng, cycle = np.random.default_rng(2), 0
        while len(got) < len(payloads):
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _, _, ok, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if ready and ok:
                got.append([int(c) for c in payload])
                if len(got) % (L * params.beats) == 0:
                    ends.append(cycle)

    run(dut, prod, cons, deadline_cycles=4 * seqs * params.latency + 5000)
    return np.array(got).reshape(r.shape), ends


def steady_cycles(ends: list[int]) -> float:
    """Cycles per sequence between the second and the last sequence end (pipeline filled)."""
    return (ends[-1] - ends[1]) / (len(ends) - 2)
