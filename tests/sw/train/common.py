"""Helpers shared by the sw.train tests: the tiny configs and small utilities."""
import contextlib
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

from sw.config import load_config
from sw.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "models" / "tiny-test.yaml"


def _cfg(**stage_steps):
    cfg = load_config(TINY)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(ROOT / "data/glue")))
    if stage_steps:
        cfg = dataclasses.replace(cfg, stages=tuple(
            dataclasses.replace(s, steps=stage_steps.get(s.name, s.steps)) for s in cfg.stages))
    return cfg


def _sd(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _rerun_binary(base_out: Path, tmp_path: Path, **binary_changes):
    """The pipeline's binary stage again, with ``binary_changes``, from copies of its earlier
    stages. Returns (output directory, summary)."""
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, stages=tuple(
        dataclasses.replace(s, **binary_changes) if s.name == "binary" else s
        for s in cfg.stages))
    out = tmp_path / "o"
    for name in ("teacher", "ternary", "split"):
        shutil.copytree(base_out / name, out / name)
    return out, Trainer(cfg, out, progress=False).run()


BIBERT = """
model: {backbone: tiny, tiny: {hidden_size: 32, num_layers: 2, num_heads: 4,
        intermediate_size: 64, max_position_embeddings: 64}}
data: {task: TASK, dir: DATA, max_seq_len: 24, train_limit: 48, eval_limit: 24}
train: {batch_size: 8, seed: 3, eval_every: 3, learning_rate: 1.0e-3, threads: 1}
stages:
  - {name: teacher, type: teacher, steps: 3}
  - {name: bibert, type: bibert, steps: 3}
"""


def _dev(cfg):
    from sw import backbone as bb
    from sw.data import Encoded, load_split

    return Encoded(load_split(cfg.data.dir, "sst2", "dev", cfg.data.eval_limit),
                   bb.load_tokenizer(cfg.model.backbone), cfg.data.max_seq_len, False)


@contextlib.contextmanager
def lock_held_elsewhere(out: Path):
    """``out``'s run lock held by another process until the block ends; yields that process
    (a ``kill()`` in the block is a crash: its record stays, its flock goes)."""
    code = ("import sys; from sw.train.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read(); lock.release()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
