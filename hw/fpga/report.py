"""The report of one build: report.json (the flow's numbers and the layer's figures at Fmax)
and its human-readable report.md, for a routed design or one that did not fit."""
from __future__ import annotations

import json
from pathlib import Path

from hw.files import atomic_write_files


def _layer_figures(spec) -> dict:
    """Throughput figures of ``spec`` at 1 MHz (scaled by Fmax in the report)."""
    r = {"cycles_per_vector": spec.cycles_per_vector, "macs_per_cycle": spec.macs_per_cycle}
    if spec.cycles_per_sequence:
        r.update(seq_len=spec.seq_len, cycles_per_sequence=spec.cycles_per_sequence)
    return r


def no_fit_report(spec, error: str, partial: dict, rom_why: str) -> dict:
    """The report of a design that does not fit: what the flow measured before it stopped."""
    return {"layer": spec.layer, "params": spec.describe, "fits": False, "error": error,
            **partial, "weights": rom_why, **_layer_figures(spec)}


def layer_report(spec, res: dict, rom_why: str) -> dict:
    """The report of a routed design: the flow's numbers (:func:`hw.fpga.flow.run_flow`) and
    the layer's (a :class:`hw.fpga.flow.LayerSpec`) throughput at Fmax."""
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
    return report


def write_report(out: Path, report: dict) -> None:
    """report.json and report.md in ``out``, each whole or not at all (hw.files)."""
    atomic_write_files({out / "report.json": json.dumps(report, indent=2) + "\n",
                        out / "report.md": report_markdown(report)})


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
