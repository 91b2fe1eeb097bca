"""`binbert sim`: argument errors are one-line BinbertErrors, and a run reports pass/fail."""
from __future__ import annotations

import pytest

from binbert.cli import main


@pytest.mark.parametrize("argv,message", [
    (["--layer", "decoder"], "unknown layer 'decoder': supported layers are pe, mvu, lsq, ln, ffn, attn, encoder"),
    (["--layer", "pe", "--sim", "xsim"], "unknown simulator 'xsim'"),
    (["--layer", "lsq", "--ckpt", "x"], "--ckpt applies to --layer mvu only"),
    (["--layer", "mvu", "--ckpt", "/nonexistent/ckpt"], "--ckpt /nonexistent/ckpt: no such checkpoint"),
    (["--layer", "pe", "--sim", "icarus", "--vectors", "-5"], "--vectors -5: must be >= 0"),
])
def test_cli_errors(argv, message, capsys):
    assert main(["sim", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("binbert: error: ") and message in err
    assert len(err.splitlines()) == 1


def test_cli_runs_pe_on_icarus(capsys):
    assert main(["sim", "--layer", "pe", "--sim", "icarus", "--vectors", "200", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out and "pass" in out and "pe simd=32" in out


def test_cli_failure_exits_1(monkeypatch, capsys):
    import sim.runner

    def broken(params, **kw):
        raise sim.runner.SimulationError("pe on icarus failed 1 of 1 tests (seed 5): o beat 3: lane 0")

    monkeypatch.setattr(sim.runner, "run_block", broken)
    assert main(["sim", "--layer", "pe", "--sim", "icarus", "--seed", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: pe on icarus failed" in out and "o beat 3: lane 0" in out
