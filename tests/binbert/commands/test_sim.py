"""`binbert sim`: argument errors are one-line BinbertErrors, and a run reports pass/fail."""
from __future__ import annotations

import numpy as np
import pytest

from hw.errors import BinbertError
from binbert.commands import sim as commands
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


def test_ckpt_weights_are_signs(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    q = torch.randn(40, 130)
    q[0, 0] = 0.0  # sign(0) = +1
    save_file({"bert.encoder.layer.0.attention.self.query.weight": q,
               "bert.embeddings.word_embeddings.weight": torch.randn(10, 130)},
              str(tmp_path / "model.safetensors"))
    bits, note = commands.ckpt_weights(tmp_path, k=128, n=32)
    assert bits.shape == (32, 128) and bits[0, 0] == 1
    assert np.array_equal(bits, (q[:32, :128].numpy() >= 0).astype(np.uint8))
    assert "query.weight" in note
    with pytest.raises(BinbertError, match="smaller than the MVU's n x k = 64x128"):
        commands.ckpt_weights(tmp_path, k=128, n=64)


def test_ckpt_not_safetensors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BinbertError, match="cannot read safetensors"):
        commands.ckpt_weights(tmp_path, k=8, n=8)


def test_default_configs():
    mvu = commands.block_configs("mvu")
    assert [p.a_bits for _, p in mvu] == [1, 4]
    assert all((p.k, p.n, p.pe, p.simd) == (128, 32, 8, 32) for _, p in mvu)
    w = mvu[0][1].weights
    assert w[0].all() and not w[1].any()  # the extreme rows the edge vectors rely on
    assert len(commands.block_configs("lsq")) == 2


def test_cli_failure_exits_1(monkeypatch, capsys):
    import sim.runner

    def broken(params, **kw):
        raise sim.runner.SimulationError("pe on icarus failed 1 of 1 tests (seed 5): o beat 3: lane 0")

    monkeypatch.setattr(sim.runner, "run_block", broken)
    assert main(["sim", "--layer", "pe", "--sim", "icarus", "--seed", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: pe on icarus failed" in out and "o beat 3: lane 0" in out
