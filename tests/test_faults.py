"""The standing fault suite: every kind of bad input or failing environment the CLI is known to
meet, one row each, run through the real entry point (``binbert.cli.main``) in-process.

Each row is (case id, driver, expected outcome). The driver returns the command line; it may
first write a broken copy of a fixture under ``tmp``, patch the file system or hold a lock
(``ctx``). The outcome is either ``ERR(pattern)``: exit status 2 and one ``binbert: error:``
line, the last of stderr, matching ``pattern``; or ``OK(note, check)``: exit status 0 and
``check`` true of the JSON printed. No row trains beyond a checkpoint fixture or runs a
simulator or synthesis tool: a fault must be caught before any of that starts. README's
Errors section lists what these rows guarantee.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from binbert.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "tiny-test.yaml"
DATA = ROOT / "data" / "glue"
EXPORT = ROOT / "tests" / "data" / "export-bi-tiny"


class ERR(NamedTuple):
    pattern: str


class OK(NamedTuple):
    note: str
    check: Callable[[dict], bool]


class Ctx(NamedTuple):
    tmp: Path
    ckpt: Path
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack


# ------------------------------------------------------------------ broken copies of fixtures

def _config(ctx, old: str, new: str) -> Path:
    text = TINY.read_text()
    assert old in text
    p = ctx.tmp / "config.yaml"
    p.write_text(text.replace(old, new))
    return p


def _train(config, ctx, *extra):
    return ["train", "--config", config, "--out", ctx.tmp / "out", "--max-steps", "1", "--quiet",
            *extra]


def _data(ctx, folder: str, text: str | bytes) -> Path:
    d = ctx.tmp / "glue"
    (d / folder).mkdir(parents=True)
    for split in ("train", "dev"):
        f = d / folder / f"{split}.tsv"
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def _stsb_out_of_range() -> str:
    head, row = (DATA / "STS-B" / "dev.tsv").read_text().splitlines()[:2]
    return f"{head}\n{row.rsplit(chr(9), 1)[0]}\t7.5\n"


def _export(ctx, edit) -> Path:
    d = ctx.tmp / "export"
    shutil.copytree(EXPORT, d)
    edit(d)
    return d


def _truncate(d):
    p = d / "classifier.weight.bin"
    p.write_bytes(p.read_bytes()[:-1])


def _edit_sha256(d):
    m = d / "manifest.json"
    text = m.read_text()
    digest = re.search(r'"sha256": "([0-9a-f]{64})"', text).group(1)
    m.write_text(text.replace(digest, "0" * 64, 1))


def _sim_model(export):
    # icarus: a tool the machine has, so the run gets as far as loading the export
    return ["sim", "--layer", "model", "--sim", "icarus", "--ckpt", export, "--seq-len", "16"]


def _os_error(code: int, under: Path | None = None, real=None):
    def fake(path=None, *args, **kwargs):
        if under is None or Path(path).is_relative_to(under):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)
    return fake


def _read_only_out(ctx):
    ctx.monkeypatch.setattr(os, "mkdir", _os_error(errno.EROFS, ctx.tmp / "ro", os.mkdir))
    return _train(TINY, ctx)[:3] + ["--out", ctx.tmp / "ro" / "run", "--max-steps", "1", "--quiet"]


def _full_disk(ctx):
    ctx.monkeypatch.setattr(Path, "write_bytes", _os_error(errno.ENOSPC))
    return ["export", ctx.ckpt, "--out", ctx.tmp / "x"]


def _lock_held(ctx):
    from tests.sw.train.common import lock_held_elsewhere

    ctx.stack.enter_context(lock_held_elsewhere(ctx.tmp / "out"))
    return _train(TINY, ctx)


# ------------------------------------------------------------------ the cases

CASES = [
    # config files
    ("config-missing", lambda c: ["train", "--config", c.tmp / "none.yaml", "--out", c.tmp / "o"],
     ERR(r"none\.yaml: config file not found")),
    ("config-unknown-key", lambda c: _train(_config(c, "eval_every: 4", "eval_evry: 4"), c),
     ERR(r"config\.yaml:\d+: unknown key 'eval_evry' in train \(did you mean 'eval_every'\?\)")),
    ("config-bad-type", lambda c: _train(_config(c, "batch_size: 8", "batch_size: eight"), c),
     ERR(r"config\.yaml:\d+: train\.batch_size must be an integer, not 'eight'")),
    ("config-bad-value", lambda c: _train(_config(c, "batch_size: 8", "batch_size: -3"), c),
     ERR(r"config\.yaml:\d+: train\.batch_size must be > 0, not -3")),
    ("config-bad-choice", lambda c: _train(_config(c, "task: sst2", "task: sst3"), c),
     ERR(r"config\.yaml:\d+: data\.task: 'sst3' is not one of .*\(did you mean 'sst2'\?\)")),
    ("config-yaml-syntax", lambda c: _train(_config(c, "seed: 7", "seed: [7"), c),
     ERR(r"config\.yaml:\d+: YAML syntax error: ")),
    ("config-max-seq-len-beyond-positions",
     lambda c: _train(_config(c, "max_seq_len: 24", "max_seq_len: 100"), c),
     ERR(r"data\.max_seq_len=100 is longer than the model's position table of 64 tokens")),
    # GLUE TSV files
    ("data-dir-missing", lambda c: _train(TINY, c, "--data", c.tmp / "nowhere"),
     ERR(r"data directory .*nowhere does not exist")),
    ("tsv-missing-column", lambda c: _train(TINY, c, "--data", _data(c, "SST-2", "text\tlabel\nok\t1\n")),
     ERR(r"SST-2/train\.tsv: missing column 'sentence' in the header \(found: text, label\)")),
    ("tsv-bad-label", lambda c: _train(TINY, c, "--data", _data(c, "SST-2", "sentence\tlabel\nok\t7\n")),
     ERR(r"SST-2/train\.tsv:2: bad label '7' in column 'label' \(expected 0 or 1\)")),
    ("tsv-stsb-score-out-of-range",
     lambda c: _train(_config(c, "task: sst2", "task: stsb"), c, "--data", _data(c, "STS-B", _stsb_out_of_range())),
     ERR(r"STS-B/train\.tsv:2: bad label '7\.5' in column 'score' \(expected a number from 0 to 5\)")),
    ("tsv-utf8-bom-header",
     lambda c: ["eval", "--ckpt", c.ckpt, "--data",
                _data(c, "SST-2", "\ufeffsentence\tlabel\nfine\t1\nbad\t0\n".encode("utf-8"))],
     OK("a BOM before the header is read as UTF-8-SIG: both rows scored", lambda r: r["examples"] == 2)),
    # checkpoints and exports
    ("ckpt-missing", lambda c: ["eval", "--ckpt", c.tmp / "none"],
     ERR(r"none: checkpoint directory does not exist")),
    ("export-ckpt-missing", lambda c: ["export", c.tmp / "none", "--out", c.tmp / "x"],
     ERR(r"none: checkpoint directory does not exist")),
    ("rom-truncated", lambda c: _sim_model(_export(c, _truncate)),
     ERR(r"classifier\.weight\.bin: 31 bytes, expected 32 .*\(truncated, or the manifest does not match\)")),
    ("rom-sha256-edited", lambda c: _sim_model(_export(c, _edit_sha256)),
     ERR(r"\.hex: sha256 differs from manifest\.json \(corrupted or replaced file\)")),
    ("rom-missing", lambda c: _sim_model(_export(c, lambda d: (d / "classifier.weight.hex").unlink())),
     ERR(r"classifier\.weight\.hex: ROM file missing \(listed in manifest\.json as roms\.classifier\.weight\)")),
    ("manifest-not-json", lambda c: _sim_model(_export(c, lambda d: (d / "manifest.json").write_text("{"))),
     ERR(r"manifest\.json: not valid JSON")),
    ("sim-seq-len-beyond-positions",
     lambda c: _sim_model(EXPORT)[:-1] + ["10000"],
     ERR(r"seq_len 10000: longer than the model's maximum of \d+ tokens \(its position table\)")),
    ("sim-no-sentence-in-vocabulary", lambda c: _sim_model(EXPORT),
     ERR(r"--sentences 20: only 0 of the \d+ sst2 dev sentences fit 16 tokens of this model's "
         r"vocabulary \(none tokenizes within its vocabulary of \d+ ids\)")),
    # names and counts on the command line
    ("sim-unknown-layer", lambda c: ["sim", "--layer", "bogus"],
     ERR(r"unknown layer 'bogus': supported layers are pe, mvu, lsq, ln, ffn, attn, encoder, model")),
    ("sim-unknown-simulator", lambda c: ["sim", "--layer", "pe", "--sim", "bogus"],
     ERR(r"unknown simulator 'bogus': choose one of verilator, icarus")),
    ("train-unknown-stage", lambda c: _train(TINY, c, "--stages", "teacher,bogus"),
     ERR(r"no stage named 'bogus'")),
    ("bitstream-unknown-layer", lambda c: ["bitstream", "--layer", "bogus", "--out", c.tmp / "b"],
     ERR(r"--layer 'bogus' unknown: choose one of mvu, pe, encoder")),
    ("bitstream-unknown-target", lambda c: ["bitstream", "--target", "bogus", "--out", c.tmp / "b"],
     ERR(r"--target 'bogus' unknown: choose one of ice40-up5k, ecp5-85k or all")),
    ("bitstream-pe-0", lambda c: ["bitstream", "--pe", "0", "--out", c.tmp / "b"],
     ERR(r"--pe 0: must be a positive integer")),
    ("train-max-steps-0", lambda c: _train(TINY, c)[:-3] + ["--max-steps", "0"],
     ERR(r"--max-steps must be a positive integer")),
    ("eval-limit-honoured", lambda c: ["eval", "--ckpt", c.ckpt, "--data", DATA, "--limit", "5"],
     OK("--limit 5 scores exactly the first 5 dev examples", lambda r: r["examples"] == 5)),
    # the environment
    ("out-read-only", _read_only_out,
     ERR(r"ro/run: cannot write \(Read-only file system\)")),
    ("out-disk-full", _full_disk,
     ERR(r"/x: cannot write \(No space left on device\)")),
    ("train-lock-held", _lock_held,
     ERR(r"out: another binbert train is writing into it \(pid \d+ on .*; lock .*train\.lock\)")),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A split tiny model on SST-2 (MiniLM vocabulary), saved as a binary-stage checkpoint:
    evaluable and exportable, and untrained (no row depends on its accuracy)."""
    from sw.backbone import minilm_path
    from sw.config import load_config
    from sw.train import save_checkpoint
    from tests.sw.chain_models import tiny_quant

    vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
    cfg = load_config(TINY)
    model = tiny_quant("split", vocab=vocab, max_pos=cfg.model.tiny.max_position_embeddings)
    path = tmp_path_factory.mktemp("ckpt") / "binary"
    save_checkpoint(path, model, cfg, {"stage": "binary", "complete": True})
    return path


@pytest.mark.parametrize("driver,expect", [pytest.param(d, e, id=i) for i, d, e in CASES])
def test_fault(driver, expect, ckpt, tmp_path, capsys, monkeypatch):
    with contextlib.ExitStack() as stack:
        argv = [str(a) for a in driver(Ctx(tmp_path, ckpt, monkeypatch, stack))]
        rc = main(argv)
        monkeypatch.undo()
    out, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if ln.startswith("binbert: error:")]
    if isinstance(expect, ERR):
        assert rc == 2, err
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
        assert re.search(expect.pattern, errors[0]), errors[0]
    else:
        assert rc == 0 and not errors, err
        assert expect.check(json.loads(out)), (expect.note, out)


def test_case_ids_are_unique():
    assert len({i for i, _, _ in CASES}) == len(CASES)
