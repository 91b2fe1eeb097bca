"""``binbert bitstream``: Yosys + nextpnr + pack for one layer on one target (or all)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not seeds:
        raise argparse.ArgumentTypeError("need at least one seed")
    return seeds


def _load_checkpoint(ckpt):
    """--export given a checkpoint directory: exported on the fly (cached, sw.export.load_export)."""
    from sw.export import load_export

    return load_export(ckpt)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bitstream", help="synthesize, place and route a layer: bitstream + report.json/.md",
        description="Build LAYER behind an 8-bit byte-stream top (hw/fpga/top.py) for TARGET with "
                    "Yosys + nextpnr + icepack/ecppack; write the bitstream, report.json and "
                    "report.md (LUT4, FF, BRAM, DSP, Fmax, cycles per vector or per sequence, "
                    "MAC/s or sequences/s, LUT4/MAC). A design too big for the device still "
                    "gets its report (synthesis utilisation) and exits with status 2.")
    p.add_argument("--layer", default="mvu", help="mvu (default), pe or encoder")
    p.add_argument("--target", default=None,
                   help="ice40-up5k, ecp5-85k or all (default: the encoder preset's target, "
                        "else ecp5-85k)")
    p.add_argument("--config", default=None,
                   help="--layer encoder: hardware preset, a models/hw/encoder-*.yaml path or its "
                        "name (tiny, tiny-bi, micro-bi; default tiny)")
    p.add_argument("--export", type=Path, default=None,
                   help="--layer encoder: a checkpoint or `binbert export` directory: its trained "
                        "layer (the preset's layer_index, default 0) folded at the preset's MAC "
                        "budget instead of seeded random ops")
    p.add_argument("--pe", type=int, default=16, help="MVU rows per cycle (default 16)")
    p.add_argument("--simd", type=int, default=None,
                   help="columns per cycle (default per target: 64 on ECP5, 32 on iCE40)")
    p.add_argument("--k", type=int, default=None, help="MVU input length (default 4*SIMD)")
    p.add_argument("--n", type=int, default=None, help="MVU output length (default 4*PE)")
    p.add_argument("--a-bits", type=int, default=1, help="activation bits (default 1)")
    p.add_argument("--mmv", type=int, default=1, help="vectors per weight read (default 1)")
    p.add_argument("--pipeline", type=int, default=None,
                   help="PE register stages (default per target: 2 on ECP5, 4 on iCE40)")
    p.add_argument("--freq", type=float, default=None,
                   help="requested clock in MHz (default: 150 on ECP5, 70 on iCE40)")
    p.add_argument("--seeds", type=_seeds, default=(1,),
                   help="nextpnr seeds, comma-separated; the best Fmax is kept (default 1)")
    p.add_argument("--rom", default="auto",
                   help="weight ROM: auto (block RAM when it fits), bram or logic")
    p.add_argument("--synth-opts", default=None,
                   help="replace the synth_<family> flags (default per target, see hw/fpga/targets.py)")
    p.add_argument("--synth-extra", default=None,
                   help="flags appended to the synth_<family> flags, e.g. '-dsp' on top of the "
                        "target's defaults")
    p.add_argument("--out", type=Path, default=Path("out/bitstream"), help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from hw.fpga import flow
    from hw.errors import BinbertError

    target_name = args.target
    if target_name is None:
        target_name = "ecp5-85k"
        if args.layer == "encoder":
            from hw.fpga.presets import load_preset
            target_name = load_preset("tiny" if args.config is None else args.config).target
    if target_name == "all":
        targets = list(flow.TARGETS.values())
    else:
        targets = [flow.get_target(target_name)]
    opts = None if args.synth_opts is None else tuple(args.synth_opts.split())
    extra = () if args.synth_extra is None else tuple(args.synth_extra.split())
    export = None if args.export is None else str(args.export)
    if export is not None and args.layer == "encoder" and not args.export.exists():
        raise BinbertError(f"--export {export}: no such checkpoint or export directory")
    no_fit = []
    for target in targets:
        spec = flow.make_layer(args.layer, pe=args.pe, simd=args.simd, k=args.k, n=args.n,
                               a_bits=args.a_bits, mmv=args.mmv, pipeline=args.pipeline,
                               target=target, config=args.config, ckpt=export, load=_load_checkpoint)
        out = args.out / target.name if len(targets) > 1 else args.out
        try:
            r = flow.build(spec, target, out, freq_mhz=args.freq, seeds=args.seeds,
                           synth_opts=opts, synth_extra=extra, rom=args.rom)
        except flow.DoesNotFit as exc:
            print(f"{target.name}: {exc} (report: {out / 'report.md'})")
            no_fit.append(str(exc))
            continue
        timing = (f"Fmax {r['fmax_mhz']:.1f} MHz ({'met' if r['timing_met'] else 'not met'} at "
                  f"{r['requested_mhz']:g})")
        if r.get("cycles_per_sequence"):  # a whole layer: its size and sequences per second
            print(f"{target.name}: {r['layer']} {r['total']['lut4']} LUT4, {r['total']['ff']} FF, "
                  f"{r['total']['bram']} BRAM, {r['total']['dsp']} DSP, {timing}, "
                  f"{r['cycles_per_sequence']} cycles/sequence, {r['sequences_per_s']:,.0f} "
                  f"sequences/s -> {out / r['bitstream']}")
        else:
            print(f"{target.name}: {r['layer']} {r['core']['lut4']} LUT4 "
                  f"({r['lut4_per_mac']:.2f}/MAC), {r['core']['ff']} FF, {r['total']['bram']} "
                  f"BRAM, {timing} -> {out / r['bitstream']}")
    if no_fit:
        raise BinbertError("; ".join(no_fit))
    return 0


