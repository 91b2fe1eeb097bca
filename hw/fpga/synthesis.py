"""The synthesis step: Yosys maps the elaborated design to the target's cells.

    yosys   read_rtlil; keep_hierarchy on the block; synth_<family> <opts>; stat -json; write_json

The block under test is kept as its own module (``keep_hierarchy``) so Yosys' per-module
statistics give its cells apart from the byte-stream wrapper of :mod:`hw.fpga.top`; nextpnr
flattens it for placement. The cell counts are summarized per resource kind of the target
(:class:`hw.fpga.targets.Target`: LUT4, FF, block RAM, DSP, carry).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hw.errors import BinbertError
from hw.files import atomic_write_text
from hw.fpga.targets import Target
from hw.fpga.tools import last_error, run_tool

CORE_MODULE = "top.top.core"  # BoardTop -> ByteStreamTop "top" -> block "core"
ROM_NAMES = "*rom*"  # memories whose mapping --rom pins (hw/rtl/mvu.py: wrom, crom); others: yosys' choice


def synth_flags(target: Target, synth_opts: tuple[str, ...] | None = None,
                extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The synth_<family> flags: ``synth_opts`` replaces the target's defaults (None keeps
    them), ``extra`` is appended (e.g. ``-dsp`` on top of the iCE40 defaults)."""
    return tuple(target.synth_opts if synth_opts is None else synth_opts) + tuple(extra)


def synth_script(target: Target, opts: tuple[str, ...], rom: str) -> list[str]:
    """The lines of synth.ys: ``rom`` 'logic' puts the ROMs in LUTs, else in block RAM."""
    style = "logic" if rom == "logic" else "block"
    script = [
        "read_rtlil top.il",
        "hierarchy -top top",
        f"setattr -mod -set keep_hierarchy 1 {CORE_MODULE}",
        # Pin the memories' mapping instead of leaving it to yosys' size heuristics.
        "proc",
        "memory_collect",
        f"setattr -set ram_style \"{style}\" t:$mem_v2 n:{ROM_NAMES} %i",
    ]
    script += [
        f"synth_{target.family} -top top {' '.join(opts)}",
        "tee -q -o stat.json stat -json",
        "write_json top.json",
    ]
    return script


def abc9_reintegrate_assert(yosys_log: str) -> bool:
    """Whether a failed yosys run died on an assertion inside abc9's ABC_OPS_REINTEGRATE."""
    err = last_error(yosys_log)
    tail = yosys_log[:yosys_log.rfind(err)][-4000:] if err in yosys_log else ""
    return "Assert" in err and "ABC_OPS_REINTEGRATE" in tail


def _module_cells(stat: dict, module: str) -> dict[str, int]:
    mods = stat.get("modules", {})
    for key in (module, "\\" + module):
        if key in mods:
            return dict(mods[key].get("num_cells_by_type", {}))
    raise BinbertError(f"yosys stat: module {module!r} not found (have {', '.join(mods)})")


def summarize_cells(cells: dict[str, int], target: Target) -> dict[str, int]:
    """Cell counts by type -> LUT4 / FF / BRAM / DSP / carry for ``target``."""
    return {
        "lut4": sum(n * cells.get(t, 0) for t, n in target.lut_cells.items()),
        "ff": sum(v for t, v in cells.items() if t.startswith(target.ff_prefix)),
        "bram": sum(cells.get(t, 0) for t in target.bram_cells),
        "dsp": sum(cells.get(t, 0) for t in target.dsp_cells),
        "carry": cells.get("SB_CARRY", 0) + cells.get("CCU2C", 0),
    }


@dataclass(frozen=True)
class Synthesized:
    """What synthesis measured: the block's and the whole design's cells (summarized)."""
    core: dict
    total: dict
    workaround: str  # '' or why the script was changed to get through yosys
    seconds: float


def synthesize(yosys: str, target: Target, out: Path, log: Path, opts: tuple[str, ...],
               rom: str) -> Synthesized:
    """Run yosys on ``out``/top.il (synth.ys, yosys.log, stat.json, top.json in ``out``)."""
    script = synth_script(target, opts, rom)
    atomic_write_text(out / "synth.ys", "\n".join(script) + "\n")
    workaround = ""
    try:
        seconds = run_tool([yosys, "-q", "-l", "yosys.log", "synth.ys"], out, log, "yosys",
                           tool_log=out / "yosys.log")
    except BinbertError:
        if not abc9_reintegrate_assert((out / "yosys.log").read_text(errors="replace")):
            raise
        # Yosys 0.70's abc9 asserts in ABC_OPS_REINTEGRATE on some designs (the encoder layer
        # of the demo export, hierarchical micro-bi); splitting multi-bit wires after proc
        # avoids it (measured on the tiny preset: +23 of 19,278 LUT4, so not the default).
        workaround = "splitnets after proc (abc9 asserted in ABC_OPS_REINTEGRATE without it)"
        (out / "yosys.log").replace(out / "yosys_abc9_assert.log")
        script.insert(script.index("proc") + 1, "splitnets")
        atomic_write_text(out / "synth.ys", "\n".join(script) + "\n")
        seconds = run_tool([yosys, "-q", "-l", "yosys.log", "synth.ys"], out, log, "yosys",
                           tool_log=out / "yosys.log")
    stat = json.loads((out / "stat.json").read_text())
    core = summarize_cells(_module_cells(stat, CORE_MODULE), target)
    total = summarize_cells(stat["design"]["num_cells_by_type"], target)
    return Synthesized(core=core, total=total, workaround=workaround, seconds=seconds)
