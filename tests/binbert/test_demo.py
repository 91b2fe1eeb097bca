"""binbert.demo: `binbert e2e`/`demo` run every encoder layer of the export through the RTL (chained)."""
from __future__ import annotations

import argparse

import pytest

from hw.errors import BinbertError
from binbert import demo


def test_e2e_steps_run_the_whole_model(tmp_path, monkeypatch):
    import binbert.cli

    calls = []
    monkeypatch.setattr(binbert.cli, "main", lambda argv: calls.append(argv) or 0)
    args = argparse.Namespace(out=str(tmp_path), sim="verilator", sentences=20, seed=1)
    demo._e2e_steps(demo._Steps(2), args, tmp_path / "ckpt", tmp_path / "export")
    sim = [c for c in calls if c[0] == "sim"]
    assert len(sim) == 1
    argv = sim[0]
    flags = dict(zip(argv[1::2], argv[2::2]))
    assert flags["--layer"] == "model" and flags["--ckpt"] == str(tmp_path / "export")
    assert flags["--sentences"] == "20" and flags["--json"] == str(tmp_path / "e2e_rtl.json")


def test_failed_step_is_an_error(tmp_path, monkeypatch):
    import binbert.cli

    monkeypatch.setattr(binbert.cli, "main", lambda argv: 1)
    args = argparse.Namespace(out=str(tmp_path), sim="verilator", sentences=20, seed=1)
    with pytest.raises(BinbertError, match="step 'integer golden model vs fake-quant on SST-2 dev' failed"):
        demo._e2e_steps(demo._Steps(2), args, tmp_path / "ckpt", tmp_path / "export")
