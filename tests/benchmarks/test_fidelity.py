"""benchmarks/fidelity.py: the op-swapping hybrid forward (all integer == sw.intsim bit for bit, all
float == the fake-quant model) and the benchmark table's rendering."""
from __future__ import annotations

import copy

import pytest
import torch

from benchmarks import fidelity
from sw.export import build_params
from sw.intsim import IntSim
from tests.sw.chain_models import batch, tiny_quant


@pytest.mark.parametrize("variant", ["split", "binary", "bi", "uniform8_relu", "fp_pooler_emb"])
def test_hybrid_ends_are_the_two_models(variant):
    model = tiny_quant(variant)
    b = batch(1)
    hy = fidelity.Hybrid(model, build_params(model))
    args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
    integer = hy.forward(*args, use=set(fidelity.OPS))
    sim = IntSim(hy.p).logits(*args).double() / (1 << hy.p.logit_frac)
    assert torch.equal(integer, sim)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(**b).logits
    assert torch.allclose(hy.forward(*args, use=set()), ref, rtol=0, atol=1e-9)


def test_one_op_at_a_time_moves_only_downstream_codes():
    model = tiny_quant("split")
    b = batch(2)
    hy = fidelity.Hybrid(model, build_params(model))
    args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
    ref, swapped = {}, {}
    hy.forward(*args, use=set(), trace=ref)
    hy.forward(*args, use={"ffn_in_q"}, trace=swapped)
    # everything before layer 0's FFN input is untouched by swapping that requantizer
    for key in ("0.x", "0.q", "0.k", "0.v", "0.p", "0.c"):
        assert torch.equal(ref[key], swapped[key]), key


def test_table_states_refusals_and_missing_runs(tmp_path):
    rows = [{"setting": "bibert", "ckpt": "runs/bibert/bibert/final", "refused": "x: cannot be exported"},
            {"setting": "tws-a8", "ckpt": "runs/tws-a8/binary/final", "missing": True},
            {"setting": "tws-a4", "ckpt": "c", "examples": 10, "fake_quant_acc": 0.8, "integer_acc": 0.7,
             "agreement": 0.9, "rom_bytes": 1234, "intsim_spot": 10, "golden_equals_intsim": True,
             "seconds": {"fake_quant": 1.0, "golden": 2.0}}]
    out = tmp_path / "f.md"
    fidelity.write_table(rows, out, None, "python benchmarks/fidelity.py table")
    text = out.read_text()
    assert "export refused: x: cannot be exported" in text and "no checkpoint" in text
    assert "| tws-a4 | `c` | 80.00 | 70.00 | 90.00 | 1,234 | True (10) |" in text
