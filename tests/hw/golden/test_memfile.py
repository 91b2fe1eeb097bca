"""Memory-init files: round trips in every format, byte-level layout, and each corruption."""
import numpy as np
import pytest

from hw.errors import BinbertError
from hw.rtl.mvu import MVUParams
from hw.golden.memfile import (bytes_per_word, bytes_to_words, memfile_bytes, memfile_size,
                               read_memfile, words_to_bytes, write_memfile)


def _words(rng, width, depth):
    return [int.from_bytes(rng.bytes(bytes_per_word(width)), "little") & ((1 << width) - 1)
            for _ in range(depth)]


@pytest.mark.parametrize("fmt", ["hex", "mem", "bin"])
@pytest.mark.parametrize("width", [1, 7, 8, 13, 64, 100])
def test_roundtrip(tmp_path, fmt, width):
    rng = np.random.default_rng(width)
    words = _words(rng, width, 9)
    words[0] = (1 << width) - 1
    words[1] = 0
    path = write_memfile(tmp_path / f"rom.{fmt}", words, width)
    assert read_memfile(path, width, 9) == words
    assert read_memfile(path, width, 9, fmt=fmt) == words


def test_layouts(tmp_path):
    """hex: MSB-first zero-padded digits; mem: header + the same; bin: little-endian words."""
    words = [0x1A2, 0x003]
    assert (write_memfile(tmp_path / "a.hex", words, 10)).read_text() == "1a2\n003\n"
    assert (write_memfile(tmp_path / "a.mem", words, 10)).read_text() == "// width=10 depth=2\n1a2\n003\n"
    assert (write_memfile(tmp_path / "a.bin", words, 10)).read_bytes() == bytes([0xA2, 0x01, 0x03, 0x00])


@pytest.mark.parametrize("fmt", ["hex", "mem", "bin"])
@pytest.mark.parametrize("width", [1, 10, 64, 65, 200])
def test_array_rows_write_the_same_files(tmp_path, fmt, width):
    """The export's (depth, W) uint64 arrays and write_memfile's ints give the same bytes, of
    memfile_size; words_to_bytes / bytes_to_words invert each other; depth 0 is an empty body."""
    rng = np.random.default_rng(width)
    words = _words(rng, width, 5)
    n_words = -(-width // 64)
    arr = np.array([[(w >> (64 * j)) & (2**64 - 1) for j in range(n_words)] for w in words],
                   dtype=np.uint64)
    rows = words_to_bytes(arr, width)
    blob = memfile_bytes(rows, width, fmt)
    assert blob == write_memfile(tmp_path / f"a.{fmt}", words, width).read_bytes()
    assert len(blob) == memfile_size(width, 5, fmt)
    assert np.array_equal(bytes_to_words(rows, n_words), arr)
    empty = memfile_bytes(rows[:0], width, fmt)
    assert len(empty) == memfile_size(width, 0, fmt)
    assert empty == (f"// width={width} depth=0\n".encode() if fmt == "mem" else b"")


def test_mvu_params_from_rom_file(tmp_path):
    rng = np.random.default_rng(0)
    p = MVUParams(k=24, n=6, pe=3, simd=8, weights=rng.integers(0, 2, (6, 24)), a_bits=2)
    for fmt in ("hex", "mem", "bin"):
        path = write_memfile(tmp_path / f"w.{fmt}", p.rom_words(), p.rom_width)
        q = MVUParams.from_rom_file(path, k=24, n=6, pe=3, simd=8, a_bits=2)
        assert np.array_equal(q.weights, p.weights) and q.a_bits == 2
        x = rng.integers(-2, 2, (3, 24))
        assert np.array_equal(q.compute(x), p.compute(x))


def test_comments_and_blank_lines_allowed(tmp_path):
    path = tmp_path / "c.hex"
    path.write_text("// weights\n\n0f\n  10  \n")
    assert read_memfile(path, 8, 2) == [0x0F, 0x10]


@pytest.mark.parametrize("content,match", [
    ("0f\n", r"c.hex: 1 words, expected depth=2 \(file truncated\)"),
    ("0f\n10\n11\n", r"c.hex:3: more than depth=2 words"),
    ("0f\nzz\n", r"c.hex:2: 'zz' is not a hexadecimal word"),
    ("0x0f\n10\n", r"c.hex:1: '0x0f' is not a hexadecimal"),
    ("0f\n1ff\n", r"c.hex:2: value 1ff is wider than width=8"),
])
def test_hex_errors(tmp_path, content, match):
    path = tmp_path / "c.hex"
    path.write_text(content)
    with pytest.raises(BinbertError, match=match):
        read_memfile(path, 8, 2)


@pytest.mark.parametrize("content,match", [
    ("0f\n10\n", r"c.mem:1: expected the header"),
    ("// width=9 depth=2\n0f\n10\n", r"c.mem:1: header says width=9 depth=2"),
    ("// width=8 depth=3\n0f\n10\n", r"header says width=8 depth=3"),
    ("", r"c.mem: missing the header"),
])
def test_mem_errors(tmp_path, content, match):
    path = tmp_path / "c.mem"
    path.write_text(content)
    with pytest.raises(BinbertError, match=match):
        read_memfile(path, 8, 2)


def test_bin_errors(tmp_path):
    path = tmp_path / "c.bin"
    path.write_bytes(bytes(5))
    with pytest.raises(BinbertError, match=r"c.bin: 5 bytes, expected depth\*bytes_per_word = 2\*2 = 4"):
        read_memfile(path, 10, 2)
    path.write_bytes(bytes([0xFF, 0xFF, 0, 0]))
    with pytest.raises(BinbertError, match=r"c.bin: word 0 = 0xffff is wider than width=10"):
        read_memfile(path, 10, 2)


def test_misc_errors(tmp_path):
    with pytest.raises(BinbertError, match="unknown memory-file format 'txt'"):
        write_memfile(tmp_path / "a.txt", [1], 4)
    with pytest.raises(BinbertError, match="does not fit width=4"):
        write_memfile(tmp_path / "a.hex", [16], 4)
    with pytest.raises(BinbertError, match="does not fit width=4"):
        write_memfile(tmp_path / "a.hex", [-1], 4)
    with pytest.raises(BinbertError, match="no words"):
        write_memfile(tmp_path / "a.hex", [], 4)
    with pytest.raises(BinbertError, match="width=0"):
        write_memfile(tmp_path / "a.hex", [1], 0)
    with pytest.raises(BinbertError, match="memory file not found"):
        read_memfile(tmp_path / "missing.hex", 4, 1)
    with pytest.raises(BinbertError, match="depth=0"):
        read_memfile(tmp_path / "missing.hex", 4, 0)
    bad = tmp_path / "u.hex"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BinbertError, match="u.hex: not a text memory file"):
        read_memfile(bad, 4, 1)
