"""Every design whose generated Verilog is pinned by tests/test_verilog_hashes.py.

The default configurations of ``binbert sim`` (every layer, both bench sizes), every shipped
hardware preset (seeded random ops and with the shipped tiny export), and the default MVU / PE
bitstream blocks of both FPGA targets. ``python -m tests.verilog_designs [EXPORT]`` prints the
sha256 of each as JSON (the pinned file is written from it).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

TINY_EXPORT = Path(__file__).resolve().parent / "data" / "export-bi-tiny"


def designs(export=TINY_EXPORT) -> dict[str, object]:
    """label -> params with ``.create()``."""
    from hw.fpga.flow import TARGETS, make_layer
    from hw.fpga.presets import BITSTREAM_CONFIGS, bitstream_params
    from sim.defaults import block_configs
    from sim.layers import _random_configs

    out = {}
    for layer in ("pe", "mvu", "lsq"):
        for label, p in block_configs(layer):
            out[f"sim {label}"] = p
    for layer in ("ln", "ffn", "attn", "encoder"):
        for size in ("default", "tiny"):
            for label, p in _random_configs(layer, size):
                out[f"sim {size} {label}"] = p
    for name in BITSTREAM_CONFIGS:
        out[f"preset {name}"] = bitstream_params(name)
        if export is not None:
            out[f"preset {name} export {Path(export).name}"] = bitstream_params(name, ckpt=export)
    for tname, target in TARGETS.items():
        for layer in ("mvu", "pe"):
            out[f"bitstream {layer} {tname}"] = make_layer(layer, target=target).params
    return out


def verilog_sha256(params) -> str:
    from sim.runner import generate_verilog

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "top.v"
        generate_verilog(params, path)
        return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(export=TINY_EXPORT) -> dict[str, str]:
    return {label: verilog_sha256(p) for label, p in designs(export).items()}


if __name__ == "__main__":
    export = Path(sys.argv[1]) if len(sys.argv) > 1 else TINY_EXPORT
    json.dump(hashes(export), sys.stdout, indent=1, sort_keys=True)
    print()
