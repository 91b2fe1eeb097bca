"""MatrixVectorUnit == MVUParams.compute (golden, hw.golden.arith) under idles and backpressure,
at the model's cycle count; parameter validation; ROM images; Verilog generation."""
import numpy as np
import pytest
from amaranth.back import verilog

from hw.errors import BinbertError
from hw.golden import arith
from hw.rtl.mvu import MatrixVectorUnit, MVUParams, weights_to_bits
from hw.rtl.pe import PEParams
from tests.hw.rtl.hwsim import recv, run, send


def _random_params(rng, *, k, n, pe, simd, a_bits=1, mmv=1, pipeline=1, balanced=False, **kw):
    w = rng.integers(0, 2, (n, k), dtype=np.uint8)
    if balanced:  # every row has the same number of -1 weights: constant row offsets
        w[:] = 0
        w[:, : k // 2] = 1
        w = np.array([rng.permutation(row) for row in w])
    return MVUParams(k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv, weights=w, pipeline=pipeline, **kw)


def _random_inputs(rng, params, vectors):
    if params.a_bits == 1:
        return rng.integers(0, 2, (vectors, params.k))
    lo, hi = -(1 << (params.a_bits - 1)), (1 << (params.a_bits - 1))
    x = rng.integers(lo, hi, (vectors, params.k))
    x[0] = lo  # extremes: the largest |y| the accumulator must hold
    if vectors > 1:
        x[1] = hi - 1
    return x


def simulate(params, x, *, idle=0.0, stall=0.0, seed=0):
    """Run x through the RTL; returns (y (V, n), stats)."""
    dut = params.create()
    beats = params.pack_input(x)
    n_out = (x.shape[0] // params.mmv) * params.nf
    lanes = params.pe * params.mmv
    got, stats = [], {}

    async def producer(ctx):
        await send(ctx, dut.i, beats, np.random.default_rng(seed + 1), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, dut.o, n_out, np.random.default_rng(seed + 2), stall,
                              convert=lambda v: [v[j] for j in range(lanes)], stats=stats))

    budget = (len(beats) + n_out) * 4 + x.shape[0] // params.mmv * params.cycles_per_vector * 6 + 200
    run(dut, producer, consumer, deadline_cycles=budget)
    return params.unpack_output(got), stats


CASES = [
    # k, n, pe, simd, a_bits, mmv
    (16, 8, 2, 4, 1, 1),
    (12, 6, 3, 3, 1, 1),     # odd SIMD, odd K
    (32, 4, 4, 32, 1, 1),    # SF = 1, NF = 1
    (24, 8, 1, 8, 1, 2),     # MMV
    (16, 8, 4, 8, 2, 1),
    (18, 6, 2, 6, 4, 1),
    (16, 4, 2, 4, 8, 1),
    (16, 8, 2, 8, 4, 2),     # bit-serial with MMV
    (64, 8, 4, 64, 1, 1),    # the benchmark's SIMD 64 lane
]


@pytest.mark.parametrize("k,n,pe,simd,a_bits,mmv", CASES)
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.5)])
def test_mvu_matches_golden(k, n, pe, simd, a_bits, mmv, idle, stall):
    rng = np.random.default_rng(k * 131 + n * 7 + a_bits + mmv)
    params = _random_params(rng, k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv)
    x = _random_inputs(rng, params, 6 * mmv)
    y, _ = simulate(params, x, idle=idle, stall=stall, seed=k + n)
    assert np.array_equal(y, params.compute(x))


@pytest.mark.parametrize("pipeline", [0, 2, "max"])
@pytest.mark.parametrize("a_bits", [1, 3])
def test_mvu_pipeline_depths(pipeline, a_bits):
    rng = np.random.default_rng(5 + a_bits)
    pipe = params_max = None
    probe = _random_params(rng, k=16, n=4, pe=2, simd=8, a_bits=a_bits)
    pipe = probe.pe_params.max_pipeline if pipeline == "max" else pipeline
    params = _random_params(rng, k=16, n=4, pe=2, simd=8, a_bits=a_bits, pipeline=pipe)
    x = _random_inputs(rng, params, 5)
    y, _ = simulate(params, x, idle=0.2, stall=0.3, seed=pipe)
    assert np.array_equal(y, params.compute(x))


@pytest.mark.parametrize("a_bits", [1, 2])
def test_mvu_constant_row_offsets(a_bits):
    """Rows with equal N_w take the constant-table path instead of the offset ROM."""
    rng = np.random.default_rng(11)
    params = _random_params(rng, k=16, n=8, pe=2, simd=4, a_bits=a_bits, balanced=True)
    d, r = params.row_constants()
    assert np.all(d == d[0]) and np.all(r == r[0])
    x = _random_inputs(rng, params, 4)
    y, _ = simulate(params, x, idle=0.2, stall=0.2)
    assert np.array_equal(y, params.compute(x))


@pytest.mark.parametrize("k,n,pe,simd,a_bits,mmv", [
    (16, 8, 2, 4, 1, 1),    # NF = SF = 4: loading and computing balanced ... and
    (8, 2, 2, 8, 1, 1),     # NF = SF = 1: the tightest ping-pong case
    (16, 8, 4, 4, 2, 1),
    (12, 4, 4, 4, 1, 2),
])
def test_mvu_throughput(k, n, pe, simd, a_bits, mmv):
    """A burst with an always-ready output takes <= 1.10x the model's A*NF*SF per vector
    (after the fixed fill latency)."""
    rng = np.random.default_rng(3)
    params = _random_params(rng, k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv)
    groups = 24
    x = _random_inputs(rng, params, groups * mmv)
    y, stats = simulate(params, x)
    assert np.array_equal(y, params.compute(x))
    model = groups * params.cycles_per_vector
    fill = params.sf + params.latency  # first vector's load + pipeline
    assert stats["cycles"] <= 1.10 * model + fill, (stats, model, fill)
    # steady state: exactly one group per A*NF*SF cycles, measured between first and last beat
    per_fold = params.a_bits * params.sf
    assert stats["cycles"] - stats["first"] == (groups - 1) * params.cycles_per_vector + (params.nf - 1) * per_fold


@pytest.mark.parametrize("a_bits,balanced,buffer", [(1, False, "auto"), (4, False, "block"), (2, True, "logic")])
def test_mvu_verilog(a_bits, balanced, buffer):
    rng = np.random.default_rng(4)
    params = _random_params(rng, k=32, n=8, pe=4, simd=8, a_bits=a_bits, mmv=2, balanced=balanced,
                            buffer=buffer)
    text = verilog.convert(params.create(), name="mvu")
    assert "module mvu" in text and "o__payload" in text and "i__ready" in text
    assert (f'ram_style = "{buffer}"' in text) == (buffer != "auto")


def test_mvu_create_wrong_params():
    with pytest.raises(BinbertError, match="MVUParams"):
        MatrixVectorUnit(object())


def test_rom_words_layout():
    """Word nf*SF+sf holds rows nf*PE+p at bits [p*SIMD, (p+1)*SIMD) (§2), checked bit by bit."""
    rng = np.random.default_rng(0)
    params = _random_params(rng, k=12, n=6, pe=3, simd=4)
    words = params.rom_words()
    assert len(words) == params.nf * params.sf
    for f in range(params.nf):
        for s in range(params.sf):
            word = words[f * params.sf + s]
            for q in range(params.pe):
                for j in range(params.simd):
                    assert (word >> (q * params.simd + j)) & 1 == params.weights[f * params.pe + q, s * params.simd + j]
    back = MVUParams.weights_from_rom(words, k=12, n=6, pe=3, simd=4)
    assert np.array_equal(back, params.weights)


def test_row_offsets_and_constants():
    rng = np.random.default_rng(1)
    for a_bits in (1, 2, 5):
        params = _random_params(rng, k=20, n=5, pe=1, simd=4, a_bits=a_bits)
        nw = params.row_offsets()
        assert np.array_equal(nw, (params.weights == 0).sum(1))
        assert np.array_equal(nw, arith.neg_count(params.packed_weights(), 20))
        d, r = params.row_constants()
        if a_bits == 1:
            assert np.all(d == -10)
        else:
            assert np.all((0 <= r) & (r < (1 << (a_bits - 1))))
            assert np.array_equal(d * (1 << (a_bits - 1)) + r, nw - (20 << (a_bits - 1)))


def test_params_pm1_weights_and_pack_roundtrip():
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2, (4, 8))
    a = MVUParams(k=8, n=4, pe=2, simd=4, weights=bits)
    b = MVUParams(k=8, n=4, pe=2, simd=4, weights=bits * 2 - 1)
    assert np.array_equal(a.weights, b.weights)
    assert a.cycles_per_vector == 2 * 2 and a.acc_width == arith.acc_width(8, 1)
    c = MVUParams(k=8, n=4, pe=2, simd=4, weights=bits, a_bits=3, mmv=2)
    assert c.cycles_per_vector == 3 * 2 * 2 and c.in_width == 4 * 3 * 2


@pytest.mark.parametrize("kwargs,match", [
    ({"pe": 3}, "pe=3 does not divide n=16"),
    ({"simd": 5}, "simd=5 does not divide k=8"),
    ({"pe": 0}, "pe=0"),
    ({"simd": -1}, "simd=-1"),
    ({"k": 0}, "k=0"),
    ({"n": "16"}, "n='16'"),
    ({"mmv": 0}, "mmv=0"),
    ({"a_bits": 0}, "a_bits=0"),
    ({"a_bits": 9}, "a_bits=9"),
    ({"pipeline": -1}, "pipeline=-1"),
    ({"pipeline": 9}, "pipeline=9"),
    ({"weights": np.zeros((16, 7))}, r"weights have shape \(16, 7\)"),
    ({"weights": np.zeros(8)}, "2-D"),
    ({"weights": np.full((16, 8), 2)}, "weights must be all"),
    ({"weights": np.array([[0, -1] * 4] * 16)}, "weights must be all"),
    ({"weights": np.full((16, 8), "a")}, "numeric"),
    ({"buffer": "bram"}, "buffer='bram' must be one of"),
])
def test_mvu_params_errors(kwargs, match):
    base = dict(k=8, n=16, pe=4, simd=4, weights=np.ones((16, 8), dtype=int))
    base.update(kwargs)
    with pytest.raises(BinbertError, match=match):
        MVUParams(**base)


def test_mvu_compute_errors():
    p = MVUParams(k=8, n=4, pe=2, simd=4, weights=np.ones((4, 8), dtype=int))
    with pytest.raises(BinbertError, match="shape"):
        p.compute(np.zeros((2, 7), dtype=int))
    with pytest.raises(BinbertError, match="bits"):
        p.compute(np.full((2, 8), 2))
    q = MVUParams(k=8, n=4, pe=2, simd=4, weights=np.ones((4, 8), dtype=int), a_bits=2)
    with pytest.raises(BinbertError, match="range"):
        q.compute(np.full((2, 8), 2))
    r = MVUParams(k=8, n=4, pe=2, simd=4, weights=np.ones((4, 8), dtype=int), mmv=2)
    with pytest.raises(BinbertError, match="multiple of mmv"):
        r.pack_input(np.zeros((3, 8), dtype=int))
    with pytest.raises(BinbertError, match="ROM has 3 words"):
        MVUParams.weights_from_rom([0, 0, 0], k=8, n=4, pe=2, simd=4)


def test_weights_to_bits_forms():
    pm1 = np.array([[1, -1, -1, 1]])
    assert weights_to_bits(pm1).tolist() == [[1, 0, 0, 1]]
    assert weights_to_bits(pm1 > 0).tolist() == [[1, 0, 0, 1]]
    assert weights_to_bits(np.array([[1.0, 0.0]])).tolist() == [[1, 0]]
    bits = weights_to_bits(np.ones((2, 2), dtype=int))
    with pytest.raises(ValueError):
        bits[0, 0] = 0  # read-only: the params object is frozen, its arrays too


def test_params_are_frozen():
    p = PEParams(simd=4)
    with pytest.raises(AttributeError):
        p.simd = 8
    q = _random_params(np.random.default_rng(0), k=8, n=4, pe=2, simd=4)
    with pytest.raises(AttributeError):
        q.pe = 4
    with pytest.raises(ValueError):
        q.weights[0, 0] = 1


@pytest.mark.parametrize("a_bits", [1, 2, 5, 8])
def test_mvu_compute_is_integer_matmul(a_bits):
    """The golden MVU equals a plain integer matmul of the values (odd K)."""
    rng = np.random.default_rng(a_bits)
    p = _random_params(rng, k=21, n=6, pe=3, simd=7, a_bits=a_bits)
    if a_bits == 1:
        x = rng.integers(0, 2, (5, 21))
        xv = 2 * x - 1
    else:
        x = rng.integers(-(1 << (a_bits - 1)), 1 << (a_bits - 1), (5, 21))
        xv = x
    assert np.array_equal(p.compute(x), xv @ (2 * p.weights.astype(np.int64) - 1).T)


@pytest.mark.parametrize("a_bits,mmv", [(1, 1), (3, 2)])
def test_pack_input_layout(a_bits, mmv):
    """Beat sf, bits [(v*SIMD+s)*A, +A) = the A-bit pattern of element sf*SIMD+s of vector v."""
    rng = np.random.default_rng(7)
    p = _random_params(rng, k=12, n=4, pe=2, simd=4, a_bits=a_bits, mmv=mmv)
    lo = 0 if a_bits == 1 else -(1 << (a_bits - 1))
    x = rng.integers(lo, 1 << max(0, a_bits - 1) if a_bits > 1 else 2, (2 * mmv, 12))
    beats = p.pack_input(x)
    assert len(beats) == 2 * p.sf
    for g in range(2):
        for f in range(p.sf):
            beat = beats[g * p.sf + f]
            for v in range(mmv):
                for s in range(p.simd):
                    got = (beat >> ((v * p.simd + s) * a_bits)) & ((1 << a_bits) - 1)
                    assert got == int(x[g * mmv + v, f * p.simd + s]) % (1 << a_bits)
    y = p.compute(x)
    beats_out = [[int(y[g * mmv + v, f * p.pe + q]) for v in range(mmv) for q in range(p.pe)]
                 for g in range(2) for f in range(p.nf)]
    assert np.array_equal(p.unpack_output(beats_out), y)
