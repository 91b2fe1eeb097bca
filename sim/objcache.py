"""Compiler wrapper (Verilator's ``OBJCACHE``) that caches the Verilator *runtime* objects.

Every Verilator build compiles the same runtime library (verilated.cpp, verilated_vpi.cpp, ...:
~20 CPU-seconds) next to the few design-specific files. Those sources never change inside an
installed wheel, so their objects are reused, keyed by the exact compiler command line and the
source's size and mtime. Any other compile (the design, cocotb's main) runs untouched.

Usage (set by sim.runner): ``OBJCACHE="<python> <this file>"`` and
``BINBERT_OBJCACHE_DIR=<dir>``; make then runs ``<python> objcache.py c++ <flags> -c -o X.o Y.cpp``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _cacheable(argv: list[str]) -> tuple[Path, Path] | None:
    root = os.environ.get("VERILATOR_ROOT")
    if not root or "-c" not in argv or "-o" not in argv:
        return None
    out = Path(argv[argv.index("-o") + 1])
    sources = [Path(a) for a in argv if a.endswith(".cpp")]
    include = Path(root) / "include"
    if len(sources) != 1 or sources[0].parent != include:
        return None
    return out, sources[0]


def main(argv: list[str]) -> int:
    cache_dir = os.environ.get("BINBERT_OBJCACHE_DIR")
    hit = _cacheable(argv) if cache_dir else None
    if hit is None:
        return subprocess.call(argv)
    out, source = hit
    st = source.stat()
    h = hashlib.sha256("\0".join(argv).encode())
    h.update(f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    key = Path(cache_dir) / h.hexdigest()[:24]
    dep = out.with_suffix(".d")
    if key.with_suffix(".o").exists():
        shutil.copyfile(key.with_suffix(".o"), out)
        if key.with_suffix(".d").exists():
            shutil.copyfile(key.with_suffix(".d"), dep)
        return 0
    rc = subprocess.call(argv)
    if rc == 0:
        key.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: concurrent builds never see a half-written object
        for src, suffix in ((out, ".o"), (dep, ".d")):
            if src.exists():
                tmp = key.with_suffix(f"{suffix}.{os.getpid()}")
                shutil.copyfile(src, tmp)
                tmp.replace(key.with_suffix(suffix))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
