"""sw.intsim: the quantized model's forward switched to the integer semantics of the golden model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.sw.chain_models import batch, tiny_quant
from hw.errors import BinbertError
from sw.export import build_params
from sw.intsim import IntSim, integer_semantics


@pytest.fixture(scope="module")
def model():
    return tiny_quant("binary", seed=4)


def test_forward_follows_golden_inside_and_float_outside(model):
    b = batch(7, b=8, t=12)
    golden = build_params(model).compute(*(b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")))
    with torch.no_grad():
        before = model(**b).logits
        with integer_semantics(model) as sim:
            inside = model(**b, labels=torch.tensor([0, 1] * 4))
        after = model(**b).logits
    assert torch.equal(before, after)  # the float forward is back, untouched
    assert np.array_equal(inside.logits.double().numpy() * 2.0**sim.params.logit_frac, golden)
    assert torch.isfinite(inside.loss)
    assert not torch.equal(inside.logits, before)  # it really is another computation


def test_weights_are_folded_on_entry(model):
    b = batch(8, b=4, t=10)
    with integer_semantics(model) as sim:
        first = sim.logits(b["input_ids"], b["attention_mask"])
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    try:
        with integer_semantics(model) as sim:
            second = sim.logits(b["input_ids"], b["attention_mask"])
    finally:
        with torch.no_grad():
            model.classifier.bias.sub_(1.0)
    delta = (second - first).double() / 2.0**sim.params.logit_frac
    assert torch.allclose(delta, torch.ones_like(delta), atol=2.0**-10)


class _FakeTokenizer:
    """Word -> id by character sum: enough for sw.data.Encoded without loading a vocabulary."""

    pad_token_id = 0

    def __call__(self, a, b=None, max_length=16, **_):
        ids = [[101 % 150] + [7 + (sum(map(ord, w)) % 150) for w in s.split()][: max_length - 2] + [3] for s in a]
        return {"input_ids": ids, "token_type_ids": [[0] * len(x) for x in ids]}


def test_evaluation_helpers_run_unchanged(model):
    """Callers that only call model(**batch) (sw.train.predict) get the integer predictions."""
    from sw.data import Encoded, Example
    from sw.train import predict

    texts = ["a gripping tale", "dull and long , far too long", "fine", "not much of anything at all"]
    ds = Encoded([Example(t, None, i % 2) for i, t in enumerate(texts)], _FakeTokenizer(), 16, False)
    with integer_semantics(model) as sim:
        pred = predict(model, ds, batch_size=3)
        b = ds.collate(list(range(len(ds))))
        want = sim.logits(b["input_ids"], b["attention_mask"], b["token_type_ids"]).argmax(-1).numpy()
    assert np.array_equal(pred, want)


def test_bad_inputs():
    with pytest.raises(BinbertError, match="EncoderParams"):
        IntSim(object())
    m = tiny_quant("bi", seed=1)
    with integer_semantics(m) as sim:
        with pytest.raises(BinbertError, match="input_ids"):
            m(inputs_embeds=torch.zeros(1, 3, 32))
        with pytest.raises(BinbertError, match="vocabulary"):
            sim.logits(torch.tensor([[1, 10_000]]))
