"""Memory-init files for ROM images (docs/arithmetic.md §2): the one writer and reader.

Formats (``fmt``):
  * ``hex`` — one word per line, hexadecimal, most significant digit first, zero-padded to
    ``ceil(width/4)`` digits (Verilog ``$readmemh``);
  * ``mem`` — the same preceded by one header line ``// width=W depth=D``;
  * ``bin`` — raw little-endian bytes, each word padded to ``ceil(width/8)`` bytes.

Every file's bytes come from :func:`memfile_bytes`, which encodes a ROM given as rows of
little-endian bytes: :func:`write_memfile` (a list of ints, e.g. the MVU's weight ROM) and the
export's ROMs (:mod:`hw.golden.export_format`, (depth, W) uint64 arrays via
:func:`words_to_bytes`) both go through it.

:func:`read_memfile` validates everything and raises :class:`hw.errors.BinbertError` naming the
file (and line) for a wrong word count, non-hex text, a value wider than ``width``, a header that
disagrees, or a ``.bin`` whose size is not ``depth * bytes_per_word``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hw.errors import BinbertError
from hw.validate import positive_int

FORMATS = ("hex", "mem", "bin")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_HEADER = re.compile(r"^//\s*width=(\d+)\s+depth=(\d+)\s*$")


def _check_shape(width, depth=None):
    positive_int("memfile", "width", width)
    if depth is not None:
        positive_int("memfile", "depth", depth)


def fmt_from_path(path, fmt: str | None = None) -> str:
    """The format named by ``fmt`` or by the file suffix (.hex/.mem/.bin)."""
    fmt = fmt or Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise BinbertError(f"{path}: unknown memory-file format {fmt!r} (use one of {', '.join(FORMATS)})")
    return fmt


def bytes_per_word(width: int) -> int:
    return -(-width // 8)


def hex_digits(width: int) -> int:
    return -(-width // 4)


def mem_header(width: int, depth: int) -> str:
    """The first line of a ``.mem`` file (what :func:`read_memfile` checks)."""
    return f"// width={width} depth={depth}"


def words_to_bytes(words: np.ndarray, width: int) -> np.ndarray:
    """(depth, W) uint64 little-endian words of ``width`` bits -> (depth, ceil(width/8)) bytes."""
    words = np.ascontiguousarray(words, dtype="<u8")
    raw = words.view(np.uint8).reshape(words.shape[0], -1)
    return np.ascontiguousarray(raw[:, : bytes_per_word(width)])


def bytes_to_words(raw: np.ndarray, n_words: int) -> np.ndarray:
    """Inverse of :func:`words_to_bytes`: (depth, nb) bytes -> (depth, n_words) uint64."""
    depth, nb = raw.shape
    padded = np.zeros((depth, n_words * 8), dtype=np.uint8)
    padded[:, :nb] = raw
    return padded.view("<u8").astype(np.uint64)


def memfile_bytes(rows: np.ndarray, width: int, fmt: str) -> bytes:
    """The contents of a ``fmt`` file holding ``rows``: (depth, ceil(width/8)) uint8, each row
    one word's little-endian bytes (no bits set beyond ``width``). ``depth`` may be 0."""
    if fmt == "bin":
        return rows.tobytes()
    depth = rows.shape[0]
    digits = hex_digits(width)
    text = rows[:, ::-1].tobytes().hex()  # most significant byte first
    per = 2 * rows.shape[1]
    lines = [text[i * per + per - digits: (i + 1) * per] for i in range(depth)]
    body = "\n".join(lines) + ("\n" if lines else "")
    if fmt == "mem":
        body = f"{mem_header(width, depth)}\n{body}"
    return body.encode()


def memfile_size(width: int, depth: int, fmt: str) -> int:
    """The size in bytes of the ``fmt`` file of ``depth`` words of ``width`` bits."""
    if fmt == "bin":
        return depth * bytes_per_word(width)
    line = hex_digits(width) + 1
    head = len(mem_header(width, depth)) + 1 if fmt == "mem" else 0
    return head + depth * line


def write_memfile(path, words, width: int, fmt: str | None = None) -> Path:
    """Write ``words`` (non-negative ints < 2**width) as a memory-init file; returns the path."""
    _check_shape(width)
    path = Path(path)
    fmt = fmt_from_path(path, fmt)
    words = [int(w) for w in words]
    if not words:
        raise BinbertError(f"{path}: no words to write")
    for i, w in enumerate(words):
        if w < 0 or w >> width:
            raise BinbertError(f"{path}: word {i} = {w:#x} does not fit width={width}")
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = bytes_per_word(width)
    rows = np.frombuffer(b"".join(w.to_bytes(nb, "little") for w in words),
                         dtype=np.uint8).reshape(len(words), nb)
    path.write_bytes(memfile_bytes(rows, width, fmt))
    return path


def read_memfile(path, width: int, depth: int, fmt: str | None = None) -> list[int]:
    """Read and validate a memory-init file of exactly ``depth`` words of ``width`` bits."""
    _check_shape(width, depth)
    path = Path(path)
    fmt = fmt_from_path(path, fmt)
    if not path.is_file():
        raise BinbertError(f"{path}: memory file not found")
    if fmt == "bin":
        raw = path.read_bytes()
        nb = bytes_per_word(width)
        if len(raw) != depth * nb:
            raise BinbertError(f"{path}: {len(raw)} bytes, expected depth*bytes_per_word = "
                               f"{depth}*{nb} = {depth * nb}")
        words = [int.from_bytes(raw[i * nb:(i + 1) * nb], "little") for i in range(depth)]
        for i, w in enumerate(words):
            if w >> width:
                raise BinbertError(f"{path}: word {i} = {w:#x} is wider than width={width}")
        return words
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise BinbertError(f"{path}: not a text memory file") from None
    lines = text.splitlines()
    words = []
    header_seen = False
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("//"):
            hdr = _HEADER.match(s)
            if fmt == "mem" and not header_seen and not words and hdr:
                header_seen = True
                hw_, hd = int(hdr.group(1)), int(hdr.group(2))
                if hw_ != width or hd != depth:
                    raise BinbertError(f"{path}:{lineno}: header says width={hw_} depth={hd}, "
                                       f"expected width={width} depth={depth}")
                continue
            if fmt == "mem" and not header_seen and not words:
                raise BinbertError(f"{path}:{lineno}: expected the header '// width=W depth=D'")
            continue  # other comments are allowed ($readmemh accepts them)
        if fmt == "mem" and not header_seen:
            raise BinbertError(f"{path}:{lineno}: expected the header '// width=W depth=D'")
        if not _HEX.match(s):
            raise BinbertError(f"{path}:{lineno}: {s[:20]!r} is not a hexadecimal word")
        w = int(s, 16)
        if w >> width:
            raise BinbertError(f"{path}:{lineno}: value {s} is wider than width={width}")
        words.append(w)
        if len(words) > depth:
            raise BinbertError(f"{path}:{lineno}: more than depth={depth} words (file too long)")
    if fmt == "mem" and not header_seen:
        raise BinbertError(f"{path}: missing the header '// width=W depth=D'")
    if len(words) != depth:
        raise BinbertError(f"{path}: {len(words)} words, expected depth={depth} (file truncated)")
    return words
