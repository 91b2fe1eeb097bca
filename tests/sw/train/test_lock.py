"""sw.train.lock: one training per output directory; a crashed holder's lock is taken over, a
lock of another host is reported, the lock goes with the run (error or not)."""
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from hw.errors import BinbertError
from sw.train.lock import LOCK, RunLock, _start_time
from sw.train.trainer import Trainer
from tests.sw.train.common import _cfg, lock_held_elsewhere


def _held_by(out, pid) -> str:
    host = re.escape(socket.gethostname())
    return (rf"^{re.escape(str(out))}: another binbert train is writing into it \(pid {pid} on "
            rf"{host} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{{4}}; lock "
            rf"{re.escape(str(out / LOCK))}\)$")


def _record(out, **rec):
    out.mkdir(parents=True, exist_ok=True)
    rec = {"pid": 1, "host": socket.gethostname(), "since": "2020-01-01 00:00:00 +0000", **rec}
    (out / LOCK).write_text(json.dumps(rec))


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "o"
    tr = Trainer(_cfg(), out, progress=False)
    with lock_held_elsewhere(out) as holder:
        with pytest.raises(BinbertError, match=_held_by(out, holder.pid)):
            RunLock(out).acquire()
        with pytest.raises(BinbertError, match=_held_by(out, holder.pid)):
            tr.run()
        assert [p.name for p in out.iterdir()] == [LOCK]  # nothing trained, nothing written
    with RunLock(out) as lock:  # released by its holder
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not out.exists()  # the lock created the directory and leaves no empty one


def test_a_crashed_holders_lock_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path / "o"
    with lock_held_elsewhere(out) as holder:
        holder.kill()  # its flock goes with it, its record stays
        holder.wait()
    left = json.loads((out / LOCK).read_text())
    assert left["pid"] == holder.pid
    with RunLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err.strip()
    assert err == (f"binbert: note: taking over the stale lock {out / LOCK} (pid {holder.pid} "
                   f"on {left['host']} since {left['since']}, no longer running)")
    assert not (out / LOCK).exists()


def test_a_dead_or_reused_pid_is_stale_a_live_one_is_not(tmp_path, capsys):
    out = tmp_path / "o"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _record(out, pid=gone.pid)
    with RunLock(out):
        pass
    assert f"(pid {gone.pid} on " in capsys.readouterr().err
    # the parent runs, but it is not the process that wrote the record (other start time)
    _record(out, pid=os.getppid(), started="0")
    with RunLock(out):
        pass
    assert "no longer running" in capsys.readouterr().err
    # the recorded process itself still runs: refused even if flock did not stop us (file
    # systems where it is a no-op)
    _record(out, pid=os.getppid(), started=_start_time(os.getppid()))
    with pytest.raises(BinbertError, match=f"pid {os.getppid()} on "):
        RunLock(out).acquire()


def test_a_lock_of_another_host_is_reported(tmp_path):
    out = tmp_path / "o"
    _record(out, pid=4242, host="elsewhere")
    with pytest.raises(BinbertError) as err:
        RunLock(out).acquire()
    assert str(err.value) == (f"{out}: locked by a binbert train on another host (pid 4242 on "
                              f"elsewhere since 2020-01-01 00:00:00 +0000; lock {out / LOCK}): "
                              f"if that run has ended, delete the lock file")
    assert json.loads((out / LOCK).read_text())["host"] == "elsewhere"  # left to its owner


def test_the_lock_goes_with_a_run_that_fails(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(BinbertError, match="has no checkpoint"):
        Trainer(_cfg(), out, stages=["binary"], progress=False).run()
    assert not out.exists()
    out.mkdir()
    with pytest.raises(BinbertError, match="has no checkpoint"):
        Trainer(_cfg(), out, stages=["binary"], progress=False).run()
    assert list(out.iterdir()) == []
    # no flock left either: another process takes the lock at once
    with lock_held_elsewhere(out):
        pass
