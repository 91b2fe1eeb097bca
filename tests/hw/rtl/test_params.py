"""Parameter objects (hw/rtl/params.py): validation errors (one test per bad parameter), the golden
models' small helpers (ROM layout, row constants, stream packing) and the §8 scale folding."""
import numpy as np
import pytest

from hw.golden import arith
from hw.errors import BinbertError
from hw.rtl.params import MVUParams, PEParams, RequantParams, tree_levels, weights_to_bits


def _random_params(rng, *, k, n, pe, simd, a_bits=1, mmv=1):
    return MVUParams(k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv,
                     weights=rng.integers(0, 2, (n, k), dtype=np.uint8))


def test_pe_params_compute_rows():
    p = PEParams(simd=5)
    x = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    w = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    # computed independently of hw.golden.arith: count equal positions
    assert p.compute(x, w).tolist() == (x == w).sum(1).tolist()


@pytest.mark.parametrize("kwargs,match", [
    ({"simd": 0}, "simd=0"),
    ({"simd": 2.5}, "simd=2.5"),
    ({"simd": 8, "pipeline": -1}, "pipeline=-1"),
    ({"simd": 8, "pipeline": 9}, "pipeline=9"),
    ({"simd": True}, "simd=True"),
])
def test_pe_params_errors(kwargs, match):
    with pytest.raises(BinbertError, match=match):
        PEParams(**kwargs)


def test_pe_params_compute_shape_error():
    with pytest.raises(BinbertError, match="x_bits"):
        PEParams(simd=4).compute(np.zeros((2, 3)), np.zeros((2, 4)))


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


def test_from_scales_folds_per_section8():
    n = 6
    rng = np.random.default_rng(2)
    alpha = rng.uniform(0.01, 0.2, (2, n))
    beta = rng.uniform(-3, 3, n)
    s_x, s_y = 0.05, 0.11
    p = RequantParams.from_scales(n=n, lanes=3, acc_width=10, s_x=s_x, alpha=alpha, beta=beta,
                                  s_y=s_y, out_bits=4)
    assert p.terms == 2 and p.m.max() < (1 << 16)
    assert p.m.max() >= (1 << 15)  # the largest shift: the top multiplier uses the top bit
    real = s_x * alpha / s_y
    assert np.all(np.abs(p.m / 2.0**p.shift - real) <= 2.0 ** -(p.shift + 1))
    assert np.array_equal(p.b, np.floor(beta / s_y * 2.0**p.shift + 0.5).astype(np.int64))
    # the folded integer path approximates the real requantization
    accs = rng.integers(-512, 512, (2, 50, n))
    real_y = np.clip(np.floor((s_x * (alpha[0] * accs[0] + alpha[1] * accs[1]) + beta) / s_y + 0.5), -8, 7)
    assert np.mean(p.compute(accs) == real_y) > 0.95


@pytest.mark.parametrize("kwargs,match", [
    ({"lanes": 5}, "lanes=5 does not divide n=12"),
    ({"lanes": 0}, "lanes=0"),
    ({"n": 0}, "n=0"),
    ({"shift": 0}, "shift=0"),
    ({"out_bits": 0}, "out_bits=0"),
    ({"out_bits": 9}, "out_bits=9"),
    ({"acc_width": 1}, "acc_width=1"),
    ({"terms": 0}, "terms=0"),
    ({"m_bits": 0}, "m_bits=0"),
    ({"m": [1 << 16]}, "m values"),
    ({"m": [-1]}, "m values"),
    ({"m": [[1, 2]]}, r"m has shape \(1, 2\)"),
    ({"m": [0.5]}, "m must hold integers"),
    ({"b": np.zeros(5, dtype=int)}, r"b has shape \(5,\)"),
    ({"b": "x"}, "b must hold integers"),
])
def test_requant_params_errors(kwargs, match):
    base = dict(n=12, lanes=4, acc_width=8, m=[3], b=0, shift=4, out_bits=4)
    base.update(kwargs)
    with pytest.raises(BinbertError, match=match):
        RequantParams(**base)


@pytest.mark.parametrize("kwargs,match", [
    ({"s_x": 0.0}, "s_x=0.0"),
    ({"s_y": float("nan")}, "s_y=nan"),
    ({"alpha": [[0.1, 0.2]]}, "alpha has shape"),
    ({"alpha": [-0.1]}, "alpha must be finite"),
    ({"beta": [float("inf")] * 4}, "beta must be finite"),
])
def test_from_scales_errors(kwargs, match):
    base = dict(n=4, lanes=2, acc_width=8, s_x=0.1, alpha=[0.2], s_y=0.3, out_bits=4)
    base.update(kwargs)
    with pytest.raises(BinbertError, match=match):
        RequantParams.from_scales(**base)


def test_requant_compute_errors():
    p = RequantParams(n=4, lanes=2, acc_width=6, m=[3], b=0, shift=2, out_bits=2)
    with pytest.raises(BinbertError, match="expected"):
        p.compute(np.zeros((4,)))
    with pytest.raises(BinbertError, match="acc_width=6"):
        p.compute(np.full((1, 2, 4), 32))


def test_z_width_holds_extremes():
    p = RequantParams(n=1, lanes=1, terms=2, acc_width=9, m=[65535, 65535], b=[-(1 << 30)], shift=3,
                      out_bits=8)
    zmin = 2 * (-256 * 65535) - (1 << 30)
    assert -(1 << (p.z_width - 1)) <= zmin


def test_tree_levels():
    # level 0 is the XNORs; then ceil(log2(simd)) adder levels
    assert [tree_levels(s) for s in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 3, 3, 4, 7, 8]
    assert PEParams(simd=64).max_pipeline == 7 and PEParams(simd=64, pipeline=3).latency == 3


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
