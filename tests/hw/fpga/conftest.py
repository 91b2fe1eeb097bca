"""The real iCE40 build that test_flow.py and test_pnr.py both read: run once per session."""
import pytest

from binbert.cli import main
from tests.hw.fpga.builds import SMALL


@pytest.fixture(scope="session")
def ice40_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ice40")
    rc = main(["bitstream", *SMALL, "--target", "ice40-up5k", "--seeds", "1,2", "--out", str(out)])
    return rc, out
