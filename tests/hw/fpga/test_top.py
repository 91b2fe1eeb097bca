"""hw/fpga/top.py: byte-stream width converters around real blocks == the blocks' golden models."""
import numpy as np
import pytest
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In

from hw.errors import BinbertError
from hw.fpga.targets import TARGETS
from hw.rtl.pe import PEParams
from hw.fpga.top import BUS_BITS, BoardTop, ByteStreamTop, Deserializer, Serializer, board_resources
from tests.hw.rtl.hwsim import recv, run, send


def to_bytes(values, width):
    """Integers of ``width`` bits -> the byte stream (LSB byte first) hw/fpga/top.py carries."""
    n = -(-width // BUS_BITS)
    return [(int(v) >> (BUS_BITS * i)) & 0xFF for v in values for i in range(n)]


def from_bytes(data, width):
    n = -(-width // BUS_BITS)
    assert len(data) % n == 0
    return [sum(b << (BUS_BITS * i) for i, b in enumerate(data[j:j + n])) & ((1 << width) - 1)
            for j in range(0, len(data), n)]


def bits_to_int(bits):
    return sum(int(b) << i for i, b in enumerate(bits))


def run_bytes(top, data_in, n_out, idle, stall, seed):
    got = []

    async def producer(ctx):
        await send(ctx, top.byte_i, data_in, np.random.default_rng(seed), idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, top.byte_o, n_out, np.random.default_rng(seed + 1), stall))

    run(top, producer, consumer, deadline_cycles=40 * (len(data_in) + n_out) + 200)
    return got


@pytest.mark.parametrize("simd", [5, 16, 64])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_pe_behind_bytes_matches_golden(simd, idle, stall):
    params = PEParams(simd=simd, pipeline=2)
    top = ByteStreamTop(params.create())
    rng = np.random.default_rng(simd)
    count = 12
    x = rng.integers(0, 2, (count, simd), dtype=np.uint8)
    w = rng.integers(0, 2, (count, simd), dtype=np.uint8)
    # the PE's payload is StructLayout {x, w}: x in the low simd bits, w above
    words = [bits_to_int(a) | (bits_to_int(b) << simd) for a, b in zip(x, w)]
    assert top.in_width == 2 * simd and top.out_width == params.out_width
    data = to_bytes(words, top.in_width)
    got = run_bytes(top, data, count * top.out_bytes, idle, stall, seed=simd)
    assert from_bytes(got, top.out_width) == params.compute(x, w).tolist()


def test_mvu_behind_bytes_matches_golden():
    from hw.rtl.mvu import MVUParams

    rng = np.random.default_rng(5)
    k, n, pe, simd = 24, 8, 4, 8
    params = MVUParams(k=k, n=n, pe=pe, simd=simd, weights=rng.integers(0, 2, (n, k)), a_bits=2)
    top = ByteStreamTop(params.create())
    x = rng.integers(-2, 2, (3, k))
    beats_in = params.pack_input(x)
    data = to_bytes(beats_in, top.in_width)
    n_beats = len(x) * params.nf
    got = from_bytes(run_bytes(top, data, n_beats * top.out_bytes, 0.2, 0.3, seed=9),
                     top.out_width)
    aw = params.acc_width
    lanes = [[(b >> (aw * p)) & ((1 << aw) - 1) for p in range(pe)] for b in got]
    signed = [[v - (1 << aw) if v >> (aw - 1) else v for v in beat] for beat in lanes]
    assert np.array_equal(params.unpack_output(signed), params.compute(x))


@pytest.mark.parametrize("width", [1, 8, 9, 20])
def test_converters_round_trip(width):
    """Deserializer then Serializer of the same width is the identity on the byte stream."""
    class Loop(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(stream.Signature(width)),
                              "o": wiring.Out(stream.Signature(width))})

        def elaborate(self, platform):
            from amaranth import Module
            m = Module()
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m

    top = ByteStreamTop(Loop())
    rng = np.random.default_rng(width)
    words = rng.integers(0, 1 << width, 10).tolist()
    data = to_bytes(words, width)
    got = run_bytes(top, data, len(data), 0.2, 0.2, seed=width)
    assert from_bytes(got, width) == words


@pytest.mark.parametrize("cls", [Deserializer, Serializer])
@pytest.mark.parametrize("width", [0, -3, 2.5, "8"])
def test_converter_rejects_bad_width(cls, width):
    with pytest.raises(BinbertError, match="width"):
        cls(width=width)


def test_top_rejects_block_without_streams():
    class NoStreams:
        o = None

    with pytest.raises(BinbertError, match="no stream port 'i'"):
        ByteStreamTop(NoStreams())


def test_board_resources_unknown_family():
    with pytest.raises(BinbertError, match="unknown family 'xc7'"):
        board_resources("xc7")


@pytest.mark.parametrize("target", list(TARGETS))
def test_board_top_binds_pins(target):
    """Both boards: 20 byte-stream pins + the clock are located in the constraint file."""
    t = TARGETS[target]
    platform = t.platform()
    resources = board_resources(t.family)
    platform.add_resources(resources)
    plan = platform.prepare(BoardTop(lambda: PEParams(simd=8, pipeline=1).create()), name="top")
    cons = plan.files["top.pcf" if t.family == "ice40" else "top.lpf"]
    pins = sum(len(sub.ios[0].names) for r in resources for sub in r.ios)
    keyword = "set_io" if t.family == "ice40" else "LOCATE COMP"
    located = [ln for ln in cons.splitlines() if ln.startswith(keyword)]
    assert len(located) == pins + 1  # + the board clock
    assert all("byte_" in ln for ln in located if "clk" not in ln)
