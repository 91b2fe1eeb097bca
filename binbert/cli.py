"""``binbert``: the one command-line entry point.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``commands`` module, so the CLI stays one program while the packages stay independent.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hw.errors import BinbertError

# Modules that define register(subparsers); imported lazily so `binbert --help` stays fast
# and a package's heavy imports (torch, amaranth) load only for its own commands.
COMMAND_MODULES = ("binbert.commands.bitstream", "binbert.commands.sim", "binbert.commands.train", "binbert.commands.export", "binbert.demo", "binbert.configdoc")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binbert",
        description="BinaryBERT / BiBERT from a Hugging Face checkpoint to 1-bit hardware.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency, not an absent commands module
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BinbertError as exc:
        print(f"binbert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("binbert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
