"""The generated Verilog of every pinned design (tests/verilog_designs.py) is byte for byte the
Verilog recorded in tests/data/verilog_sha256.json: moving or restructuring the generators
changes no design. A design meant to change is re-recorded with ``python -m tests.verilog_designs``
in the same commit, which says why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.verilog_designs import designs, verilog_sha256

PINNED = json.loads((Path(__file__).resolve().parent / "data" / "verilog_sha256.json").read_text())


def test_the_pinned_designs_are_the_designs():
    assert sorted(designs()) == sorted(PINNED)


@pytest.fixture(scope="module")
def built():
    return designs()


@pytest.mark.parametrize("label", sorted(PINNED))
def test_verilog_unchanged(built, label):
    assert verilog_sha256(built[label]) == PINNED[label]
