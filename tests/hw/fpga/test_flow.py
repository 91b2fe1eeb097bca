"""hw/fpga/flow.py + `binbert bitstream`: real Yosys/nextpnr/pack runs on a small PE (the
report's figures are the tools' own), layer specs from the CLI's knobs, and every bad-input path
(unknown layer/target, bad knobs, design too big).

The real runs use the YoWASP tools; their first call JIT-compiles (~25 s per tool, cached in
~/.cache/YoWASP), later ones take a few seconds for these designs.
"""
import dataclasses
import json

import pytest

from hw.fpga import flow, pnr, report, synthesis, targets
from hw.errors import BinbertError
from binbert.cli import main
from tests.hw.fpga.builds import pins


def test_cli_ice40_bitstream_and_report(ice40_build):
    rc, out = ice40_build
    assert rc == 0
    bit = out / "top.bin"
    assert bit.stat().st_size > 1000
    r = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# pe on ice40-up5k")
    nextpnr = json.loads((out / "nextpnr_report.json").read_text())
    parsed = pnr.parse_nextpnr_report(nextpnr, targets.TARGETS["ice40-up5k"])
    assert r["fmax_mhz"] == parsed["fmax_mhz"] > 0
    assert r["fmax_mhz"] == pytest.approx(max(r["seeds"].values()), abs=0.01)
    assert set(r["seeds"]) == {"1", "2"}
    assert r["timing_met"] == (r["fmax_mhz"] >= r["requested_mhz"])
    assert r["requested_mhz"] == targets.TARGETS["ice40-up5k"].freq_mhz
    assert parsed["constraint_mhz"] == pytest.approx(r["requested_mhz"], rel=1e-3)
    # block figures come from yosys' per-module stat of the block's own module
    stat = json.loads((out / "stat.json").read_text())
    core_cells = stat["modules"]["\\" + synthesis.CORE_MODULE]["num_cells_by_type"]
    assert r["core"]["lut4"] == core_cells["SB_LUT4"]
    assert 0 < r["core"]["lut4"] < r["total"]["lut4"]
    assert r["lut4_per_mac"] == r["core"]["lut4"] / 16
    assert r["mac_per_s"] == pytest.approx(16 * r["fmax_mhz"] * 1e6)
    assert r["pnr"]["pnr_io"] == pins("ice40") + 1  # byte streams + clock
    # the summarized critical path is the one that sets Fmax, its parts add up
    c = r["critical_path"]
    assert 1000 / c["ns"] == pytest.approx(r["fmax_mhz"], rel=0.02)
    parts = sum(v for k, v in c.items() if k.endswith("_ns") and k != "ns")
    assert parts == pytest.approx(c["ns"], abs=0.05)
    assert c["logic_levels"] >= 1 and c["from"] and c["to"]
    assert report.describe_path(c).startswith(f"{c['from']} → {c['to']}: {c['ns']:.2f} ns")
    assert f"| critical path | {report.describe_path(c)} |" in (out / "report.md").read_text()


def test_ecp5_flow(tmp_path):
    """A PE given per-sequence figures (as an encoder layer's spec carries them): the report
    scales them by Fmax; --synth-opts flags reach yosys."""
    spec = dataclasses.replace(flow.make_layer("pe", simd=16), seq_len=4, cycles_per_sequence=10)
    r = flow.build(spec, targets.TARGETS["ecp5-85k"], tmp_path, synth_opts=("-nowidelut",))
    assert (tmp_path / "top.bit").stat().st_size > 1000
    stat = json.loads((tmp_path / "stat.json").read_text())
    cells = stat["modules"]["\\" + synthesis.CORE_MODULE]["num_cells_by_type"]
    assert r["core"]["lut4"] == cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
    assert r["fmax_mhz"] > 0 and r["pnr"]["pnr_io"] == pins("ecp5") + 1
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
    tiny = dataclasses.replace(targets.TARGETS["ice40-up5k"], luts_available=10, dsps_available=0)
    with pytest.raises(targets.DoesNotFit, match="does not fit ice40-up5k: .* LUT4 .* > 10") as exc:
        flow.build(flow.make_layer("pe", simd=16), tiny, tmp_path, bitstream=False)
    r = json.loads((tmp_path / "report.json").read_text())
    used = r["utilisation"]["lut4"][0]
    assert str(exc.value) == (f"design does not fit ice40-up5k: {used} LUT4 after synthesis "
                              f"> 10 available")  # 0 DSP used: not over
    assert r["fits"] is False and r["error"] == str(exc.value) and used == r["total"]["lut4"]
    assert (tmp_path / "report.md").read_text().count("**over**") == 1
    assert not (tmp_path / "nextpnr_seed1.log").exists()


def test_encoder_spec():
    """--layer encoder: the preset's spec (hw/fpga/presets.py) with its cycle model, ROMs in block
    RAM; MVU/PE knobs and encoder options do not mix."""
    from hw.fpga.presets import bitstream_spec

    ecp = targets.TARGETS["ecp5-85k"]
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
    target = targets.TARGETS["ecp5-85k"]
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


def test_rom_placement_choice():
    """Block RAM unless the ROM is wider than the device's block RAMs can read per cycle."""
    ice, ecp = targets.TARGETS["ice40-up5k"], targets.TARGETS["ecp5-85k"]
    wide = flow.make_layer("mvu", pe=16, simd=64)  # 1024-bit ROM word
    narrow = flow.make_layer("mvu", pe=4, simd=32)  # 128-bit ROM word
    assert flow.choose_rom(wide, ecp)[0] == "bram"
    kind, why = flow.choose_rom(wide, ice)
    assert kind == "logic" and f"{ice.brams_available} x {ice.bram_width}-bit" in why
    assert flow.choose_rom(narrow, ice)[0] == "bram"
    assert flow.choose_rom(wide, ice, "bram")[0] == "bram"
    assert flow.choose_rom(narrow, ecp, "logic")[0] == "logic"


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_layer_defaults(name):
    """K = 4·SIMD, N = 4·PE (16-word ROM); pipeline from the target, capped at the tree depth."""
    from hw.rtl.pe import PEParams
    t = targets.TARGETS[name]
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
