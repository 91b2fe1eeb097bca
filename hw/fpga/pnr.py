"""The place-and-route step: nextpnr at the requested clock, one run per seed, and its reports.

    nextpnr --freq/constraint at the requested MHz, --report report.json, one run per seed

The board's PCF / LPF gets the requested frequency instead of the oscillator's; nextpnr's JSON
report gives the Fmax of the clock, the packed cells and the critical path; its log tells a
design that does not fit (a resource over 100 %, or a placer that gave up) from a tool failure.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hw.errors import BinbertError
from hw.files import CannotWrite
from hw.fpga.targets import DoesNotFit, Target
from hw.fpga.tools import last_error, run_tool

CLOCK = "cd_sync.clk"


def constraint_file(target: Target) -> str:
    """The name of the board's constraint file for ``target`` (nextpnr's --pcf / --lpf)."""
    return "top.pcf" if target.family == "ice40" else "top.lpf"


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


@dataclass(frozen=True)
class Routed:
    """The nextpnr runs: one per seed (``{"seed": ..., **parse_nextpnr_report}``), the best."""
    runs: list
    best: dict
    critical_path: dict  # of the best run
    seconds: float


def place_and_route(nextpnr: str, target: Target, out: Path, log: Path, freq: float,
                    seeds: tuple[int, ...], partial: dict) -> Routed:
    """Run nextpnr on ``out``/top.json once per seed; keep the best Fmax (its report becomes
    nextpnr_report.json). A design that does not fit raises :class:`DoesNotFit` with
    ``partial``, what was measured before."""
    cons_name = constraint_file(target)
    runs = []
    seconds = 0.0
    for seed in seeds:
        cmd = [nextpnr, *target.nextpnr_args, "--json", "top.json", f"--{cons_name[4:]}",
               cons_name, "--freq", f"{freq:g}", "--seed", str(seed), "--timing-allow-fail",
               "--report", f"pnr_seed{seed}.json", "--log", f"nextpnr_seed{seed}.log", "--quiet"]
        cmd += (["--asc", f"top_seed{seed}.asc"] if target.family == "ice40"
                else ["--textcfg", f"top_seed{seed}.config"])
        try:
            seconds += run_tool(cmd, out, log, "nextpnr")
        except CannotWrite:
            raise  # a full disk, not the design
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
    shutil.copyfile(out / f"pnr_seed{best['seed']}.json", out / "nextpnr_report.json")
    crit = critical_path(json.loads((out / "nextpnr_report.json").read_text()))
    return Routed(runs=runs, best=best, critical_path=crit, seconds=seconds)
