"""`binbert bitstream` (binbert/commands/bitstream.py): the encoder's preset and export options, the default
target taken from the preset (the micro-bi encoder layer built on the iCE40 UP5K: about a
minute of Yosys + nextpnr), and a design too big for its device as a clean report + one-line
error (a PE on a shrunken iCE40).

The full place and route of an encoder layer is tests/hw/fpga/test_flow.py's slow test.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from hw.fpga import flow, presets
from hw.fpga.synthesis import summarize_cells
from binbert.cli import main

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo.yaml"


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


@pytest.mark.parametrize("argv,match", [
    (["--pe", "0"], "--pe 0: must be a positive integer"),
    (["--pe", "-2", "--n", "8"], "--pe -2: must be a positive integer"),
    (["--n", "0"], "--n 0: must be a positive integer"),
])
def test_mvu_bad_sizes_name_their_option(argv, match, tmp_path, capsys):
    """A bad --pe is named as such, not as the --n = 4*PE derived from it."""
    out = tmp_path / "out"
    assert main(["bitstream", *argv, "--out", str(out)]) == 2
    assert _one_line_error(capsys) == f"binbert: error: {match}"
    assert not (out / "top.il").exists()


@pytest.fixture(scope="module")
def micro_ice40(tmp_path_factory):
    """The micro-bi preset with no --target: its own (the iCE40 UP5K)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("micro")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["bitstream", "--layer", "encoder", "--config", "micro-bi", "--out", str(out)])
    return rc, out, err.getvalue().strip()


def test_cli_no_fit_exits_2_after_writing_the_report(tmp_path, monkeypatch, capsys):
    """A design over capacity: status 2, the one-line error, the report of what was measured.
    --synth-extra flags go after the target's default flags instead of replacing them."""
    import dataclasses

    small = dataclasses.replace(flow.TARGETS["ice40-up5k"], luts_available=10)
    monkeypatch.setitem(flow.TARGETS, "ice40-up5k", small)
    rc = main(["bitstream", "--layer", "pe", "--simd", "16", "--target", "ice40-up5k",
               "--synth-extra=-dsp", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "report.json").read_text())
    assert rc == 2 and r["fits"] is False
    flags = " ".join(small.synth_opts + ("-dsp",))
    assert r["synth_opts"] == flags == "-abc9 -dffe_min_ce_use 4 -dsp"
    assert f"synth_ice40 -top top {flags}" in (tmp_path / "synth.ys").read_text()
    assert _one_line_error(capsys) == f"binbert: error: {r['error']}"
    assert r["error"].startswith("design does not fit ice40-up5k: ")


def test_cli_read_only_out_is_one_line_before_any_tool(tmp_path, monkeypatch, capsys):
    import errno
    import os

    def read_only(path, *args, **kwargs):  # root ignores chmod: the mount's refusal, faked
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    out = tmp_path / "out"
    monkeypatch.setattr(os, "mkdir", read_only)
    assert main(["bitstream", "--layer", "pe", "--simd", "16", "--target", "ice40-up5k",
                 "--out", str(out)]) == 2
    assert _one_line_error(capsys) == f"binbert: error: {out}: cannot write (Read-only file system)"
    assert not out.exists()


def test_micro_bi_encoder_layer_builds_on_the_up5k(micro_ice40):
    """A whole BiBERT W1A1 encoder layer placed, routed and packed on the iCE40 UP5K (its
    preset's own target): exit 0, a bitstream, and the report's figures are the tools' own."""
    rc, out, err = micro_ice40
    target = flow.TARGETS["ice40-up5k"]
    assert presets.load_preset("micro-bi").target == target.name
    assert (rc, err) == (0, "")
    r = json.loads((out / "report.json").read_text())
    assert (r["target"], r["fits"]) == (target.name, True)
    assert (out / r["bitstream"]).stat().st_size > 1000 and r["bitstream"].endswith(".bin")
    # the figures are yosys' own statistics of the whole design and nextpnr's packed cells
    stat = json.loads((out / "stat.json").read_text())
    assert r["total"] == summarize_cells(stat["design"]["num_cells_by_type"], target)
    cells = r["pnr"]["pnr_lut"]
    assert r["total"]["lut4"] <= cells <= target.luts_available
    assert f"ICESTORM_LC:    {cells}/" in (out / "nextpnr_seed1.log").read_text()
    spec = flow.make_layer("encoder", config="micro-bi")
    assert r["cycles_per_sequence"] == spec.cycles_per_sequence
    assert r["params"] == json.loads(json.dumps(spec.describe)) and r["params"]["mvu_buffer"] == "block"
    assert r["sequences_per_s"] == pytest.approx(r["fmax_mhz"] * 1e6 / r["cycles_per_sequence"])
    assert (out / "report.md").read_text().startswith("# encoder on ice40-up5k")


def test_cli_exports_a_checkpoint_directory_on_the_fly(tmp_path, monkeypatch):
    """--export with a checkpoint directory: the CLI hands hw the PyTorch side's exporting loader
    (sw.export.load_export, cached under $BINBERT_SIM_BUILD); the layer is the checkpoint's."""
    from hw.golden.export_format import load_params
    from sw.backbone import minilm_path
    from sw.config import load_config
    from sw.train import save_checkpoint
    from tests.sw.chain_models import tiny_quant

    root = Path(__file__).resolve().parents[3]
    vocab = sum(1 for _ in open(minilm_path() / "vocab.txt", encoding="utf-8"))
    cfg = load_config(root / "models/tiny-test.yaml")
    ckpt = tmp_path / "binary"
    save_checkpoint(ckpt, tiny_quant("bi", vocab=vocab, hidden=16, layers=1, heads=2, inter=32,
                                     max_pos=cfg.model.tiny.max_position_embeddings),
                    cfg, {"stage": "binary", "complete": True})
    monkeypatch.setenv("BINBERT_SIM_BUILD", str(tmp_path / "build"))
    specs = []

    class Stop(Exception):
        pass

    def no_tools(spec, target, out, **kw):  # stop before Yosys: the spec is what is checked
        specs.append(spec)
        raise Stop

    monkeypatch.setattr(flow, "build", no_tools)
    with pytest.raises(Stop):
        main(["bitstream", "--layer", "encoder", "--config", "micro-bi", "--export", str(ckpt),
              "--out", str(tmp_path / "out")])
    (spec,) = specs
    assert spec.describe["weights"] == f"layer 0 of {ckpt}"
    (export,) = (tmp_path / "build" / "exports").iterdir()
    layer = load_params(export)[0].layers[0]
    assert spec.params.layer.ln1.n == layer.ln1.n == 16
    assert all(np.array_equal(getattr(spec.params.layer, name).weights, getattr(layer, name).weights)
               for name in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out"))
