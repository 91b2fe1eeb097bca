"""Running the FPGA tools: finding them, running one with its output logged, naming its error.

Tools come from the environment like amaranth-boards': YOSYS, NEXTPNR_ICE40, NEXTPNR_ECP5,
ICEPACK, ECPPACK (default: the YoWASP wheels, whose first call JIT-compiles for ~25 s and
caches in ~/.cache/YoWASP).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hw.errors import BinbertError
from hw.files import CannotWrite, cannot_write, disk_full, no_space, writing


def find_tool(env: str, default: str) -> str:
    """Resolve a tool from its environment variable (or the YoWASP default): first beside the
    running interpreter (the venv's own bin/, which need not be on PATH), then on PATH."""
    name = os.environ.get(env) or default
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        raise BinbertError(f"tool {name!r} not found on PATH (set {env}=... or install the "
                           f"yowasp wheels: make setup)")
    return path


def last_error(log: str) -> str:
    """The first ERROR line of a tool log (the one that explains the failure)."""
    for line in log.splitlines():
        if "ERROR" in line:
            return line.strip()
    tail = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return tail[-1] if tail else "no output"


def run_tool(cmd: list[str], cwd: Path, log: Path, what: str,
             tool_log: Path | None = None) -> float:
    """Run a tool, its output appended to ``log``; a failure names the tool's first ERROR line
    (from ``tool_log`` when the tool writes its own log, as yosys -q -l does). Returns the
    seconds it took."""
    t0 = time.monotonic()
    with writing(log):
        fh = open(log, "a")
    with fh:
        with writing(log):
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        if disk_full(cwd):  # tools report a full disk in their own words, or not at all
            raise CannotWrite(f"{cannot_write(cwd, no_space())}: {what} failed "
                              f"(log: {tool_log or log})")
        text = "\n".join(ln for ln in log.read_text(errors="replace").splitlines()
                         if not ln.startswith("$ "))  # the tools' output, not our command lines
        if tool_log is not None and tool_log.exists():
            text = tool_log.read_text(errors="replace") + "\n" + text
        raise BinbertError(f"{what} failed: {last_error(text)} (log: {tool_log or log})")
    return time.monotonic() - t0
