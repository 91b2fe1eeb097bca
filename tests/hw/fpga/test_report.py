"""hw/fpga/report.py: report.json and report.md are written together, whole or not at all."""
import errno
import json
import os

import pytest

from hw.errors import BinbertError
from hw.fpga.report import report_markdown, write_report

NO_FIT = {"layer": "pe", "target": "ice40-up5k", "device": "iCE40UP5K SG48", "board": "Board",
          "fits": False, "error": "design does not fit ice40-up5k: 40 LUT4 > 10",
          "params": {"simd": 16}, "core": {"lut4": 36, "ff": 45, "bram": 0, "dsp": 0},
          "total": {"lut4": 40, "ff": 60, "bram": 0, "dsp": 0},
          "utilisation": {"lut4": [40, 10]}, "weights": "none", "synth_opts": "-abc9",
          "seconds": {"synth": 1.0}}


def test_report_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    write_report(tmp_path, NO_FIT)
    assert json.loads((tmp_path / "report.json").read_text()) == NO_FIT
    assert (tmp_path / "report.md").read_text() == report_markdown(NO_FIT)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real, calls = os.fsync, []

    def full(fd):  # the disk fills while the second file is written
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BinbertError) as e:
        write_report(tmp_path, {**NO_FIT, "error": "another"})
    assert str(e.value) == f"{tmp_path / 'report.md'}: cannot write (No space left on device)"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
