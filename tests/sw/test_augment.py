"""sw/augment.py: TinyBERT-style word replacement with neighbours from MiniLM's word embeddings,
on real SST-2 sentences."""
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from hw.errors import BinbertError
from sw import backbone as bb
from sw.augment import augment, neighbour_table
from sw.config import AugmentConfig
from sw.data import Example, load_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vocab_emb():
    tok = bb.load_tokenizer("minilm")
    d = bb.backbone_dir("minilm")
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        key = next(k for k in f.keys() if k.endswith("word_embeddings.weight"))
        emb = f.get_tensor(key)
    return tok.get_vocab(), emb


@pytest.fixture(scope="module")
def table(vocab_emb):
    return neighbour_table(*vocab_emb, k=15)


def test_neighbours_are_whole_words_and_near(table, vocab_emb):
    vocab, emb = vocab_emb
    assert "good" in table and "movie" in table
    assert all(len(v) == 15 and "good" not in v for v in [table["good"]])
    assert not any(w.startswith("##") or not w.isalpha() for w in table["film"])
    # the neighbours are the nearest by cosine: none of them is farther than a word left out
    e = torch.nn.functional.normalize(emb.float(), dim=1)
    cos = lambda a, b: float(e[vocab[a]] @ e[vocab[b]])  # noqa: E731
    worst = min(cos("good", w) for w in table["good"])
    assert worst >= max(cos("good", w) for w in ("table", "seven", "river"))
    # and they carry meaning: MiniLM puts these together
    assert {"great", "bad", "nice", "better"} & set(table["good"])


def test_variants_of_real_sentences(table):
    ex = load_split(ROOT / "data" / "glue", "sst2", "train", limit=50, seed=1)
    cfg = AugmentConfig(copies=4, prob=0.4, candidates=15)
    out = augment(ex, table, cfg, seed=7)
    assert augment(ex, table, cfg, seed=7) == out  # a pure function of its seed
    assert augment(ex, table, cfg, seed=8) != out
    assert 150 <= len(out) <= 200  # at most 4 per sentence; duplicates and no-ops dropped
    originals = {e.text_a: e for e in ex}
    assert not set(originals) & {v.text_a for v in out}
    # every variant is some original with words swapped one for one, label kept
    for v in out:
        words = v.text_a.split(" ")
        src = [e for e in ex if len(e.text_a.split(" ")) == len(words) and all(
            a == b or b in table.get(a.lower(), ()) for a, b in zip(e.text_a.split(" "), words))]
        assert src and v.label in {e.label for e in src}


def test_replacement_rate_and_untouched_tokens(table):
    e = Example("the movie is good , and the acting is 100 % great .", None, 1)
    out = augment([e], table, AugmentConfig(copies=200, prob=0.4, candidates=15), seed=0)
    orig = e.text_a.split(" ")
    hits = total = 0
    for v in out:
        words = v.text_a.split(" ")
        assert len(words) == len(orig)
        for a, b in zip(orig, words):
            if a not in table:  # punctuation, numbers: never replaced
                assert a == b
            else:
                total += 1
                hits += a != b
                assert a == b or b in table[a]
    assert 0.33 < hits / total < 0.47


def test_pairs_augment_both_sentences(table):
    e = Example("a good movie", "a great film", 0.7)
    out = augment([e], table, AugmentConfig(copies=10, prob=1.0, candidates=5), seed=0)
    assert all(v.text_b is not None and v.label == 0.7 for v in out)
    assert any(v.text_b != e.text_b for v in out) and any(v.text_a != e.text_a for v in out)


def test_bad_tables():
    vocab = {"[PAD]": 0, "good": 1, "bad": 2, "##s": 3}
    with pytest.raises(BinbertError, match="candidates=5: the vocabulary has only 2 whole words"):
        neighbour_table(vocab, torch.randn(4, 8), k=5)
    with pytest.raises(BinbertError, match="embedding matrix has 2 rows"):
        neighbour_table(vocab, torch.randn(2, 8), k=1)
