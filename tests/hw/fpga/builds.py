"""What the FPGA tests build: a small PE through `binbert bitstream`, and the pins it uses."""
from hw.fpga.top import board_resources

SMALL = ["--layer", "pe", "--simd", "16"]


def pins(family):
    return sum(len(sub.ios[0].names) for r in board_resources(family) for sub in r.ios)
