"""Every params class of hw/rtl is a BlockParams (compute, create, latency, cycles), and
``cycles`` is the steady-state rate the simulated block reaches where it is exact (PE, MVU,
requantizer: one item per ``cycles`` cycles, back to back)."""
import dataclasses
import functools
import importlib
import pkgutil

import numpy as np
import pytest

import hw.rtl
from hw.golden.random import random_encoder_layer
from hw.rtl.block import BlockParams
from hw.rtl.encoder_layer import folding_for
from hw.rtl.mvu import MVUParams
from hw.rtl.pe import PEParams
from tests.hw.rtl.hwsim import recv, run, send


def _params_classes() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(hw.rtl.__path__):
        mod = importlib.import_module(f"hw.rtl.{info.name}")
        found += [c for c in vars(mod).values() if isinstance(c, type) and c.__module__ == mod.__name__
                  and dataclasses.is_dataclass(c) and c.__name__.endswith("Params")]
    return sorted(found, key=lambda c: c.__name__)


def _reachable(root) -> dict[type, object]:
    """One instance of every params class reachable from ``root`` through its fields and
    properties (an encoder layer reaches every block it is made of)."""
    classes = set(_params_classes())
    seen, todo = {}, [root]
    while todo:
        obj = todo.pop()
        if type(obj) in seen:
            continue
        seen[type(obj)] = obj
        names = {f.name for f in dataclasses.fields(obj)}
        names |= {name for cls in type(obj).__mro__ for name, attr in vars(cls).items()
                  if isinstance(attr, (property, functools.cached_property))}
        for name in sorted(names):
            value = getattr(obj, name)
            todo += [v for v in (value if isinstance(value, tuple) else (value,)) if type(v) in classes]
    return seen


def _encoder():
    layer = random_encoder_layer(np.random.default_rng(5), hidden=16, heads=2, ffn=32, max_len=4,
                                 mode="softmax", terms=2, x_bits=2, c_bits=2)
    return folding_for(layer, seq_len=4, macs=32, lanes=4)


def test_every_params_class_is_a_block_params():
    classes = _params_classes()
    assert {c.__name__ for c in classes} >= {
        "PEParams", "MVUParams", "RequantUnitParams", "LinearUnitParams", "LayerNormUnitParams",
        "AddNormParams", "ProbsParams", "AttentionCoreParams", "AttentionParams", "FfnParams",
        "EncoderLayerParams"}
    instances = _reachable(_encoder())
    for cls in classes:
        for name in ("compute", "create"):
            assert callable(getattr(cls, name, None)), (cls.__name__, name)
        for name in ("latency", "cycles"):
            member = getattr(cls, name, None)
            assert isinstance(member, (property, functools.cached_property)), (cls.__name__, name)
        assert cls.cycles.__doc__ and "per " in cls.cycles.__doc__, f"{cls.__name__}.cycles names no item"
        assert cls in instances, f"no {cls.__name__} reachable from an encoder layer"
        p = instances[cls]
        assert isinstance(p, BlockParams)
        assert isinstance(p.cycles, int) and p.cycles >= 1 and isinstance(p.latency, int)


def test_old_cycle_names_are_the_one_model():
    p = _encoder()
    assert p.cycles_per_sequence == p.cycles
    assert p.ffn.cycles_per_token == p.ffn.cycles
    assert p.ffn.addnorm.norm.cycles_per_token == p.ffn.addnorm.norm.cycles
    mvu = p.attention.out_proj.mvu
    assert mvu.cycles_per_vector == mvu.cycles == p.attention.out_proj.cycles


def _item_ends(params, items, *, out_per_item: int):
    """Back-to-back items (lists of input payloads) with an always-ready output -> the cycle
    of each item's last output beat."""
    dut = params.create()
    beats = [b for item in items for b in item]
    stats = {}

    async def producer(ctx):
        await send(ctx, dut.i, beats, np.random.default_rng(0))

    async def consumer(ctx):
        await recv(ctx, dut.o, out_per_item * len(items), np.random.default_rng(1), stats=stats)

    run(dut, producer, consumer)
    return stats["each"][out_per_item - 1::out_per_item]


def _pe_items(rng, count):
    params = PEParams(simd=12, pipeline=2)
    bits = rng.integers(0, 1 << 12, (count, 2))
    return params, [[{"x": int(x), "w": int(w)}] for x, w in bits], 1


def _mvu_items(rng, count, *, k=16, n=8, pe=2, simd=4, a_bits=2, mmv=1):
    params = MVUParams(k=k, n=n, pe=pe, simd=simd, a_bits=a_bits, mmv=mmv,
                       weights=rng.integers(0, 2, (n, k), dtype=np.uint8))
    x = rng.integers(-(1 << (a_bits - 1)), 1 << (a_bits - 1), (count * mmv, k))
    beats = params.pack_input(x)
    return params, [beats[g * params.sf:(g + 1) * params.sf] for g in range(count)], params.nf


def _requant_items(rng, count):
    from hw.golden.random import random_requant
    from hw.rtl.requant import RequantUnitParams

    op = random_requant(rng, rows=12, terms=2, acc_bits=9, out_bits=4, real_scale=0.02)
    params = RequantUnitParams(op=op, n=12, lanes=3)
    accs = rng.integers(-256, 256, (count, params.beats, params.lanes * params.terms))
    return params, [[[int(a) for a in beat] for beat in vec] for vec in accs], params.beats


@pytest.mark.parametrize("build", [_pe_items, _mvu_items, _requant_items], ids=["pe", "mvu", "requant"])
def test_cycles_is_the_simulated_steady_state(build):
    rng = np.random.default_rng(11)
    count = 12
    params, items, out_per_item = build(rng, count)
    ends = _item_ends(params, items, out_per_item=out_per_item)
    assert len(ends) == count
    assert all(b - a == params.cycles for a, b in zip(ends, ends[1:])), (ends, params.cycles)


def test_child_params_are_built_once_and_stay_out_of_pickles():
    """The parts are cached on first use; a pickle (sim.runner.params_key, the benches' copy)
    and the repr hold the fields only, whatever was looked at, and an unpickled copy rebuilds
    its parts."""
    import pickle

    from sim.runner import params_key

    p = _encoder()
    fresh = _encoder()
    before, text = pickle.dumps(fresh, protocol=4), repr(fresh)
    key = params_key(fresh)
    assert p.attention is p.attention and p.ffn.lin1 is p.ffn.lin1
    assert p.attention.out_proj.mvu is p.attention.out_proj.mvu
    _reachable(fresh)  # touches every part of every block
    assert "core" in vars(fresh.attention) and "mvu" in vars(fresh.ffn.lin2)
    assert pickle.dumps(fresh, protocol=4) == before and params_key(fresh) == key
    assert repr(fresh) == text and fresh != p and hash(fresh) != hash(p)  # eq=False: identity
    copy = pickle.loads(before)
    assert "attention" not in vars(copy) and copy.cycles == fresh.cycles
    assert np.array_equal(copy.ffn.lin1.mvu.weights, fresh.ffn.lin1.mvu.weights)
