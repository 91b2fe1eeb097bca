"""benchmarks/sim.py: the report (ratios, per-layer sums, cycles per wall second) from synthetic
measurements, and its argument checks. The measurement itself is `make sim`'s runner, covered by
tests/sim/; timings are never asserted."""
import pytest

from benchmarks import sim as bench
from hw.errors import BinbertError


def _row(layer, config, sim, build_s, sim_s, cycles, measured=100.0, model=100):
    return {"layer": layer, "config": config, "sim": sim, "seed": 1, "vectors": 4, "build_s": build_s,
            "sim_s": sim_s, "cold_sim_s": sim_s, "warm_build_s": 0.1, "cycles": cycles,
            "measured": measured, "model": model}


ROWS = [_row("attn", "attn a", "verilator", 60.0, 5.0, 1000, measured=101.0),
        _row("attn", "attn a", "icarus", 4.0, 20.0, 1000, measured=101.0),
        _row("attn", "attn b", "verilator", 40.0, 3.0, 3000),
        _row("attn", "attn b", "icarus", 6.0, 10.0, 3000),
        _row("ln", "ln n=8", "icarus", 1.0, 2.0, 500, measured=23.0, model=23)]


def test_summarize_sums_each_simulator_and_divides_verilator_by_icarus():
    got = {item["layer"]: item for item in bench.summarize(ROWS)}
    v, i = got["attn"]["per_sim"]["verilator"], got["attn"]["per_sim"]["icarus"]
    assert (v["build_s"], v["sim_s"], v["total_s"], v["cycles"]) == (100.0, 8.0, 108.0, 4000)
    assert (i["build_s"], i["sim_s"], i["total_s"], i["cycles"]) == (10.0, 30.0, 40.0, 4000)
    assert got["attn"]["ratio"] == pytest.approx({"build_s": 100 / 10, "sim_s": 8 / 30, "total_s": 108 / 40})
    assert got["attn"]["payback_runs"] == pytest.approx((100 - 10) / (30 - 8))
    assert "ratio" not in got["ln"]          # one simulator only: nothing to compare


def test_payback_is_none_when_icarus_simulates_faster():
    rows = [_row("ln", "ln a", "verilator", 40.0, 9.0, 100), _row("ln", "ln a", "icarus", 2.0, 8.0, 100)]
    assert bench.summarize(rows)[0]["payback_runs"] is None
    assert "never pays back" in bench.render(rows, cmd="c", device="d", commit="x", date="d", wall_s=1)


def test_render_has_every_row_and_the_derived_numbers():
    text = bench.render(ROWS, cmd="python benchmarks/sim.py --layers attn,ln", device="test cpu, 2 cores",
                        commit="abc1234", date="2026-01-01", wall_s=600)
    assert "`python benchmarks/sim.py --layers attn,ln`" in text and "test cpu, 2 cores" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| attn | attn a | verilator |")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    # build, sim, total, cycles, cycles per wall second, measured, model, measured / model
    assert cells[4:] == ["60.0", "5.0", "65.0", "1000", f"{1000 / 5.0:,.0f}", "101.00", "100", "1.010"]
    ratio = [ln for ln in text.splitlines() if ln.startswith("| attn | **Verilator / Icarus** |")]
    assert ratio and f"**{100 / 10:.2f}**" in ratio[0] and f"**{8 / 30:.2f}**" in ratio[0]
    assert not any(ln.startswith("| ln | **Verilator / Icarus**") for ln in text.splitlines())
    assert "agree between the simulators for every configuration" in text


def test_render_names_a_configuration_whose_cycles_differ():
    rows = ROWS[:1] + [_row("attn", "attn a", "icarus", 4.0, 20.0, 1001, measured=101.0)]
    text = bench.render(rows, cmd="c", device="d", commit="x", date="d", wall_s=1)
    assert "Cycle counts differ between the simulators for: attn a." in text


@pytest.mark.parametrize("argv,culprit", [(["--layers", "attn,pe"], "--layers"), (["--sims", "xsim"], "--sims"),
                                          (["--layers", ","], "--layers")])
def test_bad_layer_or_simulator_names_the_option(argv, culprit, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert culprit in err and "choose from" in err


def test_names_accepts_a_subset_in_order():
    assert bench._names("ln, encoder", bench.LAYERS, "layers") == ["ln", "encoder"]
    with pytest.raises(BinbertError, match="--sims 'modelsim'"):
        bench._names("modelsim", bench.SIMS, "sims")
