"""sw.data on the real GLUE files in data/glue and on broken copies of them."""
from pathlib import Path

import pytest
import torch

from hw.errors import BinbertError
from sw import backbone as bb
from sw.data import (TASKS, TRUNCATION_WARN, Encoded, epoch_batches, eval_examples, load_split,
                     read_examples, task_file, task_spec, truncation_report)

GLUE = Path(__file__).resolve().parents[2] / "data" / "glue"


@pytest.fixture(scope="module")
def tokenizer():
    return bb.load_tokenizer("minilm")


def _rows(path: Path, header: bool) -> list[list[str]]:
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    return [l.split("\t") for l in (lines[1:] if header else lines)]


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("split", ["train", "dev"])
def test_real_files(task, split):
    spec = task_spec(task)
    path = task_file(GLUE, task, split)
    ex = read_examples(path, task)
    rows = _rows(path, spec.header)
    assert len(ex) == len(rows)
    if spec.header:
        header = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
        ia, il = header.index(spec.text_a), header.index(spec.label)
    else:
        ia, il = spec.text_a, spec.label
    # spot-check first/last rows against an independent split of the file
    for e, r in ((ex[0], rows[0]), (ex[-1], rows[-1])):
        assert e.text_a == r[ia]
        assert e.label == (float(r[il]) if spec.regression else int(r[il]))
    assert (ex[0].text_b is None) == (spec.text_b is None)
    labels = {e.label for e in ex}
    if spec.regression:
        assert min(labels) >= 0 and max(labels) <= 5
    else:
        assert labels == {0, 1}


def test_task_folder_or_glue_root(tmp_path):
    assert task_file(GLUE / "SST-2", "sst2", "dev") == GLUE / "SST-2" / "dev.tsv"
    assert task_file(GLUE, "sst2", "dev") == GLUE / "SST-2" / "dev.tsv"


def test_unknown_task_and_missing_things(tmp_path):
    with pytest.raises(BinbertError, match="unknown task 'rte'"):
        task_spec("rte")
    with pytest.raises(BinbertError, match="does not exist"):
        task_file(tmp_path / "nope", "sst2", "dev")
    with pytest.raises(BinbertError, match=r"SST-2/dev.tsv: missing SST-2 dev file"):
        task_file(tmp_path, "sst2", "dev")


def _write(tmp_path, folder, text):
    d = tmp_path / folder
    d.mkdir()
    (d / "dev.tsv").write_text(text)
    return d / "dev.tsv"


def test_missing_column_names_file_and_column(tmp_path):
    p = _write(tmp_path, "SST-2", "sentence\tlabels\nfine film\t1\n")
    with pytest.raises(BinbertError, match=r"dev.tsv: missing column 'label'"):
        load_split(tmp_path, "sst2", "dev")
    p2 = _write(tmp_path, "MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\n1\t2\t3\ta\n")
    with pytest.raises(BinbertError, match=r"MRPC/dev.tsv: missing column '#2 String'"):
        read_examples(p2, "mrpc")
    assert p.is_file()


def test_short_row_and_bad_label_name_line(tmp_path):
    _write(tmp_path, "CoLA", "src\t1\t\tgood sentence\nsrc\t0\n")
    with pytest.raises(BinbertError, match=r"dev.tsv:2: row has 2 columns, missing column "
                                           r"'notation'"):
        load_split(tmp_path, "cola", "dev")
    p = tmp_path / "bad.tsv"
    p.write_text("sentence\tlabel\nok\t1\nmeh\tpositive\n")
    with pytest.raises(BinbertError, match=r"bad.tsv:3: bad label 'positive' in column 'label'"):
        read_examples(p, "sst2")
    p.write_text("sentence\tlabel\nok\t2\n")
    with pytest.raises(BinbertError, match=r"bad.tsv:2: bad label '2'"):
        read_examples(p, "sst2")
    p.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\tnan\n")
    with pytest.raises(BinbertError, match=r"bad.tsv:2: bad label 'nan' .*a number"):
        read_examples(p, "stsb")
    p.write_text("sentence\tlabel\n")
    with pytest.raises(BinbertError, match="no examples"):
        read_examples(p, "sst2")


def test_stsb_score_outside_0_to_5_names_file_line_and_value(tmp_path):
    p = tmp_path / "dev.tsv"
    for bad in ("5.5", "-0.25"):
        p.write_text(f"index\tsentence1\tsentence2\tscore\n0\ta\tb\t5.0\n1\tc\td\t{bad}\n")
        with pytest.raises(BinbertError, match=rf"dev.tsv:3: bad label '{bad}' in column 'score' "
                                               rf"\(expected a number from 0 to 5\)"):
            read_examples(p, "stsb")
    p.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\t0\n1\tc\td\t5\n")
    assert [e.label for e in read_examples(p, "stsb")] == [0.0, 5.0]  # both ends are scores


def test_byte_order_mark_before_the_header(tmp_path):
    """A TSV saved with a UTF-8 byte-order mark reads as the same file without one."""
    src = GLUE / "MRPC" / "dev.tsv"
    p = _write(tmp_path, "MRPC", "\ufeff" + src.read_text(encoding="utf-8"))
    assert p.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert read_examples(p, "mrpc") == read_examples(src, "mrpc")


def test_limit_is_a_seeded_subset():
    full = load_split(GLUE, "sst2", "train")
    a = load_split(GLUE, "sst2", "train", limit=50, seed=3)
    b = load_split(GLUE, "sst2", "train", limit=50, seed=3)
    c = load_split(GLUE, "sst2", "train", limit=50, seed=4)
    assert a == b and a != c and len(a) == 50
    assert all(e in full for e in a)
    assert load_split(GLUE, "sst2", "dev", limit=5) == load_split(GLUE, "sst2", "dev")[:5]


def test_tokenisation_pairs_and_padding(tokenizer):
    ex = load_split(GLUE, "mrpc", "dev", limit=6)
    ds = Encoded(ex, tokenizer, max_seq_len=40, regression=False)
    b = ds.collate([0, 1, 2])
    assert b["input_ids"].shape == b["attention_mask"].shape == b["token_type_ids"].shape
    assert b["input_ids"].shape[1] <= 40
    for r, i in enumerate([0, 1, 2]):
        n = len(ds.input_ids[i])
        ids = b["input_ids"][r]
        assert ids[0] == tokenizer.cls_token_id
        assert (ids[n:] == tokenizer.pad_token_id).all() and b["attention_mask"][r, n:].sum() == 0
        assert b["attention_mask"][r, :n].all()
        # the second sentence gets segment 1 and ends with [SEP]
        assert b["token_type_ids"][r, :n].max() == 1
        assert ids[n - 1] == tokenizer.sep_token_id
    # rows are the tokenizer's own output, truncated (both sentences) to max_seq_len
    for i, e in enumerate(ex):
        direct = tokenizer(e.text_a, e.text_b)["input_ids"]
        if len(direct) <= 40:
            assert ds.input_ids[i] == direct
        else:
            assert len(ds.input_ids[i]) == 40
            assert ds.input_ids[i].count(tokenizer.sep_token_id) == 2
    assert any(len(tokenizer(e.text_a, e.text_b)["input_ids"]) > 40 for e in ex)
    assert b["labels"].dtype == torch.long


def test_regression_labels_float(tokenizer):
    ds = Encoded(load_split(GLUE, "stsb", "dev", limit=4), tokenizer, 32, regression=True)
    assert ds.labels.dtype == torch.float32


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_batches_deterministic_and_partitioned(world):
    n, bs = 23, 4
    per_rank = [epoch_batches(n, bs, seed=5, epoch=2, rank=r, world=world) for r in range(world)]
    again = [epoch_batches(n, bs, seed=5, epoch=2, rank=r, world=world) for r in range(world)]
    assert per_rank == again
    seen = [i for bl in per_rank for b in bl for i in b]
    assert set(seen) == set(range(n))  # every example in the epoch, on some rank
    assert all(len(b) <= bs for bl in per_rank for b in bl)
    assert epoch_batches(n, bs, 5, 3) != epoch_batches(n, bs, 5, 2)  # reshuffled per epoch


def test_truncated_examples_are_counted(tokenizer):
    ex = load_split(GLUE, "mrpc", "dev", limit=40)
    full = [len(tokenizer(e.text_a, e.text_b)["input_ids"]) for e in ex]
    ds = Encoded(ex, tokenizer, max_seq_len=40, regression=False)
    cut = sum(n > 40 for n in full)
    assert 0 < cut < len(ex)
    assert ds.truncated == cut and ds.longest == max(full) and ds.max_seq_len == 40
    line = truncation_report("dev", ds)
    assert line.startswith(f"dev: {cut} of {len(ex)} examples ({cut / len(ex):.1%}) cut at "
                           f"data.max_seq_len=40 tokens (the longest has {max(full)})")
    assert ("warning" in line) == (cut / len(ex) > TRUNCATION_WARN)
    whole = Encoded(ex, tokenizer, max_seq_len=max(full), regression=False)
    assert whole.truncated == 0 and "warning" not in truncation_report("train", whole)


def test_eval_rows_follow_limit_then_the_configs_own_file(tmp_path):
    """--limit: the first N rows of any file; the config's eval_limit: its own dev file only;
    any other file: whole."""
    rows = read_examples(GLUE / "SST-2" / "dev.tsv", "sst2")
    other = _write(tmp_path, "SST-2", "sentence\tlabel\nfine film\t1\nawful\t0\nok\t1\n")
    ex, note = eval_examples("sst2", None, GLUE, 32)
    assert ex == rows[:32] and note.startswith(f"{GLUE / 'SST-2' / 'dev.tsv'}: 32 of {len(rows)} rows")
    assert "data.eval_limit=32" in note
    assert eval_examples("sst2", GLUE / "SST-2", GLUE, 32)[0] == rows[:32]  # the same file
    ex, note = eval_examples("sst2", tmp_path, GLUE, 32)
    assert len(ex) == 3 and note == f"{other}: 3 of 3 rows (the whole file: not the checkpoint config's dev set)"
    assert len(eval_examples("sst2", tmp_path, tmp_path / "gone", 2)[0]) == 3
    ex, note = eval_examples("sst2", tmp_path, GLUE, 32, limit=2)
    assert len(ex) == 2 and "2 of 3 rows (--limit 2)" in note
    assert eval_examples("sst2", None, GLUE, 32, limit=100)[0] == rows[:100]
    assert eval_examples("sst2", None, GLUE, None)[0] == rows
