"""Writing outputs whole or not at all, and a file-system fault as one line.

Every file binbert writes for a user is written under a temporary name beside its target and
renamed over it once complete (``os.replace``), so a failed or interrupted write never leaves
half a file where a reader would take it for a whole one; on failure the temporaries are
removed and the target keeps what it held. An ``OSError`` of a write (read-only file system,
full disk, no permission) becomes ``BinbertError("<path>: cannot write (<strerror>)")``.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Mapping

from hw.errors import BinbertError


class CannotWrite(BinbertError):
    """A write the file system refused: callers that rephrase a step's errors pass it on."""


def cannot_write(path, exc: OSError) -> CannotWrite:
    """The one-line error of a failed write to ``path``."""
    return CannotWrite(f"{path}: cannot write ({exc.strerror or exc})")


@contextlib.contextmanager
def writing(path) -> Iterator[None]:
    """Run a block that writes ``path``: an OSError in it becomes :func:`cannot_write`."""
    try:
        yield
    except OSError as exc:
        raise cannot_write(path, exc) from exc


def disk_full(path) -> bool:
    """Has the file system holding ``path`` (or its nearest existing parent) no room left?
    For writers that report a failed write without its errno (tools, torch.save)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return os.statvfs(p).f_bavail == 0
    except OSError:
        return False


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def temp_name(path, suffix: str = ".tmp") -> Path:
    """The temporary sibling ``path`` is written under (per process: two writers never share);
    ``suffix`` for writers that pick the format from the name (``.png``)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}{suffix}")


@contextlib.contextmanager
def staged(path, suffix: str = ".tmp") -> Iterator[Path]:
    """For a writer that takes a file name (a tool, ``savefig``): yield the temporary name to
    write, renamed over ``path`` when the block succeeds; the temporary never outlives it."""
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        with writing(path):
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def make_dir(path) -> Path:
    """``mkdir -p path``, a failure as :func:`cannot_write`."""
    with writing(path):
        Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def atomic_write_files(files: Mapping[object, bytes | str]) -> None:
    """Write each ``path: contents`` (str as UTF-8) under its temporary name, then rename them
    all over their targets: one failure removes every temporary and raises :func:`cannot_write`
    naming the target it was writing."""
    staged: list[tuple[Path, Path]] = []
    current = None
    try:
        for path, data in files.items():
            current = Path(path)
            tmp = temp_name(current)
            staged.append((tmp, current))
            with open(tmp, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in staged:
            current = path
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(exc, OSError):
            raise cannot_write(current, exc) from exc
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    atomic_write_files({path: data})
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    atomic_write_files({path: text})
    return Path(path)
