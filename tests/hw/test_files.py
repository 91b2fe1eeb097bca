"""hw/files.py: atomic writes (a failure leaves the target as it was and no temporary) and
file-system faults as one-line errors naming the path."""
import errno
import os
from types import SimpleNamespace

import pytest

from hw.errors import BinbertError
from hw.files import (CannotWrite, atomic_write_bytes, atomic_write_files, atomic_write_text,
                      disk_full, make_dir, staged, writing)


def _os_error(code):
    def fake(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fake


def test_atomic_write_replaces_the_target_whole(tmp_path):
    p = tmp_path / "a.json"
    assert atomic_write_text(p, "é\n") == p and p.read_bytes() == "é\n".encode()
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("where,code,why", [("replace", errno.EROFS, "Read-only file system"),
                                            ("fsync", errno.ENOSPC, "No space left on device")])
def test_a_failed_write_leaves_the_old_files_and_no_temporary(tmp_path, monkeypatch, where,
                                                              code, why):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old a")
    monkeypatch.setattr(os, where, _os_error(code))
    with pytest.raises(CannotWrite) as e:
        atomic_write_files({a: "new a", b: b"new b"})
    assert str(e.value) == f"{a}: cannot write ({why})"
    assert isinstance(e.value, BinbertError)
    assert [q.name for q in tmp_path.iterdir()] == ["a"] and a.read_text() == "old a"


def test_writing_and_make_dir_name_the_path(tmp_path, monkeypatch):
    with pytest.raises(CannotWrite, match=rf"^{tmp_path}/x: cannot write \(Permission denied\)$"):
        with writing(tmp_path / "x"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(os, "mkdir", _os_error(errno.EROFS))
    with pytest.raises(CannotWrite, match=r"/d/e: cannot write \(Read-only file system\)$"):
        make_dir(tmp_path / "d" / "e")


def test_disk_full_looks_at_the_nearest_existing_directory(tmp_path, monkeypatch):
    seen = []

    def statvfs(p):
        seen.append(p)
        return SimpleNamespace(f_bavail=0)

    assert not disk_full(tmp_path)
    monkeypatch.setattr(os, "statvfs", statvfs)
    assert disk_full(tmp_path / "not" / "yet")
    assert seen == [tmp_path]


def test_staged_renames_on_success_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "top.bit"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with staged(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the tool failed")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with staged(target, suffix=".tmp.png") as tmp:
        assert tmp.name.endswith(".tmp.png") and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]
