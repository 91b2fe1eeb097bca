"""benchmarks/hw.py: regenerating hw.md keeps the hand-measured sections appended after the
generated tables (the encoder bitstreams), and a fresh file gets none."""
from benchmarks import hw as bench


def test_regeneration_keeps_appended_section(tmp_path):
    md = tmp_path / "hw.md"
    extra = f"{bench.KEPT_SECTION}\n\n| preset | LUT4 |\n|---|---|\n| tiny | 19,278 |\n"
    md.write_text("# Hardware benchmarks\n\nold generated text\n\n" + extra)
    bench.write_markdown(md, [], None, None, "python benchmarks/hw.py --test")
    text = md.read_text()
    assert "old generated text" not in text
    assert "python benchmarks/hw.py --test" in text
    assert text.count(bench.KEPT_SECTION) == 1 and text.rstrip().endswith("| tiny | 19,278 |")


def test_fresh_file_has_no_kept_section(tmp_path):
    md = tmp_path / "hw.md"
    bench.write_markdown(md, [], None, None, "cmd")
    assert bench.KEPT_SECTION not in md.read_text()
