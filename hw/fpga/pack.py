"""The pack step: nextpnr's placed and routed design -> the bitstream.

    pack    icepack (.bin) or ecppack --compress (.bit)
"""
from __future__ import annotations

from pathlib import Path

from hw.fpga.targets import Target
from hw.fpga.tools import run_tool


def pack(tool: str, target: Target, out: Path, log: Path, seed: int) -> tuple[Path, float]:
    """Pack the routed design of nextpnr's run ``seed`` into ``out``/top.<ext>; (path, seconds)."""
    stem = f"top_seed{seed}"
    bit_path = out / ("top" + target.ext)
    if target.family == "ice40":
        seconds = run_tool([tool, f"{stem}.asc", bit_path.name], out, log, "icepack")
    else:
        seconds = run_tool([tool, "--compress", "--input", f"{stem}.config", "--bit",
                            bit_path.name], out, log, "ecppack")
    return bit_path, seconds
