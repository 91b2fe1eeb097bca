"""The pack step: nextpnr's placed and routed design -> the bitstream.

    pack    icepack (.bin) or ecppack --compress (.bit)
"""
from __future__ import annotations

from pathlib import Path

from hw.files import staged
from hw.fpga.targets import Target
from hw.fpga.tools import run_tool


def pack(tool: str, target: Target, out: Path, log: Path, seed: int) -> tuple[Path, float]:
    """Pack the routed design of nextpnr's run ``seed`` into ``out``/top.<ext>; (path, seconds).

    The tool writes a temporary name, renamed over the bitstream once it succeeded: a failed
    pack (a full disk) leaves no half bitstream, and a previous one stays whole."""
    stem = f"top_seed{seed}"
    bit_path = out / ("top" + target.ext)
    with staged(bit_path) as tmp:
        if target.family == "ice40":
            seconds = run_tool([tool, f"{stem}.asc", tmp.name], out, log, "icepack")
        else:
            seconds = run_tool([tool, "--compress", "--input", f"{stem}.config", "--bit",
                                tmp.name], out, log, "ecppack")
    return bit_path, seconds
