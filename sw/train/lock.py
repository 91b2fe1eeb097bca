"""The run lock of an output directory: one ``binbert train`` at a time writes into it.

``OUT/train.lock`` is held with ``fcntl.flock`` for the whole run and holds a JSON record of
its holder (pid, host, since when, the process's start time). The kernel drops a flock when
its process dies, so a free flock with a record left behind is a run that crashed: the record
names a process of this host that is no longer running (or whose pid now belongs to another
process), and the lock is taken over with a one-line note. A record from another host cannot
be checked from here (flock does not reach across every network file system): it is reported,
and the user removes the file once that run is gone. Released (the file removed) on exit,
error or interrupt.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from hw.errors import BinbertError
from hw.files import cannot_write, make_dir, writing

LOCK = "train.lock"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ')' may hold spaces


def _alive(pid: int, started: str | None) -> bool:
    """Does ``pid`` still run the process that wrote the record (same start time)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    now = _start_time(pid)
    return started is None or now is None or now == started


def _note(msg: str) -> None:
    print(f"binbert: note: {msg}", file=sys.stderr)


def _describe(rec: dict | None) -> str:
    if rec is None:
        return "holder not recorded yet"
    return f"pid {rec.get('pid')} on {rec.get('host')} since {rec.get('since')}"


class RunLock:
    """The exclusive lock of ``out`` (a context manager; :meth:`acquire` / :meth:`release`)."""

    def __init__(self, out, note: Callable[[str], None] = _note):
        self.out = Path(out)
        self.path = self.out / LOCK
        self.note = note
        self._fd: int | None = None
        self._made_out = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            rec = json.loads(os.pread(fd, 1 << 16, 0) or b"null")
        except (OSError, ValueError):
            return None  # empty, or caught between truncate and write
        return rec if isinstance(rec, dict) else None

    def _open_locked(self) -> int:
        """An fd of the lock file with the flock held (the file on disk, not one its holder
        removed between our open and our flock)."""
        while True:
            with writing(self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                rec = self._read(fd)
                os.close(fd)
                raise BinbertError(f"{self.out}: another binbert train is writing into it "
                                   f"({_describe(rec)}; lock {self.path})") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            raise BinbertError(f"{self.path}: already held by this process")
        self._made_out = not self.out.exists()
        make_dir(self.out)
        try:
            fd = self._open_locked()
        except BaseException:
            self._rmdir_made()
            raise
        try:
            host = socket.gethostname()
            rec = self._read(fd)
            if rec is not None:
                if rec.get("host") != host:
                    raise BinbertError(
                        f"{self.out}: locked by a binbert train on another host "
                        f"({_describe(rec)}; lock {self.path}): if that run has ended, delete "
                        f"the lock file")
                pid = rec.get("pid")
                if isinstance(pid, int) and pid != os.getpid() and _alive(pid, rec.get("started")):
                    raise BinbertError(f"{self.out}: another binbert train is writing into it "
                                       f"({_describe(rec)}; lock {self.path})")
                self.note(f"taking over the stale lock {self.path} ({_describe(rec)}, no "
                          f"longer running)")
            me = {"pid": os.getpid(), "host": host,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                  "started": _start_time(os.getpid()), "argv": sys.argv}
            data = (json.dumps(me) + "\n").encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except OSError as exc:
                raise cannot_write(self.path, exc) from exc
        except BaseException:
            os.close(fd)
            self._rmdir_made()
            raise
        self._fd = fd
        return self

    def _rmdir_made(self) -> None:
        if self._made_out:  # a run that wrote nothing leaves no empty directory behind
            with contextlib.suppress(OSError):
                self.out.rmdir()

    def release(self) -> None:
        """Remove the lock file, then drop the flock (a process that opened the file before
        the removal sees another inode on disk and opens again)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        self._rmdir_made()
