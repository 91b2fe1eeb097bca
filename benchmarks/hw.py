"""make bench-hw: the MVU on both FPGA targets, the §5 datapath choice, and the golden GEMM speed.

Writes benchmarks/hw.md (tables) and benchmarks/hw_sweep.png; builds go to out/bench-hw/ and a
finished point is reused unless --force (so an interrupted sweep resumes).

1. Sweep SIMD in {32, 64, 128} x PE in {4, 16}, MVU with K = 4·SIMD, N = 4·PE (a 16-word weight
   ROM at every point), A = 1, on ice40-up5k and ecp5-85k at the flow's default constraints.
2. §5: a conditional +-x adder tree (A = 4, SIMD 64; written here, not product code) against the
   bit-serial XNOR-popcount PE (SIMD 64), both behind the same byte-stream top on both targets.
3. hw.golden.arith.gemm_w1a1 on packed words against numpy float32 matmul, (512 x 384) @ (384 x 384).

    python benchmarks/hw.py [--only sweep,pmx,gemm] [--jobs 2] [--seeds 1] [--force]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amaranth.hdl import Cat, Module, Signal, signed, unsigned  # noqa: E402
from amaranth.lib import data, stream, wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402

from hw.fpga import flow  # noqa: E402
from hw.fpga.pnr import critical_path  # noqa: E402
from hw.fpga.report import describe_path  # noqa: E402

from hw.golden import arith  # noqa: E402
from hw.errors import BinbertError  # noqa: E402
from hw.rtl.pe import stage_levels, valid_delay  # noqa: E402

SIMDS = (32, 64, 128)
PES = (4, 16)
PMX_A, PMX_SIMD = 4, 64
GEMM = (512, 384, 384)  # M, K, N


# ---------------------------------------------------------------------------------------------
# §5 comparison block: conditional +-x adder tree (benchmark only)
# ---------------------------------------------------------------------------------------------
class PlusMinusTree(wiring.Component):
    """o = sum_i (w_i ? x_i : ~x_i) over SIMD A-bit two's-complement codes x_i.

    ~x = -x - 1, so this is sum_i (+-x_i) minus the number of -1 weights, a per-row constant
    that a real MVU adds once per row from its ROM (as the bit-serial MVU adds N_w): the
    datapath per cycle is the XOR leaves plus an A-bit adder tree. Register stages are spread
    over the tree levels exactly like hw/rtl/pe.py's, with the same handshake.
    """

    def __init__(self, *, simd: int, a_bits: int, pipeline: int):
        self.simd, self.a_bits, self.pipeline = simd, a_bits, pipeline
        self.levels = max(1, (simd - 1).bit_length())
        self.out_width = a_bits + self.levels
        layout = data.StructLayout({"x": unsigned(simd * a_bits), "w": unsigned(simd)})
        super().__init__({"i": In(stream.Signature(layout)),
                          "o": Out(stream.Signature(signed(self.out_width)))})

    def elaborate(self, platform):
        m = Module()
        a, simd = self.a_bits, self.simd
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        x, w = self.i.payload.x, self.i.payload.w
        nodes = [(x[i * a:(i + 1) * a] ^ Cat(*[~w[i]] * a)).as_signed() for i in range(simd)]
        regs = stage_levels(self.levels, self.pipeline)
        width = a
        for level in range(self.levels):
            width += 1
            nxt = []
            for j in range(0, len(nodes) - 1, 2):
                nxt.append((nodes[j] + nodes[j + 1])[:width].as_signed())
            if len(nodes) % 2:
                nxt.append(nodes[-1])
            nodes = nxt
            if level in regs:
                staged = []
                for idx, v in enumerate(nodes):
                    r = Signal(signed(width), name=f"t_l{level}_{idx}")
                    with m.If(en):
                        m.d.sync += r.eq(v)
                    staged.append(r)
                nodes = staged
        m.d.comb += [self.o.payload.eq(nodes[0]),
                     self.o.valid.eq(valid_delay(m, self.i.valid, en, self.pipeline))]
        return m


def check_pmx_tree(simd=8, a_bits=4, count=40, seed=0) -> None:
    """The +-x tree equals its integer definition (so the LUT count is of a correct circuit)."""
    from amaranth.sim import Simulator

    dut = PlusMinusTree(simd=simd, a_bits=a_bits, pipeline=2)
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (a_bits - 1)), 1 << (a_bits - 1)
    xs = rng.integers(lo, hi, (count, simd))
    ws = rng.integers(0, 2, (count, simd))
    expect = [int(np.where(w == 1, x, ~x).sum()) for x, w in zip(xs, ws)]
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for x, w in zip(xs, ws):
            ctx.set(dut.i.payload.x, sum((int(v) & (hi * 2 - 1)) << (a_bits * i)
                                         for i, v in enumerate(x)))
            ctx.set(dut.i.payload.w, sum(int(b) << i for i, b in enumerate(w)))
            ctx.set(dut.i.valid, 1)
            _, _, ov, op = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ov:
                got.append(op)
        ctx.set(dut.i.valid, 0)
        while len(got) < count:
            _, _, ov, op = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ov:
                got.append(op)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    if got != expect:
        raise SystemExit(f"PlusMinusTree is wrong: {got[:4]} != {expect[:4]}")


# ---------------------------------------------------------------------------------------------
# Build jobs (run in worker processes)
# ---------------------------------------------------------------------------------------------
def _job(kind: str, target: str, cfg: dict, out: str, seeds: tuple[int, ...], force: bool):
    out = Path(out)
    done = out / "report.json"
    if done.exists() and not force:
        r = json.loads(done.read_text())
        if "critical_path" not in r:  # reports from before the flow recorded it
            r["critical_path"] = critical_path(
                json.loads((out / "nextpnr_report.json").read_text()))
        return r
    skip = out / "skipped.json"
    if skip.exists() and not force:
        return json.loads(skip.read_text())
    t = flow.TARGETS[target]
    t0 = time.monotonic()
    try:
        if kind == "mvu":
            spec = flow.make_layer("mvu", pe=cfg["pe"], simd=cfg["simd"], target=t)
        elif kind == "pe":
            spec = flow.make_layer("pe", simd=cfg["simd"], target=t)
        else:  # the +-x tree, described like a PE with A-bit inputs, same register count
            pl = flow.make_layer("pe", simd=cfg["simd"], target=t).params.pipeline
            spec = flow.LayerSpec(
                "pmx_tree",
                _PmxParams(simd=cfg["simd"], a_bits=cfg["a_bits"], pipeline=pl),
                macs_per_cycle=cfg["simd"], a_bits=1, cycles_per_vector=1,
                describe={"simd": cfg["simd"], "a_bits": cfg["a_bits"], "pipeline": pl})
        r = flow.build(spec, t, out, seeds=seeds, bitstream=False)
    except BinbertError as exc:
        r = {"skipped": str(exc), "target": target, **cfg}
        out.mkdir(parents=True, exist_ok=True)
        skip.write_text(json.dumps(r, indent=2) + "\n")
        return r
    r["wall_s"] = round(time.monotonic() - t0, 1)
    done.write_text(json.dumps(r, indent=2) + "\n")
    return r


class _PmxParams:
    def __init__(self, **kw):
        self.kw = kw

    def create(self):
        return PlusMinusTree(**self.kw)


def run_builds(jobs: list[tuple], n_jobs: int) -> list[dict]:
    if n_jobs <= 1:
        return [_job(*j) for j in jobs]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        return list(pool.map(_job, *zip(*jobs)))


# ---------------------------------------------------------------------------------------------
# Golden GEMM speed
# ---------------------------------------------------------------------------------------------
def gemm_speed(repeats: int = 200, seed: int = 0, single_core: bool = False) -> dict:
    """Median times of the golden packed GEMM and numpy float32 matmul, interleaved.

    ``single_core``: hamming serial (threads=1); run it in a process started with
    OPENBLAS_NUM_THREADS=1 (see :func:`gemm_speed_single_core`) for a one-core comparison.
    """
    import functools

    m, k, n = GEMM
    rng = np.random.default_rng(seed)
    xf = rng.standard_normal((m, k)).astype(np.float32)
    wf = rng.standard_normal((n, k)).astype(np.float32)
    xp = arith.pack_bits(arith.sign_bits(xf))
    wp = arith.pack_bits(arith.sign_bits(wf))
    wt = np.ascontiguousarray(wf.T)
    if single_core:
        arith.hamming = functools.partial(arith.hamming, threads=1)
    # exactness first: the packed GEMM equals the +-1 float product
    ref = arith.bits_to_pm1(arith.sign_bits(xf)).astype(np.float32) @ \
        arith.bits_to_pm1(arith.sign_bits(wf)).astype(np.float32).T
    if not np.array_equal(arith.gemm_w1a1(xp, wp, k), ref.astype(np.int64)):
        raise SystemExit("gemm_w1a1 disagrees with the +-1 float32 product")
    t_f32, t_bin = [], []
    for _ in range(5):  # warm-up (BLAS threads, page faults)
        xf @ wt
        arith.gemm_w1a1(xp, wp, k)
    load0 = os.getloadavg()[0]
    for _ in range(repeats):  # interleaved, so machine load hits both alike
        t0 = time.perf_counter()
        xf @ wt
        t1 = time.perf_counter()
        arith.gemm_w1a1(xp, wp, k)
        t2 = time.perf_counter()
        t_f32.append(t1 - t0)
        t_bin.append(t2 - t1)
    f32, binary = float(np.median(t_f32)), float(np.median(t_bin))
    return {
        "shape": f"({m} x {k}) @ ({k} x {n})",
        "f32_ms": f32 * 1e3, "gemm_w1a1_ms": binary * 1e3, "speedup": f32 / binary,
        "f32_min_ms": min(t_f32) * 1e3, "gemm_w1a1_min_ms": min(t_bin) * 1e3,
        "speedup_best": min(t_f32) / min(t_bin),
        "repeats": repeats, "cpus": len(os.sched_getaffinity(0)),
        "load": (load0 + os.getloadavg()[0]) / 2, "numpy": np.__version__,
        "single_core": single_core,
    }


def gemm_speed_single_core(repeats: int = 200) -> dict:
    """:func:`gemm_speed` with one BLAS thread and a serial hamming, in a fresh process."""
    import subprocess

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = ("import importlib.util, json, sys; "
            f"s = importlib.util.spec_from_file_location('bhw', {str(Path(__file__))!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            f"print(json.dumps(m.gemm_speed({repeats}, single_core=True)))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Tables and plot
# ---------------------------------------------------------------------------------------------
def _row(r: dict) -> str:
    p = r.get("params", r)
    head = f"| {r['target']} | {p['pe']} | {p['simd']} |"
    if "skipped" in r:
        return head + f" — | — | — | — | — | — | — | — | not built: {r['skipped']} | — |"
    c, t = r["core"], r["total"]
    return (head + f" {c['lut4']} ({t['lut4']}) | {c['ff']} ({t['ff']}) | {t['bram']} | "
            f"{t['dsp']} | {r['fmax_mhz']:.1f} ({'met' if r['timing_met'] else 'not met'} at "
            f"{r['requested_mhz']:g}) | {r['cycles_per_vector']} | {r['mac_per_s'] / 1e9:.1f} | "
            f"**{r['lut4_per_mac']:.2f}** | {r['weights']} | "
            f"{describe_path(r.get('critical_path', {}))} |")


def _rtl_commit() -> str:
    import subprocess
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h", "--", "hw/rtl/pe.py", "hw/rtl/mvu.py"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw/rtl/pe.py", "hw/rtl/mvu.py"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return out + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


KEPT_SECTION = "## Encoder layer bitstreams"


def write_markdown(path: Path, sweep, pmx, gemm, cmd: str, seeds=(1,)) -> None:
    seeds_text = ", ".join(str(s) for s in seeds)
    lines = ["# Hardware benchmarks", "",
             f"Generated by `{cmd}` (benchmarks/hw.py) on {time.strftime('%Y-%m-%d')} from "
             f"commit {_rtl_commit()} (last change to hw/rtl/pe.py, hw/rtl/mvu.py). Tools: YoWASP "
             "Yosys 0.70 / nextpnr 0.11.1 (pinned in pyproject.toml).", ""]
    if sweep:
        lines += [
            "## MVU sweep (A = 1, K = 4·SIMD, N = 4·PE: a 16-word weight ROM everywhere)", "",
            "Each point is the MVU behind the 8-bit byte-stream top of hw/fpga/top.py on the real "
            "board pins (iCEBreaker / ULX3S-85F). LUT4 and FF: the MVU's own module (whole "
            "design incl. converters in parentheses). ECP5 LUT4 = LUT4 + 2·CCU2C + "
            "4·DPR16X4. Fmax: nextpnr at the requested clock (ECP5 150 MHz, iCE40 70 MHz), "
            f"best of seeds {seeds_text}. MAC/s = PE·SIMD·Fmax (A = 1). LUT4/MAC = MVU LUT4 / "
            "(PE·SIMD).", "",
            "| target | PE | SIMD | LUT4 MVU (all) | FF MVU (all) | BRAM | DSP | Fmax MHz | "
            "cycles/vector | GMAC/s | LUT4/MAC | weights | critical path (nextpnr) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_row(r) for r in sweep]
        lines += [""]
    if pmx:
        by = {(r["target"], r["layer"]): r for r in pmx if "skipped" not in r}
        lines += [
            f"## §5: conditional ±x adder tree (A = {PMX_A}) vs bit-serial XNOR-popcount PE, "
            f"SIMD {PMX_SIMD}", "",
            "Both blocks: one SIMD-wide dot-product lane with the same number of register "
            "stages spread over the tree (the target's default), same byte-stream top. The ±x tree does SIMD A-bit MACs per cycle; "
            f"the bit-serial PE does SIMD binary MACs per cycle, i.e. SIMD/A A-bit MACs. "
            "LUT4·cycles per A-bit MAC is the cost of equal throughput.", "",
            "| target | block | LUT4 | FF | Fmax MHz | A-bit MACs / cycle | LUT4·cycles per "
            "A-bit MAC |", "|---|---|---|---|---|---|---|"]
        for (target, layer), r in sorted(by.items()):
            per_cycle = PMX_SIMD if layer == "pmx_tree" else PMX_SIMD / PMX_A
            lines.append(f"| {target} | {'±x tree, A=%d' % PMX_A if layer == 'pmx_tree' else 'XNOR-popcount PE (bit-serial)'} "
                         f"| {r['core']['lut4']} | {r['core']['ff']} | {r['fmax_mhz']:.1f} | "
                         f"{per_cycle:g} | {r['core']['lut4'] / per_cycle:.2f} |")
        for r in pmx:
            if "skipped" in r:
                lines.append(f"| {r['target']} | {r['kind']} | not built: {r['skipped']} |")
        lines += [""]
    if gemm:
        g = gemm[0]
        lines += [
            "## Golden W1A1 GEMM vs numpy float32", "",
            f"{g['shape']}: `hw.golden.arith.gemm_w1a1` on packed uint64 words (exact) against "
            f"`x @ w.T` in float32 (numpy {g['numpy']}, OpenBLAS), interleaved, "
            f"{g['repeats']} repeats each, {g['cpus']} CPUs shared with other users. Both "
            "depend on the machine's load (its 1-minute load average is given): BLAS's "
            "threads suffer most on an oversubscribed machine, which inflates the float32 "
            "median; the best times (the quietest moment of the run) and the one-core row are "
            "the fair comparisons. The packed GEMM costs one XOR and one popcount per 64 MACs, "
            "but numpy runs them as separate passes (a broadcast XOR, then a scalar popcount "
            "per uint64), about 0.6 ns per word pair on this CPU, while OpenBLAS runs float32 "
            "FMAs at full SIMD width.", "",
            "| run | load avg | float32 median ms (best) | gemm_w1a1 median ms (best) | "
            "speed-up median (best) |", "|---|---|---|---|---|"]
        for g in gemm:
            name = ("one core (OPENBLAS_NUM_THREADS=1, hamming threads=1)" if g["single_core"]
                    else "default threads (BLAS all CPUs, hamming auto)")
            lines.append(f"| {name} | {g['load']:.1f} | {g['f32_ms']:.3f} ({g['f32_min_ms']:.3f}) "
                         f"| {g['gemm_w1a1_ms']:.3f} ({g['gemm_w1a1_min_ms']:.3f}) | "
                         f"**{g['speedup']:.2f}×** ({g['speedup_best']:.2f}×) |")
        lines += [""]
    # Hand-measured sections appended after the generated tables (e.g. the encoder bitstreams)
    # survive a regeneration.
    old = path.read_text() if path.exists() else ""
    keep = old.find(KEPT_SECTION)
    if keep >= 0:
        lines += [old[keep:].rstrip("\n"), ""]
    path.write_text("\n".join(lines))


def plot(path: Path, sweep) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for target, marker in (("ecp5-85k", "o"), ("ice40-up5k", "s")):
        for pe, style in ((4, "--"), (16, "-")):
            pts = sorted((r["params"]["simd"], r) for r in sweep if "skipped" not in r
                         and r["target"] == target and r["params"]["pe"] == pe)
            if not pts:
                continue
            xs = [s for s, _ in pts]
            ax1.plot(xs, [r["lut4_per_mac"] for _, r in pts], style, marker=marker,
                     label=f"{target} PE {pe}")
            ax2.plot(xs, [r["fmax_mhz"] for _, r in pts], style, marker=marker,
                     label=f"{target} PE {pe}")
    for ax, title in ((ax1, "LUT4 per binary MAC (MVU)"), (ax2, "Fmax (MHz, nextpnr)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(SIMDS, [str(s) for s in SIMDS])
        ax.set_xlabel("SIMD")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.axhline(125, color="grey", lw=0.8, ls=":")
    ax2.axhline(60, color="grey", lw=0.8, ls=":")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="sweep,pmx,gemm", help="comma list of sweep, pmx, gemm")
    ap.add_argument("--jobs", type=int, default=2, help="parallel tool runs (default 2)")
    ap.add_argument("--seeds", default="1", help="nextpnr seeds per point (best kept)")
    ap.add_argument("--build", type=Path, default=ROOT / "out" / "bench-hw")
    ap.add_argument("--md", type=Path, default=ROOT / "benchmarks" / "hw.md")
    ap.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "hw_sweep.png")
    ap.add_argument("--force", action="store_true", help="rebuild points that already have a report")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    seeds = tuple(int(s) for s in args.seeds.split(","))
    t0 = time.monotonic()

    jobs = []
    if "sweep" in parts:
        for target in flow.TARGETS:
            for pe in PES:
                for simd in SIMDS:
                    jobs.append(("mvu", target, {"pe": pe, "simd": simd},
                                 str(args.build / target / f"mvu_pe{pe}_simd{simd}"), seeds,
                                 args.force))
    if "pmx" in parts:
        check_pmx_tree()
        for target in flow.TARGETS:
            jobs.append(("pmx", target, {"simd": PMX_SIMD, "a_bits": PMX_A, "kind": "pmx"},
                         str(args.build / target / "pmx_tree"), seeds, args.force))
            jobs.append(("pe", target, {"simd": PMX_SIMD, "kind": "pe"},
                         str(args.build / target / "pe_simd64"), seeds, args.force))
    results = run_builds(jobs, args.jobs) if jobs else []
    sweep = [r for j, r in zip(jobs, results) if j[0] == "mvu"]
    for r, j in zip(sweep, [j for j in jobs if j[0] == "mvu"]):
        r.setdefault("params", j[2])
    pmx = [r for j, r in zip(jobs, results) if j[0] != "mvu"]
    for r, j in zip(pmx, [j for j in jobs if j[0] != "mvu"]):
        r.setdefault("kind", j[0])
    gemm = [gemm_speed(), gemm_speed_single_core()] if "gemm" in parts else None

    if parts != {"sweep", "pmx", "gemm"}:
        print(f"note: {args.md} holds only the parts run now ({args.only})")
    write_markdown(args.md, sweep, pmx, gemm, "make bench-hw" if len(parts) == 3 else
                   f"python benchmarks/hw.py --only {args.only}", seeds)
    if sweep:
        plot(args.png, sweep)
    for r in sweep + pmx:
        if "skipped" in r:
            print(f"{r['target']} {r.get('kind', 'mvu')}: skipped: {r['skipped']}")
        else:
            print(f"{r['target']} {r['layer']} {r['params']}: {r['core']['lut4']} LUT4 "
                  f"({r['lut4_per_mac']:.2f}/MAC) Fmax {r['fmax_mhz']:.1f} MHz")
    for g in gemm or []:
        print(f"gemm {g['shape']} ({'one core' if g['single_core'] else 'default threads'}, "
              f"load {g['load']:.1f}): f32 {g['f32_ms']:.3f} ms, gemm_w1a1 "
              f"{g['gemm_w1a1_ms']:.3f} ms, speed-up {g['speedup']:.2f}x")
    print(f"wrote {args.md} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
