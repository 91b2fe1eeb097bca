"""`binbert train` / `binbert eval` through the real CLI entry point."""
import json
from pathlib import Path

import pytest

from binbert.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "models" / "tiny-test.yaml")
DATA = str(ROOT / "data" / "glue")


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--config", TINY, "--data", DATA, "--out", str(out), "--max-steps", "2",
               "--no-progress"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert set(printed) == set(summary)
    for stage in ("teacher", "ternary", "split", "binary"):
        assert summary[stage]["dev"] == printed[stage]
        assert summary[stage].get("steps", 0) <= 2
    rc = main(["eval", "--ckpt", str(out / "binary" / "final"), "--data", DATA])
    assert rc == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["stage"] == "binary" and ev["task"] == "sst2" and ev["examples"] == 32
    assert {k: ev[k] for k in summary["binary"]["dev"]} == summary["binary"]["dev"]
    # re-running is a resume: everything is complete, nothing trains again
    rc = main(["train", "--config", TINY, "--data", DATA, "--out", str(out), "--max-steps", "2",
               "--no-progress", "--stages", "teacher,split"])
    assert rc == 0


@pytest.mark.parametrize("argv,message", [
    (["train", "--config", "models/none.yaml"], "models/none.yaml: config file not found"),
    (["train", "--config", TINY, "--max-steps", "0"], "--max-steps must be a positive integer"),
    (["train", "--config", TINY, "--stages", "teacher,bogus"], "no stage named 'bogus'"),
    (["train", "--config", TINY, "--data", "/nonexistent/glue"],
     "data directory /nonexistent/glue does not exist"),
    (["eval", "--ckpt", "/nonexistent/ckpt"], "/nonexistent/ckpt: checkpoint directory does not "
                                              "exist"),
])
def test_errors_are_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("binbert: error: ") and message in err and "\n" not in err
