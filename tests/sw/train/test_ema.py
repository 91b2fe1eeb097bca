"""sw.train.ema: the weight average's warm-up, and a stage's ema evaluated, handed on, resumed."""
import shutil

import pytest
import torch

from hw.errors import BinbertError
from sw.config import config_from_text
from sw.train.checkpoint import load_checkpoint
from sw.train.trainer import Trainer, evaluate
from tests.sw.train.common import BIBERT, ROOT


def test_ema_averages_floating_state_with_tf_warmup():
    """_Ema: decay min(d, (1 + t) / (10 + t)) on floating tensors; other buffers are copied."""
    from sw.train.ema import Ema

    live = torch.nn.Linear(2, 1)
    live.register_buffer("flag", torch.tensor(False))
    with torch.no_grad():
        live.weight.fill_(0.0)
    ema = Ema(live, 0.5)
    expect = 0.0
    for t, w in enumerate((1.0, 3.0, -2.0), start=1):
        with torch.no_grad():
            live.weight.fill_(w)
        live.flag.fill_(t % 2 == 1)
        ema.update(live)
        d = min(0.5, (1 + t) / (10 + t))
        expect = d * expect + (1 - d) * w
        assert float(ema.model.weight[0, 0]) == pytest.approx(expect)
        assert bool(ema.model.flag) == (t % 2 == 1)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert ema.updates == 3


def test_stage_ema_is_what_is_evaluated_handed_on_and_resumed(tmp_path):
    """A stage's ``ema``: the weight average is evaluated and becomes final (select: last here);
    a tiny decay follows the live weights; an interrupted run resumes the average exactly."""
    base = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "eval_every: 3,", "eval_every: 3, select: last, checkpoint_every: 2,").replace(
        "{name: bibert, type: bibert, steps: 3}", "{name: bibert, type: bibert, steps: 6EMA}")
    finals = {}
    for name, ema in (("live", ""), ("tiny", ", ema: 1.0e-9"), ("avg", ", ema: 0.9")):
        out = tmp_path / name
        if name != "live":
            shutil.copytree(tmp_path / "live" / "teacher", out / "teacher")
        tr = Trainer(config_from_text(base.replace("EMA", ema)), out, progress=False)
        s = tr.run()
        finals[name], _, _ = load_checkpoint(out / "bibert" / "final")
        assert evaluate(finals[name], tr.dev_ds, "sst2") == s["bibert"]["dev"]
    sd = {k: v.state_dict() for k, v in finals.items()}
    keys = [k for k, v in sd["live"].items() if v.is_floating_point()]
    for k in keys:
        torch.testing.assert_close(sd["tiny"][k], sd["live"][k], rtol=0, atol=1e-6)
    assert max(float((sd["avg"][k] - sd["live"][k]).abs().max()) for k in keys) > 1e-4
    # interrupted after 3 steps (resumes from the step-2 checkpoint), then run to the end
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "live" / "teacher", cut / "teacher")
    cfg = config_from_text(base.replace("EMA", ", ema: 0.9"))
    tr = Trainer(cfg, cut, progress=False)
    tr._interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        tr.run()
    Trainer(cfg, cut, progress=False).run()
    resumed, _, _ = load_checkpoint(cut / "bibert" / "final")
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, sd["avg"][k]), k
    for bad in ("1.0", "0", "-0.5"):
        with pytest.raises(BinbertError, match=r"stages\[1\] \(bibert\).ema is a decay in \(0, 1\)"):
            config_from_text(base.replace("EMA", f", ema: {bad}"))
    tiny = (ROOT / "models" / "tiny-test.yaml").read_text()
    assert tiny.count("{name: split, type: split}") == 1
    with pytest.raises(BinbertError, match=r"stages\[2\] \(split\).ema: a split stage does not train"):
        config_from_text(tiny.replace("{name: split, type: split}",
                                      "{name: split, type: split, ema: 0.9}"))
