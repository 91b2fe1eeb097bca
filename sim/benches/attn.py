"""cocotb bench: attention block (hw.rtl.attention.AttentionBlock) == the layer's attention half
(qkv_in, Q/K/V, softmax/Heaviside, P·V, context, attn_out, + r, ln1), sequence by sequence; the
contract and stimulus are those of sim/benches/encoder.py."""
from __future__ import annotations

import cocotb

from sim.benches.encoder import sequence_bench


@cocotb.test()
async def attention_matches_golden(dut):
    await sequence_bench(dut, "attention")
