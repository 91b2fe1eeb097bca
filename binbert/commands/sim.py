"""``binbert sim``: run a block's cocotb bench (RTL == golden model) on Verilator or Icarus.

``binbert sim --layer pe|mvu|lsq|ln|ffn|attn|encoder [--sim verilator|icarus] [--waves] [--seed N] [--ckpt PATH]``
``binbert sim --layer model --ckpt EXPORT [--sentences 20] [--json PATH] [--jobs 2] [--backpressure]``

Each layer runs one or more default configurations (:func:`sim.defaults.block_configs`); ``--ckpt`` takes
the MVU weights from a trained checkpoint instead of seeded random ones; for the encoder-level
layers (attn, ffn, ln, encoder) it is an exported model's layer on real sentences. ``model``
chains every encoder layer of an export through the RTL and compares hidden states and predictions (sim/e2e.py).
"""
from __future__ import annotations

import argparse
import time

from hw.errors import BinbertError


def register(subparsers) -> None:
    from sim.defaults import BLOCK_VECTORS, supported_layers
    from sim.runner import SIMULATORS

    p = subparsers.add_parser(
        "sim", help="cocotb: check a block's RTL against its golden model (Verilator/Icarus)",
        description="Build the block's RTL, drive seeded random vectors (edge cases first) with "
                    "random idles and backpressure, and compare every output beat with the "
                    "golden model. --layer model --ckpt EXPORT runs every encoder layer of the "
                    "export in RTL on real dev sentences, each layer fed the previous layer's RTL "
                    "output, and checks the hidden states bit for bit and the logits and "
                    "predictions against the golden full model. Exit status 1 when the RTL "
                    "disagrees.")
    p.add_argument("--layer", default="mvu",
                   help=f"block to simulate: {', '.join(supported_layers())} (default: mvu)")
    p.add_argument("--sim", default="verilator",
                   help=f"simulator: {', '.join(SIMULATORS)} (default: verilator)")
    p.add_argument("--waves", action="store_true", help="dump an FST waveform")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of every random stream (default: random, printed)")
    p.add_argument("--vectors", type=int, default=None,
                   help=f"random vectors per configuration (default: {BLOCK_VECTORS} for "
                        f"pe/mvu/lsq, per-layer defaults for ln/ffn/attn/encoder)")
    p.add_argument("--ckpt", default=None,
                   help="mvu: checkpoint whose weights the MVU uses; ln/ffn/attn/encoder: "
                        "checkpoint or export directory whose layer 0 runs on dev sentences of "
                        "the export's task; model (required): the export whose every layer runs")
    p.add_argument("--sentences", type=int, default=None,
                   help="with --ckpt: dev sentences of the export's task to run (default: model 20; "
                        "ln/ffn/attn/encoder 8 on verilator, 2 on icarus; --vectors is an alias)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="with --ckpt: tokens per sequence the RTL is built for; longer sentences "
                        "are skipped (default 16, or the shortest that fits the sentences asked "
                        "for where the task's are longer, such as MRPC pairs; at most the model's "
                        "position table)")
    p.add_argument("--json", default=None,
                   help="model: write the summary (per layer beats, cycles, build/sim seconds; "
                        "predictions RTL vs golden vs label) to this file, the RTL's hidden "
                        "states beside it (.npz)")
    p.add_argument("--jobs", type=int, default=2,
                   help="model: layer RTL builds run this many at a time, overlapping the "
                        "simulation of earlier layers (default 2)")
    p.add_argument("--backpressure", action="store_true",
                   help="model: random idles and backpressure on the streams (default: back to "
                        "back, the sentences themselves give the cycles per sequence)")
    p.add_argument("--build-dir", default=None, help="build directory (default: sim_build/)")
    p.add_argument("--verbose", action="store_true", help="show the simulator's own output")
    p.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    from sim.defaults import BLOCK_VECTORS, LAYERS, block_configs
    from sim.runner import SimulationError, check_sim_name, run_block, simulator_env

    if args.vectors is not None and args.vectors < 0:
        raise BinbertError(f"--vectors {args.vectors}: must be >= 0")
    if args.sentences is not None and (args.sentences < 1 or args.ckpt is None):
        raise BinbertError(f"--sentences {args.sentences}: needs --ckpt and a count >= 1")
    if args.seq_len is not None and (args.seq_len < 1 or args.ckpt is None):
        raise BinbertError(f"--seq-len {args.seq_len}: needs --ckpt and a length >= 1")
    if args.layer != "model":
        for flag, bad in (("--json", args.json is not None), ("--backpressure", args.backpressure)):
            if bad:
                raise BinbertError(f"{flag} applies to --layer model only, not to --layer {args.layer}")
    if args.layer == "model":
        check_sim_name(args.sim)
        simulator_env(args.sim)
        return _cmd_model(args)
    if args.layer in LAYERS:
        check_sim_name(args.sim)
        simulator_env(args.sim)
        return _cmd_layer(args)
    configs = block_configs(args.layer, ckpt=args.ckpt)
    check_sim_name(args.sim)
    simulator_env(args.sim)  # a missing tool fails before any work
    if args.vectors is None:
        args.vectors = BLOCK_VECTORS
    rows = []
    failed = 0
    for i, (label, params) in enumerate(configs, 1):
        print(f"[{i}/{len(configs)}] {label}", flush=True)
        t0 = time.monotonic()
        try:
            r = run_block(params, block=args.layer, sim=args.sim, waves=args.waves,
                          seed=args.seed, vectors=args.vectors, build_dir=args.build_dir,
                          verbose=args.verbose, log=lambda msg: print(f"    {msg}", flush=True))
        except SimulationError as exc:
            failed += 1
            print(f"    FAIL: {exc}", flush=True)
            rows.append((label, "FAIL", time.monotonic() - t0, ""))
            continue
        rows.append((label, "pass", time.monotonic() - t0, _summary(r.stats)))
    print(f"binbert sim --layer {args.layer} --sim {args.sim}:")
    for label, verdict, secs, note in rows:
        print(f"  {verdict:4}  {secs:6.1f}s  {label}" + (f"  [{note}]" if note else ""))
    return 1 if failed else 0


def _cmd_layer(args: argparse.Namespace) -> int:
    """ln/ffn/attn/encoder: random ops, or a checkpoint's layers on real sentences."""
    from sim.layers import run_layer
    from sim.runner import SimulationError

    count = args.sentences if args.ckpt is not None and args.sentences is not None else args.vectors
    kw = {} if args.seq_len is None else {"seq_len": args.seq_len}
    t0 = time.monotonic()
    try:
        results = run_layer(args.layer, sim=args.sim, waves=args.waves, seed=args.seed,
                            ckpt=args.ckpt, vectors=count, build_dir=args.build_dir,
                            verbose=args.verbose, log=lambda msg: print(f"    {msg}", flush=True), **kw)
    except SimulationError as exc:
        print(f"    FAIL: {exc}", flush=True)
        print(f"binbert sim --layer {args.layer} --sim {args.sim}: FAIL")
        return 1
    print(f"binbert sim --layer {args.layer} --sim {args.sim}: pass "
          f"({len(results)} configuration(s), {time.monotonic() - t0:.1f}s)")
    for r in results:
        note = _summary(r.stats)
        print(f"  pass  {r.sim_s:6.1f}s sim  {r.build_s:6.1f}s build" + (f"  [{note}]" if note else ""))
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    """Every encoder layer of an export in RTL, chained; hidden states and predictions vs golden."""
    from sim.defaults import DEFAULT_SENTENCES
    from sim.e2e import check_model_args, run_model
    from sim.runner import SimulationError

    if args.waves:
        raise BinbertError("--waves: not supported with --layer model (run one layer with "
                           "--layer encoder --ckpt ... --waves)")
    if args.vectors is not None and args.sentences is not None:
        raise BinbertError("--layer model: give --sentences or --vectors, not both")
    sentences = args.sentences if args.sentences is not None else args.vectors
    sentences = DEFAULT_SENTENCES if sentences is None else sentences
    seq_len = args.seq_len
    check_model_args(args.ckpt, sentences=sentences, seq_len=1 if seq_len is None else seq_len, jobs=args.jobs)
    t0 = time.monotonic()
    try:
        s = run_model(args.ckpt, sim=args.sim, sentences=sentences, seq_len=seq_len, seed=args.seed,
                      jobs=args.jobs, backpressure=args.backpressure, build_dir=args.build_dir,
                      json_path=args.json, verbose=args.verbose,
                      log=lambda msg: print(f"    {msg}", flush=True))
    except SimulationError as exc:
        print(f"    FAIL: {exc}", flush=True)
        print(f"binbert sim --layer model --sim {args.sim}: FAIL" + (f" (summary {args.json})" if args.json else ""))
        return 1
    print(f"binbert sim --layer model --sim {args.sim}: pass ({len(s['layers'])} layers, "
          f"{s['sentences']} sentences, {time.monotonic() - t0:.1f}s)")
    for row in s["layers"]:
        print(f"  layer {row['layer']}: bit-exact {row['beats_out']} beats, {row['cycles_per_sequence']:g} "
              f"cycles/sequence (model {row['cycles_per_sequence_model']}), build {row['build_s']:.1f}s"
              f"{'' if row['built'] else ' (reused)'}, sim {row['sim_s']:.1f}s ({row['kcycles_per_s']:g} kcycles/s)")
    agree = sum(p["rtl"] == p["golden"] for p in s["predictions"])
    print(f"  predictions: RTL == golden on {agree}/{len(s['predictions'])} sentences, logits equal: "
          f"{s['logits_equal']}; accuracy vs labels {s['accuracy_rtl']:.3f} (golden {s['accuracy_golden']:.3f})")
    if args.json:
        print(f"  summary: {args.json}")
    return 0


def _summary(stats: dict) -> str:
    parts = []
    if "vectors" in stats:
        parts.append(f"{stats['vectors']} vectors")
    elif "beats" in stats:
        parts.append(f"{stats['beats']} beats")
    if "cycles_per_group" in stats:
        parts.append(f"{stats['cycles_per_group']:g} cycles/vector (model "
                     f"{stats['cycles_per_group_model']})")
    if "codes_seen" in stats:
        parts.append(f"{stats['codes_seen']}/{stats['codes_possible']} codes")
    return ", ".join(parts)
