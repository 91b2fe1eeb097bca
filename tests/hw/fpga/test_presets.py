"""hw/fpga/presets.py: models/hw/*.yaml -> the encoder layer a bitstream implements.

Every shipped preset loads and reproduces the layer hw/golden/random.py draws for the same shape (the
layer the cocotb bench checks); every bad file/key/value is a one-line FILE:LINE error; an
export directory replaces the random ops with its trained layer at the preset's folding.
"""
from pathlib import Path

import numpy as np
import pytest
import yaml

from hw.fpga import presets
from hw.rtl.encoder_layer import folding_for
from hw.errors import BinbertError

BASE = presets.PRESET_DIR / "encoder-tiny.yaml"


def _write(tmp_path, text, name="encoder-x.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _edited(tmp_path, **changes):
    """The tiny preset with keys replaced (value None: removed), as a file."""
    data = yaml.safe_load(BASE.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    return _write(tmp_path, yaml.safe_dump(data, sort_keys=False))


def _same_layer(a, b):
    """Two EncoderLayers hold the same binary weights and folded constants."""
    for name in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out"):
        la, lb = getattr(a, name), getattr(b, name)
        assert np.array_equal(la.weights, lb.weights), name
        assert np.array_equal(la.out.mult if hasattr(la.out, "mult") else la.out.index.mult,
                              lb.out.mult if hasattr(lb.out, "mult") else lb.out.index.mult), name
    assert np.array_equal(a.ln1.gamma, b.ln1.gamma) and np.array_equal(a.ln2.beta, b.ln2.beta)
    assert type(a.attention.probs) is type(b.attention.probs)


FOLD = ("seq_len", "lanes", "pe_qkv", "simd_qkv", "pe_o", "simd_o", "pe_ffn1", "simd_ffn1",
        "pe_ffn2", "simd_ffn2", "ln_multiplier")


@pytest.mark.parametrize("name", ["tiny", "tiny-bi", "micro-bi"])
def test_shipped_preset_is_the_simulators_layer(name):
    """Each shipped preset = hw.golden.random's random pair at its shape (split first, then BiBERT),
    folded at its MAC budget; by name and by path alike."""
    from hw.golden.random import CONFIG_SEED, random_layer_pair

    pre = presets.load_preset(name)
    assert pre.name == name and presets.load_preset(presets.resolve(name)) == pre
    split, bi = random_layer_pair(np.random.default_rng(CONFIG_SEED), hidden=pre.hidden,
                                  heads=pre.heads, ffn=pre.ffn, max_len=pre.seq_len)
    want = folding_for(bi if pre.attention == "bi" else split, seq_len=pre.seq_len,
                       macs=pre.macs, lanes=pre.lanes, ln_multiplier=pre.layernorm)
    got = presets.bitstream_params(name)
    _same_layer(got.layer, want.layer)
    assert [getattr(got, f) for f in FOLD] == [getattr(want, f) for f in FOLD]
    assert got.layer.qkv_in.out_bits == pre.activation_bits
    assert got.layer.query.terms == pre.weight_terms


def test_spec_figures():
    spec = presets.bitstream_spec("tiny-bi")
    p = spec["params"]
    assert spec["macs_per_cycle"] == sum(u.pe * u.simd for u in (
        *p.attention.projections, p.attention.out_proj, p.ffn.lin1, p.ffn.lin2))
    assert spec["cycles_per_vector"] == -(-p.cycles_per_sequence // p.seq_len)
    assert spec["describe"]["cycles_per_sequence"] == p.cycles_per_sequence
    assert spec["a_bits"] == 1 and spec["describe"]["weights"].startswith("seeded random")


def test_other_bit_widths_draw_their_own_layer(tmp_path):
    """Not one of the simulator's two kinds: a layer of the requested widths and terms."""
    path = _edited(tmp_path, hidden=16, ffn=32, seq_len=4, activation_bits=2, weight_terms=1,
                   macs=16, lanes=4)
    p = presets.bitstream_params(path)
    lyr = p.layer
    assert (lyr.qkv_in.out_bits, lyr.ffn_in_q.out_bits, lyr.query.in_bits) == (2, 2, 2)
    assert lyr.query.terms == 1 and p.hidden == 16 and p.lanes == 4 and p.seq_len == 4
    assert type(lyr.attention.probs).__name__ == "Softmax"
    other = presets.bitstream_params(_edited(tmp_path, hidden=16, ffn=32, seq_len=4,
                                             activation_bits=2, weight_terms=1, macs=16,
                                             lanes=4, seed=7))
    assert not np.array_equal(other.layer.query.weights, lyr.query.weights)  # the seed is used


def test_mvu_buffer_reaches_every_mvu(tmp_path):
    """The preset's mvu_buffer maps every MVU's input buffer (micro-bi: block RAM); default auto."""
    def buffers(config):
        p = presets.bitstream_params(config)
        units = (*p.attention.projections, p.attention.out_proj, p.ffn.lin1, p.ffn.lin2)
        return {u.mvu.buffer for u in units}

    assert buffers("micro-bi") == {"block"}
    assert buffers("tiny") == {"auto"}
    assert buffers(_edited(tmp_path, mvu_buffer="logic")) == {"logic"}


@pytest.mark.parametrize("text,match", [
    ("hiden: 64\n", r":\d+: unknown key 'hiden' \(did you mean 'hidden'\?\)"),
    ("hidden: sixty\n", r":\d+: hidden must be an integer, not 'sixty'"),
    ("macs: true\n", r":\d+: macs must be an integer, not True"),
    ("lanes: 0\n", r":\d+: lanes 0 out of range: must be >= 1"),
    ("activation_bits: 9\n", r":\d+: activation_bits 9 out of range: must be in 1..8"),
    ("heads: 3\n", r":\d+: heads 3 does not divide hidden 64"),
    ("lanes: 3\n", r":\d+: lanes 3 does not divide hidden 64"),
    ("attention: linear\n", r":\d+: attention 'linear' unknown: choose softmax or bi"),
    ("layernorm: dsp\n", r":\d+: layernorm 'dsp' unknown: choose parallel or shared"),
    ("target: ice40-hx8k\n", r":\d+: target 'ice40-hx8k' unknown"),
    ("mvu_buffer: sram\n", r":\d+: mvu_buffer 'sram' unknown: choose one of auto, block"),
    # a cross-key check names the line of the value to change
    ("attention: bi\n", r":\d+: activation_bits 4: Bi-Attention .* use activation_bits 1"),
    ("description: [a, b]\n", r":\d+: description must be a single value, not a list"),
    ("ckpt: 3\n", r":\d+: ckpt must be a string, not 3"),
])
def test_bad_value_names_file_line_key(tmp_path, text, match):
    """One changed line (appended last): the error names the file and the line of the key it
    complains about."""
    key = text.split(":")[0]
    lines = [ln for ln in BASE.read_text().splitlines() if not ln.startswith(key + ":")]
    lines.append(text.rstrip("\n"))
    path = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(BinbertError, match=match) as exc:
        presets.load_preset(path)
    msg = str(exc.value)
    named = msg.split(": ", 1)[1].split()[0]  # 'hidden', 'lanes', ... or 'unknown'
    named = key if named in ("unknown", "target") else named
    line = next(i for i, ln in enumerate(lines, 1) if ln.startswith(named + ":"))
    assert msg.startswith(f"{path}:{line}: ") and "\n" not in msg


@pytest.mark.parametrize("text,match", [
    ("hidden: 64\nhidden: 32\n", r":2: duplicate key 'hidden'"),
    ("hidden: [64\n", r": YAML syntax error"),
    ("- 64\n", r":1: a hardware preset must be a mapping"),
    ("", r":1: a hardware preset must be a mapping"),
])
def test_bad_file(tmp_path, text, match):
    with pytest.raises(BinbertError, match=match):
        presets.load_preset(_write(tmp_path, text))


def test_missing_key(tmp_path):
    with pytest.raises(BinbertError, match=r":1: missing required key 'macs'"):
        presets.load_preset(_edited(tmp_path, macs=None))


def test_training_config_passed_by_mistake():
    """models/demo.yaml (the Makefile's CONFIG default) is recognised and named as such."""
    demo = Path(__file__).resolve().parents[3] / "models" / "demo.yaml"
    with pytest.raises(BinbertError, match=r"demo.yaml: this is a training config \(keys model, "
                                           r"data, .*\), not a hardware preset: pass a "
                                           r"models/hw/encoder-\*.yaml"):
        presets.load_preset(demo)


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(BinbertError, match=r"unknown encoder config 'huge': choose one of "
                                           r"micro-bi, tiny-bi, tiny or a models/hw"):
        presets.bitstream_spec("huge")
    with pytest.raises(BinbertError, match=r"nope.yaml: hardware preset not found \(shipped: "):
        presets.load_preset(tmp_path / "nope.yaml")
    assert set(presets.BITSTREAM_CONFIGS) == {"tiny", "tiny-bi", "micro-bi"}


def test_missing_checkpoint_names_the_preset(tmp_path):
    with pytest.raises(BinbertError, match=r"encoder-tiny.yaml: --ckpt .*missing: no such "
                                           r"checkpoint or export directory"):
        presets.bitstream_params("tiny", ckpt=tmp_path / "missing")


@pytest.fixture(scope="module")
def bi_export(tmp_path_factory):
    """A 1-layer BiBERT model (hidden 16, 2 heads, ffn 32), exported."""
    from tests.sw.chain_models import exported_tiny

    return exported_tiny(tmp_path_factory, "bi", vocab=64, hidden=16, layers=1, heads=2, inter=32, max_pos=16)


def test_export_replaces_the_random_ops(bi_export, tmp_path):
    """--export: the export's layer 0, folded at the preset's MAC budget; lanes that do not
    divide its width fall back to one feature per beat; layer_index is range-checked."""
    from hw.golden.export_format import load_params

    layer = load_params(bi_export)[0].layers[0]
    p = presets.bitstream_params("micro-bi", ckpt=bi_export)
    _same_layer(p.layer, layer)
    pre = presets.load_preset("micro-bi")
    want = folding_for(layer, seq_len=pre.seq_len, macs=pre.macs, lanes=pre.lanes,
                       ln_multiplier=pre.layernorm)
    assert [getattr(p, f) for f in FOLD] == [getattr(want, f) for f in FOLD]
    spec = presets.bitstream_spec("micro-bi", ckpt=bi_export)
    assert spec["describe"]["weights"] == f"layer 0 of {bi_export}"
    odd = _edited(tmp_path, lanes=3, hidden=48, heads=2, ckpt=str(bi_export))  # 16 % 3 != 0
    assert presets.bitstream_params(odd).lanes == 1
    with pytest.raises(BinbertError, match=r"encoder-x.yaml: layer_index 1 out of range: .* "
                                           r"has 1 layers"):
        presets.bitstream_params(_edited(tmp_path, layer_index=1), ckpt=bi_export)


def test_a_checkpoint_directory_goes_through_the_callers_loader(bi_export, tmp_path):
    """hw reads export directories itself; any other directory (a checkpoint) is resolved by the
    ``load`` callable the caller passes, and without one it is a one-line error."""
    from hw.golden.export_format import load_params

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with pytest.raises(BinbertError, match=r"encoder-micro-bi.yaml: --ckpt .*ckpt: not an export "
                                           r"directory \(no manifest.json\)"):
        presets.bitstream_params("micro-bi", ckpt=ckpt)
    seen = []

    def load(path):
        seen.append(path)
        params, meta = load_params(bi_export)
        return params, meta, "minilm"

    p = presets.bitstream_params("micro-bi", ckpt=ckpt, load=load)
    assert seen == [ckpt]
    _same_layer(p.layer, load_params(bi_export)[0].layers[0])
    spec = presets.bitstream_spec("micro-bi", ckpt=ckpt, load=load)
    assert spec["describe"]["weights"] == f"layer 0 of {ckpt}"
    presets.bitstream_params("micro-bi", ckpt=bi_export, load=load)
    assert seen == [ckpt, ckpt]  # an export directory never reaches the loader
