"""Memory-init files for ROM images (docs/arithmetic.md §2).

Formats (``fmt``):
  * ``hex`` — one word per line, hexadecimal, most significant digit first, zero-padded to
    ``ceil(width/4)`` digits (Verilog ``$readmemh``);
  * ``mem`` — the same preceded by one header line ``// width=W depth=D``;
  * ``bin`` — raw little-endian bytes, each word padded to ``ceil(width/8)`` bytes.

:func:`read_memfile` validates everything and raises :class:`hw.errors.BinbertError` naming the
file (and line) for a wrong word count, non-hex text, a value wider than ``width``, a header that
disagrees, or a ``.bin`` whose size is not ``depth * bytes_per_word``.
"""
from __future__ import annotations

import re
from pathlib import Path

from hw.errors import BinbertError

FORMATS = ("hex", "mem", "bin")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_HEADER = re.compile(r"^//\s*width=(\d+)\s+depth=(\d+)\s*$")


def _check_shape(width, depth=None):
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise BinbertError(f"memfile: width={width!r} must be an integer >= 1")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise BinbertError(f"memfile: depth={depth!r} must be an integer >= 1")


def fmt_from_path(path, fmt: str | None = None) -> str:
    """The format named by ``fmt`` or by the file suffix (.hex/.mem/.bin)."""
    fmt = fmt or Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise BinbertError(f"{path}: unknown memory-file format {fmt!r} (use one of {', '.join(FORMATS)})")
    return fmt


def bytes_per_word(width: int) -> int:
    return -(-width // 8)


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
    if fmt == "bin":
        nb = bytes_per_word(width)
        path.write_bytes(b"".join(w.to_bytes(nb, "little") for w in words))
        return path
    digits = -(-width // 4)
    lines = [f"{w:0{digits}x}" for w in words]
    if fmt == "mem":
        lines.insert(0, f"// width={width} depth={len(words)}")
    path.write_text("\n".join(lines) + "\n")
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
