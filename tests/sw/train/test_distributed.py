"""sw.train.distributed: the DDP code path (gloo, one rank) and two torchrun-style CPU ranks."""
import dataclasses
import json
import os
import shutil

import pytest
import torch

from sw.config import config_from_text
from sw.train.checkpoint import load_checkpoint
from sw.train.distributed import Dist
from sw.train.trainer import Trainer
from tests.sw.train.common import BIBERT, ROOT, _cfg


def test_ddp_code_path_gloo_world_1(pipeline, tmp_path, monkeypatch):
    """torch.distributed initialised (gloo, one rank): DDP wrapper and collectives run."""
    base_out, _, _ = pipeline
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, stages=cfg.stages[:2])
    shutil.copytree(base_out / "teacher", tmp_path / "teacher")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        s = Trainer(cfg, tmp_path, progress=False, dist=Dist(rank=0, world=1)).run()
    finally:
        torch.distributed.destroy_process_group()
    ref = json.loads((base_out / "ternary" / "final" / "state.json").read_text())["summary"]
    # same data order, seeds and maths as the single-process run
    assert s["ternary"]["dev"] == ref["dev"]
    a, _, _ = load_checkpoint(tmp_path / "ternary" / "final")
    b, _, _ = load_checkpoint(base_out / "ternary" / "final")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


def _ddp_worker(rank, world, port, cfg_text, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from sw.train.distributed import init_distributed

    dist = init_distributed()
    try:
        Trainer(config_from_text(cfg_text), out, progress=False, dist=dist).run()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~70 s on a loaded 2-core machine; test_ddp_code_path_gloo_world_1 covers DDP
def test_ddp_two_ranks_gloo(tmp_path):
    """torchrun-style environment, two CPU ranks: sharded epochs, rank-0 checkpoints."""
    import torch.multiprocessing as mp

    text = BIBERT.replace("TASK", "sst2").replace("DATA", str(ROOT / "data/glue")).replace(
        "  - {name: bibert, type: bibert, steps: 3}\n", "").replace(
        "{name: teacher, type: teacher, steps: 3}", "{name: teacher, type: teacher, epochs: 1}")
    port = 29700 + os.getpid() % 200
    mp.spawn(_ddp_worker, args=(2, port, text, str(tmp_path)), nprocs=2, join=True)
    state = json.loads((tmp_path / "teacher" / "final" / "state.json").read_text())
    # one epoch of 48 training rows over 2 ranks at batch 8: 3 steps (6 in one process)
    assert state["complete"] and state["summary"]["steps"] == 3
    hist = json.loads((tmp_path / "teacher" / "metrics.json").read_text())["history"]
    assert hist[-1]["step"] == 3
    model, _, _ = load_checkpoint(tmp_path / "teacher" / "final")
    assert model.config.num_labels == 2
