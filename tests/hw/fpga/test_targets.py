"""hw/fpga/targets.py: the targets' capacity check and their defaults."""
import pytest

from hw.fpga import flow, targets


@pytest.mark.parametrize("util,msg", [
    ({"lut4": [5, 4], "bram": [3, 3], "dsp": [9, 8]},
     "5 LUT4 after synthesis > 4 available, 9 DSP after synthesis > 8 available"),
    ({"lut4": [1, 4], "bram": [31, 30], "dsp": [0, 8]}, "31 block RAM after synthesis > 30 available"),
    ({"lut4": [4, 4], "bram": [0, 30], "dsp": [8, 8]}, ""),
])
def test_over_capacity(util, msg):
    assert targets.over_capacity(util) == msg


def test_default_simd_per_target():
    assert {n: t.simd for n, t in targets.TARGETS.items()} == {"ice40-up5k": 32, "ecp5-85k": 64}
    assert flow.make_layer("mvu").params.simd == 64  # no target
