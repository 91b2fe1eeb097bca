"""hw/fpga/pack.py: the bitstream appears whole or not at all (a stand-in for icepack)."""
import pytest

from hw.errors import BinbertError
from hw.fpga.pack import pack
from hw.fpga.targets import TARGETS


def _tool(tmp_path, rc: int):
    """An 'icepack' that writes its output (partly, when it fails) and exits with ``rc``."""
    tool = tmp_path / "icepack"
    tool.write_text(f'#!/bin/sh\nprintf new > "$2"\nexit {rc}\n')
    tool.chmod(0o755)
    return str(tool)


def test_a_failed_pack_keeps_the_previous_bitstream(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "top.bin").write_text("old")
    log = out / "flow.log"
    with pytest.raises(BinbertError, match="icepack failed"):
        pack(_tool(tmp_path, 1), TARGETS["ice40-up5k"], out, log, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["flow.log", "top.bin"]
    assert (out / "top.bin").read_text() == "old"
    path, _ = pack(_tool(tmp_path, 0), TARGETS["ice40-up5k"], out, log, seed=1)
    assert path == out / "top.bin" and path.read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["flow.log", "top.bin"]
