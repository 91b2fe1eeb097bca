"""`binbert bitstream` (hw/commands.py): the encoder's preset and export options, the default
target taken from the preset, and a design too big for its device as a clean report + one-line
error (fast: a PE on a shrunken iCE40; slow: the real micro-bi preset on the iCE40 UP5K, whose
Yosys synthesis alone takes 1.5-6 min on the shared 2-core machine).

The full place and route of an encoder layer is tests/hw/test_flow.py's slow test.
"""
import json
import re
from pathlib import Path

import pytest

from hw import flow, presets
from sw.cli import main

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo.yaml"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("binbert: error: ") and len(err.splitlines()) == 1
    return err


@pytest.mark.parametrize("argv,match", [
    (["--layer", "encoder", "--config", str(DEMO)],
     "demo.yaml: this is a training config (keys model, data, train, distill, stages), not a "
     "hardware preset"),
    (["--layer", "encoder", "--config", "huge"], "unknown encoder config 'huge'"),
    (["--layer", "encoder", "--config", "models/hw/none.yaml"],
     "models/hw/none.yaml: hardware preset not found"),
    (["--layer", "mvu", "--config", "tiny"], "--config applies to --layer encoder only"),
    (["--layer", "pe", "--export", "out/x"], "--export applies to --layer encoder only"),
    (["--layer", "encoder", "--export", "no/such/export"],
     "no/such/export: no such checkpoint or export directory"),
])
def test_encoder_bad_input(argv, match, tmp_path, capsys):
    """Nothing is synthesised: every error is found before the tools run."""
    out = tmp_path / "out"
    assert main(["bitstream", *argv, "--out", str(out)]) == 2
    assert match in _one_line_error(capsys)
    assert not (out / "top.il").exists()


@pytest.fixture(scope="module")
def micro_ice40(tmp_path_factory):
    """The micro-bi preset with no --target: its own (the iCE40 UP5K), where it does not fit."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("micro")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["bitstream", "--layer", "encoder", "--config", "micro-bi", "--out", str(out)])
    return rc, out, err.getvalue().strip()


def test_cli_no_fit_exits_2_after_writing_the_report(tmp_path, monkeypatch, capsys):
    """A design over capacity: status 2, the one-line error, the report of what was measured."""
    import dataclasses

    small = dataclasses.replace(flow.TARGETS["ice40-up5k"], luts_available=10)
    monkeypatch.setitem(flow.TARGETS, "ice40-up5k", small)
    rc = main(["bitstream", "--layer", "pe", "--simd", "16", "--target", "ice40-up5k",
               "--out", str(tmp_path)])
    r = json.loads((tmp_path / "report.json").read_text())
    assert rc == 2 and r["fits"] is False
    assert _one_line_error(capsys) == f"binbert: error: {r['error']}"
    assert r["error"].startswith("design does not fit ice40-up5k: ")


@pytest.mark.slow  # Yosys on the whole layer: 1.5-6 min; the PE test above covers the no-fit path
def test_no_fit_is_a_report_and_one_line_error(micro_ice40):
    rc, out, err = micro_ice40
    target = flow.TARGETS["ice40-up5k"]
    assert presets.load_preset("micro-bi").target == target.name
    assert rc == 2 and len(err.splitlines()) == 1
    r = json.loads((out / "report.json").read_text())
    used, avail = r["utilisation"]["lut4"]
    assert (r["target"], r["fits"], avail) == (target.name, False, target.luts_available)
    # its shared-multiplier LayerNorms bring synthesis under the LUT4 count: what does not fit
    # is nextpnr's packing of those LUTs, the flip-flops and the carries into logic cells, or
    # (threshold requantizers) the placement of the packed cells
    m = re.fullmatch(rf"design does not fit {target.name}: (?:(\d+) ICESTORM_LC > {avail}|no "
                     rf"legal placement at (\d+) / {avail} ICESTORM_LC \(\d+ %\)) \(nextpnr\)",
                     r["error"])
    assert m and err == f"binbert: error: {r['error']}"
    cells = int(m.group(1) or m.group(2))
    assert cells > avail if m.group(1) else cells <= avail
    # the figures are yosys' own statistics of the whole design
    stat = json.loads((out / "stat.json").read_text())
    assert r["total"] == flow.summarize_cells(stat["design"]["num_cells_by_type"], target)
    assert used == r["total"]["lut4"] <= avail
    spec = flow.make_layer("encoder", config="micro-bi")
    assert r["cycles_per_sequence"] == spec.cycles_per_sequence
    assert r["params"] == json.loads(json.dumps(spec.describe))
    md = (out / "report.md").read_text()
    assert md.startswith("# encoder on ice40-up5k") and f"**Does not fit**: {r['error']}" in md
    assert f"| LUT4 after synthesis (used / available) | {used} / {avail} (" in md
    # the cell count is nextpnr's own (its utilisation table after packing), no bitstream
    log = (out / "nextpnr_seed1.log").read_text()
    assert f"ICESTORM_LC:    {cells}/" in log and not list(out.glob("*.bin"))
