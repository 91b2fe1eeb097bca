"""``binbert demo`` and ``binbert e2e``: the main job on shipped defaults, one step after another.

Each step is an ordinary ``binbert`` subcommand (the same ones the Makefile targets call), so the
demo proves the CLI a user has, not a private code path. Training and export resume/reuse what a
previous run left in OUT.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from hw.errors import BinbertError


def register(subparsers) -> None:
    d = subparsers.add_parser(
        "demo", help="train on CONFIG, export, integer eval, RTL sims vs golden, bitstream + report",
        description="The main job on shipped defaults: a short BinaryBERT training (teacher -> "
                    "half-width ternary -> split -> binary), export to ROM images, the integer "
                    "golden model against the fake-quant model on SST-2 dev, the MVU and every "
                    "encoder layer in Verilator against the golden model (bit for bit, real "
                    "sentences, layers chained, predictions compared), and an ECP5 bitstream of "
                    "the MVU with its report.")
    _common(d)
    d.add_argument("--target", default="ecp5-85k", help="bitstream target (default ecp5-85k)")
    d.add_argument("--skip-bitstream", action="store_true", help="stop after the simulations")
    d.set_defaults(func=cmd_demo)

    e = subparsers.add_parser(
        "e2e", help="train a small model, export it, real SST-2 sentences through the RTL encoder",
        description="Train CONFIG, export it, and run real SST-2 dev sentences through every "
                    "RTL encoder layer in the simulator (layer l+1 fed layer l's RTL output): "
                    "hidden states must equal the golden model's bit for bit and the logits and "
                    "predictions (golden pooler/classifier on the RTL's last hidden states) the "
                    "golden full model's. Summary: OUT/e2e_rtl.json.")
    _common(e)
    e.set_defaults(func=cmd_e2e)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="models/demo.yaml", help="training config (default models/demo.yaml)")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--sim", default="verilator", help="simulator for the RTL steps (default verilator)")
    p.add_argument("--sentences", type=int, default=20, help="real dev sentences through the RTL (default 20)")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulation benches (default 1)")


def _final_checkpoint(train_out: Path, config: str) -> Path:
    from sw.config import load_config

    cfg = load_config(config)
    last = cfg.stages[-1].name
    ckpt = train_out / last / "final"
    if not ckpt.is_dir():
        raise BinbertError(f"{config}: training finished without {ckpt}")
    return ckpt


class _Steps:
    """Runs CLI steps with a banner each and a timing summary at the end."""

    def __init__(self, total: int):
        self.total, self.done, self.times = total, 0, []

    def run(self, title: str, argv: list[str]) -> None:
        from binbert.cli import main

        self.done += 1
        print(f"\n=== [{self.done}/{self.total}] {title}\n    binbert {' '.join(argv)}", flush=True)
        t0 = time.time()
        rc = main(argv)
        dt = time.time() - t0
        self.times.append((title, dt))
        if rc:
            raise BinbertError(f"step '{title}' failed (exit {rc}): binbert {' '.join(argv)}")
        print(f"--- {title}: done in {dt:.0f} s", flush=True)

    def summary(self) -> None:
        print("\n=== summary")
        for title, dt in self.times:
            print(f"  {dt:7.0f} s  {title}")
        print(f"  {sum(t for _, t in self.times):7.0f} s  total")


def _train_export(steps: _Steps, args) -> tuple[Path, Path]:
    out = Path(args.out)
    steps.run("train (resumable: a rerun continues an interrupted one)", ["train", "--config", args.config, "--out", str(out / "train")])
    ckpt = _final_checkpoint(out / "train", args.config)
    steps.run("export to ROM images + manifest", ["export", str(ckpt), "--out", str(out / "export")])
    return ckpt, out / "export"


def _e2e_steps(steps: _Steps, args, ckpt: Path, export: Path) -> None:
    steps.run("integer golden model vs fake-quant on SST-2 dev",
              ["eval-integer", "--ckpt", str(ckpt), "--export", str(export),
               "--json", str(Path(args.out) / "eval_integer.json")])
    # every layer in RTL, each fed the previous layer's RTL output; hidden states bit-exact,
    # then logits/predictions of the golden head on the RTL's states == the golden full model's
    steps.run(f"all RTL encoder layers, chained, vs golden on {args.sentences} real SST-2 sentences ({args.sim})",
              ["sim", "--layer", "model", "--sim", args.sim, "--ckpt", str(export),
               "--sentences", str(args.sentences), "--seed", str(args.seed),
               "--json", str(Path(args.out) / "e2e_rtl.json")])


def cmd_e2e(args) -> int:
    steps = _Steps(4)
    ckpt, export = _train_export(steps, args)
    _e2e_steps(steps, args, ckpt, export)
    steps.summary()
    return 0


def cmd_demo(args) -> int:
    steps = _Steps(5 + (0 if args.skip_bitstream else 1))
    ckpt, export = _train_export(steps, args)
    _e2e_steps(steps, args, ckpt, export)
    steps.run(f"MVU (XNOR-popcount array) vs golden, 10,000 vectors ({args.sim})",
              ["sim", "--layer", "mvu", "--sim", args.sim, "--seed", str(args.seed)])
    if not args.skip_bitstream:
        steps.run(f"bitstream of the MVU for {args.target} + report",
                  ["bitstream", "--layer", "mvu", "--target", args.target,
                   "--out", str(Path(args.out) / "bitstream")])
    steps.summary()
    return 0
