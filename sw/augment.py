"""Word-replacement data augmentation for the distillation stages (TinyBERT's recipe, offline).

BinaryBERT and BiBERT report their best GLUE numbers with TinyBERT's augmentation (Jiao et al.
2020): each training sentence gets ``copies`` variants in which every word is, with
probability ``prob``, replaced by one of its ``candidates`` nearest words; the student is then
distilled on originals + variants, the teacher supplying the targets (the labels of the
variants are never used for training). TinyBERT draws candidates from BERT's masked-LM head
(single-piece words) and GloVe (the rest). Neither ships offline here, so candidates are the
nearest whole-word vocabulary entries by cosine of the model's own input word embeddings — a
context-free neighbour list, like TinyBERT's GloVe path. Words that are not one whole-word
vocabulary entry (punctuation, numbers, multi-piece words) are kept.

Everything is a pure function of (examples, embedding matrix, vocabulary, config, seed).
"""
from __future__ import annotations

import random
import re

import torch

from hw.errors import BinbertError
from sw.config import AugmentConfig
from sw.data import Example

_WORD = re.compile(r"[a-z]{2,}")


def neighbour_table(vocab: dict[str, int], embeddings: torch.Tensor, k: int,
                    chunk: int = 2048) -> dict[str, list[str]]:
    """For every whole-word vocabulary entry (two or more letters a-z), its ``k`` nearest other
    such entries by cosine similarity of the rows of ``embeddings`` (vocab_size, hidden)."""
    words = sorted(w for w in vocab if _WORD.fullmatch(w))
    if len(words) <= k:
        raise BinbertError(f"data.augment.candidates={k}: the vocabulary has only {len(words)} "
                           f"whole words")
    if embeddings.shape[0] <= max(vocab[w] for w in words):
        raise BinbertError(f"augment: embedding matrix has {embeddings.shape[0]} rows, the "
                           f"vocabulary needs {max(vocab[w] for w in words) + 1}")
    e = embeddings.detach().float()[[vocab[w] for w in words]]
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    table: dict[str, list[str]] = {}
    for lo in range(0, len(words), chunk):
        sim = e[lo:lo + chunk] @ e.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + lo] = -float("inf")  # never the word itself
        top = sim.topk(k, dim=1).indices.tolist()
        for r, idx in enumerate(top):
            table[words[lo + r]] = [words[i] for i in idx]
    return table


def _variant(text: str, table: dict[str, list[str]], prob: float, rng: random.Random) -> str:
    out = []
    for w in text.split(" "):
        cands = table.get(w.lower())
        out.append(rng.choice(cands) if cands and rng.random() < prob else w)
    return " ".join(out)


def augment(examples: list[Example], table: dict[str, list[str]], cfg: AugmentConfig,
            seed: int) -> list[Example]:
    """``cfg.copies`` variants of every example (text_a and text_b alike), in example order.

    Variants equal to their original are dropped (a sentence without replaceable words adds
    nothing); each keeps its original's label (only the ground-truth task loss would read it,
    and the trainer never uses augmented rows for that)."""
    rng = random.Random(seed)
    out: list[Example] = []
    for ex in examples:
        seen = {(ex.text_a, ex.text_b)}
        for _ in range(cfg.copies):
            a = _variant(ex.text_a, table, cfg.prob, rng)
            b = _variant(ex.text_b, table, cfg.prob, rng) if ex.text_b is not None else None
            if (a, b) not in seen:
                seen.add((a, b))
                out.append(Example(a, b, ex.label))
    return out
