"""GLUE TSV loading, tokenisation and batching (SST-2, CoLA, MRPC, STS-B).

The reader takes the columns of each task by name (header files) or position (CoLA has no
header), so it reads both ``data/glue/`` and any standard GLUE download. Every problem with a
file stops with a BinbertError naming the file (and line or column).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from hw.errors import BinbertError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    folder: str  # the GLUE folder name
    header: bool
    text_a: str | int  # column name (header files) or 0-based index (headerless)
    text_b: str | int | None
    label: str | int
    regression: bool = False
    label_range: tuple[float, float] | None = None  # a regression label's valid interval

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else 2


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", "SST-2", True, "sentence", None, "label"),
    # CoLA: source, label, original notation, sentence - no header.
    "cola": TaskSpec("cola", "CoLA", False, 3, None, 1),
    "mrpc": TaskSpec("mrpc", "MRPC", True, "#1 String", "#2 String", "Quality"),
    "stsb": TaskSpec("stsb", "STS-B", True, "sentence1", "sentence2", "score", regression=True,
                     label_range=(0.0, 5.0)),
}
_COLA_COLUMNS = ("source", "label", "notation", "sentence")


def task_spec(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise BinbertError(f"unknown task {task!r} (known: {', '.join(TASKS)})") from None


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: Optional[str]
    label: float | int


def task_file(data_dir: str | Path, task: str, split: str) -> Path:
    """``DIR/<GLUE folder>/<split>.tsv``, or ``DIR/<split>.tsv`` when DIR is the task folder."""
    spec = task_spec(task)
    d = Path(data_dir)
    if not d.is_dir():
        raise BinbertError(f"data directory {d} does not exist")
    for cand in (d / spec.folder / f"{split}.tsv", d / f"{split}.tsv"):
        if cand.is_file():
            return cand
    raise BinbertError(f"{d / spec.folder / f'{split}.tsv'}: missing {spec.folder} {split} file")


def read_examples(path: str | Path, task: str) -> list[Example]:
    spec = task_spec(task)
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column name
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise BinbertError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise BinbertError(f"{path}: cannot read ({exc.strerror})") from None
    first = 0
    if spec.header:
        if not lines:
            raise BinbertError(f"{path}: empty file, expected a header line")
        header = lines[0].split("\t")

        def col(name):
            if name not in header:
                raise BinbertError(f"{path}: missing column {name!r} in the header "
                                   f"(found: {', '.join(header)})")
            return header.index(name)

        ia, il = col(spec.text_a), col(spec.label)
        ib = col(spec.text_b) if spec.text_b is not None else None
        names = header
        first = 1
    else:
        ia, il, ib = spec.text_a, spec.label, spec.text_b
        names = list(_COLA_COLUMNS)
    need = max(i for i in (ia, il, ib) if i is not None)
    out: list[Example] = []
    for n, line in enumerate(lines[first:], start=first + 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) <= need:
            missing = names[len(cells)] if len(cells) < len(names) else f"#{len(cells) + 1}"
            raise BinbertError(f"{path}:{n}: row has {len(cells)} columns, missing column "
                               f"{missing!r}")
        raw = cells[il].strip()
        try:
            if spec.regression:
                label: float | int = float(raw)
                lo, hi = spec.label_range or (-math.inf, math.inf)
                if not (math.isfinite(label) and lo <= label <= hi):
                    raise ValueError
            else:
                label = int(raw)
                if label not in (0, 1):
                    raise ValueError
        except ValueError:
            kind = "0 or 1"
            if spec.regression:
                kind = "a number" + (f" from {spec.label_range[0]:g} to {spec.label_range[1]:g}"
                                     if spec.label_range else "")
            raise BinbertError(f"{path}:{n}: bad label {raw!r} in column {names[il]!r} "
                               f"(expected {kind})") from None
        out.append(Example(cells[ia], cells[ib] if ib is not None else None, label))
    if not out:
        raise BinbertError(f"{path}: no examples")
    return out


def load_split(data_dir, task: str, split: str, limit: int | None = None,
               seed: int | None = None) -> list[Example]:
    """Examples of one split; ``limit`` keeps a seeded random subset (or the first N if no seed)."""
    ex = read_examples(task_file(data_dir, task, split), task)
    if limit is not None and limit < len(ex):
        if seed is None:
            ex = ex[:limit]
        else:
            g = torch.Generator().manual_seed(int(seed))
            keep = sorted(torch.randperm(len(ex), generator=g)[:limit].tolist())
            ex = [ex[i] for i in keep]
    return ex


def eval_examples(task: str, data_dir, config_dir, eval_limit: int | None,
                  limit: int | None = None) -> tuple[list[Example], str]:
    """The dev rows an evaluation of a checkpoint scores, and a line saying which and why.

    ``limit`` (--limit): the first N rows of any file. Otherwise the config's ``eval_limit``
    applies to the config's own dev file (``data_dir`` None, or the same file): those are the
    rows training evaluated, so the metrics match the stage's. Any other file is scored whole.
    """
    path = task_file(config_dir if data_dir is None else data_dir, task, "dev")
    ex = read_examples(path, task)
    total = len(ex)
    if limit is not None:
        keep, why = limit, f"--limit {limit}"
    elif data_dir is not None and not _same_file(path, config_dir, task):
        keep, why = None, "the whole file: not the checkpoint config's dev set"
    elif eval_limit is not None:
        keep, why = eval_limit, (f"data.eval_limit={eval_limit} of the checkpoint's config, the "
                                 f"rows its training evaluated; --limit N to change")
    else:
        keep, why = None, "the checkpoint config's dev set"
    ex = ex if keep is None else ex[:keep]
    return ex, f"{path}: {len(ex)} of {total} rows ({why})"


def _same_file(path: Path, config_dir, task: str) -> bool:
    try:
        return task_file(config_dir, task, "dev").resolve() == path.resolve()
    except BinbertError:  # the config's data directory is not here: another file
        return False


class Encoded(torch.utils.data.Dataset):
    """Tokenised examples (unpadded id lists); ``collate`` pads each batch to its longest row."""

    def __init__(self, examples: list[Example], tokenizer, max_seq_len: int, regression: bool):
        a = [e.text_a for e in examples]
        b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
        enc = tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=False,
                        return_token_type_ids=True, return_attention_mask=False)
        self.input_ids = enc["input_ids"]
        self.token_type_ids = enc["token_type_ids"]
        self.max_seq_len = max_seq_len
        # only a row that fills max_seq_len can have been cut: its untruncated length tells
        full = [i for i, ids in enumerate(self.input_ids) if len(ids) >= max_seq_len]
        whole = tokenizer([a[i] for i in full], [b[i] for i in full] if b else None,
                          truncation=False, padding=False, return_token_type_ids=False,
                          return_attention_mask=False)["input_ids"] if full else []
        cut = [len(ids) for ids in whole if len(ids) > max_seq_len]
        self.truncated = len(cut)  # examples cut at max_seq_len
        self.longest = max(cut + [len(ids) for ids in self.input_ids], default=0)  # uncut
        dtype = torch.float32 if regression else torch.long
        self.labels = torch.tensor([e.label for e in examples], dtype=dtype)
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int):
        return i

    def collate(self, idx: list[int]) -> dict[str, torch.Tensor]:
        n = max(len(self.input_ids[i]) for i in idx)
        ids = torch.full((len(idx), n), self.pad_id, dtype=torch.long)
        tt = torch.zeros((len(idx), n), dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for r, i in enumerate(idx):
            k = len(self.input_ids[i])
            ids[r, :k] = torch.tensor(self.input_ids[i])
            tt[r, :k] = torch.tensor(self.token_type_ids[i])
            mask[r, :k] = 1
        return {"input_ids": ids, "token_type_ids": tt, "attention_mask": mask,
                "labels": self.labels[idx]}


TRUNCATION_WARN = 0.05  # the share of cut examples above which a split's report warns


def truncation_report(split: str, ds: Encoded) -> str:
    """One line: how many examples of ``split`` were cut at max_seq_len (a warning when more
    than TRUNCATION_WARN of them were)."""
    n = len(ds)
    share = ds.truncated / n if n else 0.0
    line = (f"{split}: {ds.truncated} of {n} examples ({share:.1%}) cut at data.max_seq_len="
            f"{ds.max_seq_len} tokens")
    if ds.truncated:
        line += f" (the longest has {ds.longest})"
    if share > TRUNCATION_WARN:
        line += (f"; warning: more than {TRUNCATION_WARN:.0%} cut, raise data.max_seq_len "
                 f"(at most the model's position table)")
    return line


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch, a pure function of (n, seed, epoch, rank, world).

    Uses ``DistributedSampler`` (one replica when not distributed) so single-process and DDP
    runs share one ordering rule, and a resumed run can skip exactly the consumed batches.
    """
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle,
                                 seed=int(seed), drop_last=False)
    sampler.set_epoch(int(epoch))
    order = list(sampler)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def loader(ds: Encoded, batches: list[list[int]]) -> Iterator[dict[str, torch.Tensor]]:
    """A DataLoader over fixed batches (single process: batches are cheap to pad).

    Its own generator: a DataLoader iterator otherwise draws its base seed from the global RNG,
    which would shift the dropout masks of a resumed run against an uninterrupted one.
    """
    return iter(torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate,
                                            generator=torch.Generator().manual_seed(0)))
