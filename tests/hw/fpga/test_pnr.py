"""hw/fpga/pnr.py: the clock constraint, nextpnr's report, and a design nextpnr cannot fit
read from its log (that of a real iCE40 build, see conftest.py)."""
import pytest

from hw.fpga import pnr, targets
from hw.errors import BinbertError
from hw.fpga.top import board_resources


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_clock_constraint_rewritten(name):
    """The board oscillator's constraint becomes the requested frequency, exactly once."""
    t = targets.TARGETS[name]
    platform = t.platform()
    platform.add_resources(board_resources(t.family))
    from hw.fpga.top import BoardTop
    from hw.rtl.pe import PEParams
    plan = platform.prepare(BoardTop(lambda: PEParams(simd=4, pipeline=1).create()), name="top")
    text = plan.files["top.pcf" if t.family == "ice40" else "top.lpf"]
    new = pnr.set_clock_constraint(text, t.family, 123.5)
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 1
    assert ("123.5" if t.family == "ice40" else "123500000.0 HZ") in changed[0][1]
    with pytest.raises(BinbertError, match="expected one clock constraint, found 0"):
        pnr.set_clock_constraint("# nothing\n", t.family, 100)


def test_nextpnr_report_without_clock():
    with pytest.raises(BinbertError, match="no Fmax for clock 'cd_sync.clk' .clocks: other"):
        pnr.parse_nextpnr_report({"fmax": {"other": {"achieved": 1, "constraint": 1}}},
                                  targets.TARGETS["ecp5-85k"])


def test_overuse_read_from_nextpnr_log(ice40_build):
    """The utilisation table of a real nextpnr log: nothing over 100 % here; a row pushed past
    its capacity is reported as 'used NAME > available'."""
    import re
    _, out = ice40_build
    log = (out / "nextpnr_seed1.log").read_text()
    assert pnr.overused(log) == ""
    row = re.search(r"Info:\s+ICESTORM_LC:\s+(\d+)/\s*(\d+)", log)
    used, avail = int(row.group(1)), int(row.group(2))
    bigger = log.replace(row.group(0), row.group(0).replace(f"{used}/", f"{avail + 7}/", 1))
    assert pnr.overused(bigger) == f"{avail + 7} ICESTORM_LC > {avail}"
    # the placer giving up below 100 % is a no-fit too, named with nextpnr's own cell count
    ice = targets.TARGETS["ice40-up5k"]
    assert pnr.placement_failure(log, ice) == ""
    failed = log + "\nERROR: Unable to find legal placement for all cells, design is probably " \
                   "at utilisation limit.\n"
    pct = re.search(r"Info:\s+ICESTORM_LC:\s+\d+/\s*\d+\s+(\d+)%", log).group(1)
    assert pnr.placement_failure(failed, ice) == \
        f"no legal placement at {used} / {avail} ICESTORM_LC ({pct} %)"
