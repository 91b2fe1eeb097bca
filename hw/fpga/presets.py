"""Hardware presets: ``models/hw/*.yaml`` -> the encoder layer ``binbert bitstream --layer
encoder`` implements.

A preset is a flat YAML mapping (variants are configs, not code; models/hw/encoder-tiny.yaml is
one) of the keys of :class:`EncoderPreset`, whose metadata documents each of them (docs/config.md,
rendered by ``binbert config-doc``).

Without ``ckpt`` the layer's ops are seeded random constants folded the way a trained model is
(hw.golden.random.random_encoder_layer, through hw.golden.fold). The two layer kinds the simulator checks
(W1A4 split softmax: activation_bits 4, weight_terms 2; BiBERT W1A1: bi, 1, 1) are drawn
exactly as ``binbert sim --layer encoder`` draws its pair, so at the simulator's shape the
bitstream implements the very layer the cocotb bench verified. With ``ckpt`` the shape keys
describe the random fallback only: the exported layer brings its own shapes, folded at the
preset's ``macs`` / ``lanes``.

Every bad file, key or value is a one-line :class:`BinbertError` ``FILE:LINE: message``.
The random-op generators live in hw/golden/random.py (shared with the tests and cocotb
benches). An export directory is read with hw.golden.export_format; a checkpoint directory
needs the caller's loader (``load=``), since exporting one takes the PyTorch side.
"""
from __future__ import annotations

import difflib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from hw.errors import BinbertError
from hw.validate import is_int
from hw.golden.random import CONFIG_SEED
from hw.yamlsrc import root_node

__all__ = ["EncoderPreset", "PRESET_DIR", "BITSTREAM_CONFIGS", "load_preset", "preset_from_text",
           "resolve", "bitstream_params", "bitstream_spec"]

PRESET_DIR = Path(__file__).resolve().parents[2] / "models" / "hw"
PREFIX = "encoder-"
ATTENTION = ("softmax", "bi")
TRAINING_KEYS = ("model", "data", "train", "distill", "stages")


@dataclass(frozen=True, kw_only=True)
class EncoderPreset:
    """One validated ``models/hw/*.yaml`` file (each key's metadata documents it; rendered
    into docs/config.md by ``binbert config-doc``)."""
    hidden: int = field(metadata={"doc": "residual width"})
    heads: int = field(metadata={"doc": "attention heads; must divide hidden"})
    ffn: int = field(metadata={"doc": "intermediate (FFN) width"})
    seq_len: int = field(metadata={
        "doc": "tokens per sequence (the attention block's sequence banks)"})
    attention: str = field(metadata={
        "doc": "softmax, or bi: BiBERT's Heaviside Bi-Attention (needs activation_bits 1)"})
    activation_bits: int = field(metadata={"doc": "LSQ code bits into the MVUs (1: sign codes)"})
    weight_terms: int = field(metadata={
        "doc": "binary weight terms per weight (2: BinaryBERT's split ternary)"})
    macs: int = field(metadata={
        "doc": "XNOR lanes (PE x SIMD) per MVU: the folding (hw.rtl.encoder_layer.folding_for)"})
    lanes: int = field(metadata={"doc": "residual features per stream beat; must divide hidden"})
    target: str = field(default="ecp5-85k", metadata={
        "doc": "the device it is sized for (the CLI's default --target for it)"})
    layernorm: str = field(default="parallel", metadata={
        "doc": "shared: one bit-serial multiplier per LayerNorm (no DSP, ~3 products per "
               "feature; for the iCE40 UP5K)"})
    mvu_buffer: str = field(default="auto", metadata={
        "doc": "every MVU's input ping-pong buffer (auto: Yosys' choice)"})
    seed: int = field(default=CONFIG_SEED, metadata={"doc": "seed of the random ops"})
    ckpt: str | None = field(default=None, metadata={
        "doc": "a checkpoint or `binbert export` directory whose layer replaces the random ops"})
    layer_index: int = field(default=0, metadata={"doc": "which layer of ckpt"})
    description: str = field(default="", metadata={"doc": "free text"})
    # not YAML keys
    name: str = field(default="", metadata={"internal": True})
    source: str = field(default="<preset>", metadata={"internal": True})


def _keys() -> list[str]:
    return [f.name for f in fields(EncoderPreset) if not f.metadata.get("internal")]


INT_RANGES = {"hidden": (1, None), "heads": (1, None), "ffn": (1, None), "seq_len": (1, None),
              "activation_bits": (1, 8), "weight_terms": (1, 4), "macs": (1, None),
              "lanes": (1, None), "seed": (0, None), "layer_index": (0, None)}
STR_KEYS = ("attention", "target", "layernorm", "mvu_buffer", "ckpt", "description")


def _available() -> dict[str, Path]:
    def short(p: Path) -> Path:  # models/hw/... in messages and reports when run from the repo
        try:
            return p.relative_to(Path.cwd())
        except ValueError:
            return p
    return {p.stem.removeprefix(PREFIX): short(p) for p in sorted(PRESET_DIR.glob(f"{PREFIX}*.yaml"))}


class _Names:
    """Live view of the shipped preset names (iterable / ``in``, like a dict of name -> path)."""

    def __iter__(self):
        return iter(_available())

    def __contains__(self, name):
        return name in _available()

    def __getitem__(self, name):
        return _available()[name]

    def __len__(self):
        return len(_available())

    def __repr__(self):
        return f"BITSTREAM_CONFIGS({', '.join(self)})"


BITSTREAM_CONFIGS = _Names()


def preset_from_text(text: str, source: str = "<preset>", name: str = "") -> EncoderPreset:
    """Parse and validate one preset; errors are ``SOURCE:LINE: message``."""
    loader = yaml.SafeLoader(text)
    try:
        root = root_node(loader, source)
        if root is None or not isinstance(root, yaml.MappingNode):
            raise BinbertError(f"{source}:1: a hardware preset must be a mapping of "
                               f"{', '.join(_keys()[:9])}, ...")

        def err(node, msg):
            return BinbertError(f"{source}:{node.start_mark.line + 1}: {msg}")

        pairs = []
        for key_node, value_node in root.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            pairs.append((key, key_node, value_node))
        training = [k for k, _, _ in pairs if k in TRAINING_KEYS]
        if training:
            raise BinbertError(
                f"{source}: this is a training config (keys {', '.join(training)}), not a hardware "
                f"preset: pass a models/hw/{PREFIX}*.yaml file (e.g. {PRESET_DIR.name}/"
                f"{PREFIX}tiny.yaml) to --config")
        values, nodes = {}, {}
        names = _keys()
        for key, key_node, value_node in pairs:
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise err(key_node, f"unknown key {key!r}{more}; a preset has {', '.join(names)}")
            if key in values:
                raise err(key_node, f"duplicate key {key!r}")
            if not isinstance(value_node, yaml.ScalarNode):
                raise err(value_node, f"{key} must be a single value, not a "
                                      f"{'list' if isinstance(value_node, yaml.SequenceNode) else 'mapping'}")
            try:
                value = loader.construct_object(value_node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                raise err(value_node, f"{key}: {exc.problem}") from None
            if key in INT_RANGES:
                lo, hi = INT_RANGES[key]
                if not is_int(value):
                    raise err(value_node, f"{key} must be an integer, not {value!r}")
                if value < lo or (hi is not None and value > hi):
                    bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
                    raise err(value_node, f"{key} {value} out of range: must be {bound}")
            elif key == "ckpt" and value is None:
                pass
            elif not isinstance(value, str):
                raise err(value_node, f"{key} must be a string, not {value!r}")
            values[key] = value
            nodes[key] = value_node
        missing = [f.name for f in fields(EncoderPreset)
                   if f.name not in values and f.default is MISSING]  # no default: required
        if missing:
            raise BinbertError(f"{source}:1: missing required key {missing[0]!r}")
        from hw.fpga.targets import TARGETS
        from hw.rtl.layernorm import MULTIPLIERS
        from hw.rtl.mvu import BUFFER_STYLES

        checks = [
            ("attention", values["attention"] not in ATTENTION,
             f"attention {values['attention']!r} unknown: choose softmax or bi"),
            ("layernorm", values.get("layernorm", "parallel") not in MULTIPLIERS,
             f"layernorm {values.get('layernorm')!r} unknown: choose {' or '.join(MULTIPLIERS)}"),
            ("mvu_buffer", values.get("mvu_buffer", "auto") not in BUFFER_STYLES,
             f"mvu_buffer {values.get('mvu_buffer')!r} unknown: choose one of {', '.join(BUFFER_STYLES)}"),
            ("target", values.get("target", "ecp5-85k") not in TARGETS,
             f"target {values.get('target')!r} unknown: choose one of {', '.join(TARGETS)}"),
            ("heads", values["hidden"] % values["heads"] != 0,
             f"heads {values['heads']} does not divide hidden {values['hidden']}"),
            ("lanes", values["hidden"] % values["lanes"] != 0,
             f"lanes {values['lanes']} does not divide hidden {values['hidden']} "
             f"(residual features per beat)"),
            ("activation_bits", values["attention"] == "bi" and values["activation_bits"] != 1,
             f"activation_bits {values['activation_bits']}: Bi-Attention (attention: bi) is the "
             f"BiBERT W1A1 layer, use activation_bits 1 (or attention: softmax)"),
        ]
        for key, bad, msg in checks:
            if bad:
                raise err(nodes[key], msg)
        return EncoderPreset(**values, name=name or Path(source).stem.removeprefix(PREFIX),
                             source=source)
    finally:
        loader.dispose()


def resolve(config) -> Path:
    """A preset name (``tiny`` -> models/hw/encoder-tiny.yaml) or a path -> the file."""
    if isinstance(config, Path) or (isinstance(config, str) and (
            config.endswith((".yaml", ".yml")) or "/" in config)):
        return Path(config)
    if isinstance(config, str) and config in BITSTREAM_CONFIGS:
        return BITSTREAM_CONFIGS[config]
    raise BinbertError(f"unknown encoder config {config!r}: choose one of "
                       f"{', '.join(BITSTREAM_CONFIGS)} or a models/hw/{PREFIX}*.yaml path")


def load_preset(config) -> EncoderPreset:
    """Load a preset by name, path or pass an :class:`EncoderPreset` through."""
    if isinstance(config, EncoderPreset):
        return config
    path = resolve(config)
    try:
        text = path.read_text()
    except FileNotFoundError:
        shipped = ", ".join(str(p) for p in _available().values())
        raise BinbertError(f"{path}: hardware preset not found (shipped: {shipped})") from None
    except OSError as exc:
        raise BinbertError(f"{path}: cannot read hardware preset ({exc.strerror})") from None
    name = config if isinstance(config, str) and config in BITSTREAM_CONFIGS else ""
    return preset_from_text(text, str(path), name=name)


def _random_layer(p: EncoderPreset):
    import numpy as np

    from hw.golden.random import random_encoder_layer, random_layer_pair

    rng = np.random.default_rng(p.seed)
    shape = dict(hidden=p.hidden, heads=p.heads, ffn=p.ffn, max_len=p.seq_len)
    kind = (p.attention, p.activation_bits, p.weight_terms)
    if kind in (("softmax", 4, 2), ("bi", 1, 1)):
        split, bi = random_layer_pair(rng, **shape)  # the simulator's pair, same draw order
        return bi if p.attention == "bi" else split
    a = p.activation_bits
    return random_encoder_layer(rng, **shape, x_bits=a, q_bits=a, k_bits=a, v_bits=a, c_bits=a,
                                f_bits=a, g_bits=a, terms=p.weight_terms, mode=p.attention)


def _exported(ckpt, load):
    """EncoderParams of an export directory, or of a checkpoint directory through ``load``."""
    from hw.golden.export_format import load_params

    path = Path(ckpt)
    if (path / "manifest.json").is_file():
        return load_params(path)[0]
    if not path.exists():
        raise BinbertError(f"--ckpt {ckpt}: no such checkpoint or export directory")
    if load is None:
        raise BinbertError(f"--ckpt {ckpt}: not an export directory (no manifest.json) and no checkpoint "
                           f"loader given: export it first (binbert export)")
    return load(path)[0]


def bitstream_params(config="tiny", ckpt=None, *, load=None):
    """EncoderLayerParams of a preset (name, path or :class:`EncoderPreset`): its seeded random
    ops, or (``ckpt``, else the preset's ``ckpt`` key) layer ``layer_index`` of an exported
    model folded with the preset's MAC budget.

    ``ckpt`` is an export directory, read here, or a checkpoint directory, which ``load``
    resolves: a callable like sw.export.load_export, ``load(path) -> (EncoderParams, meta,
    backbone)`` (``binbert bitstream`` passes the exporter that exports it on the fly).
    """
    from hw.rtl.encoder_layer import folding_for

    p = load_preset(config)
    ckpt = ckpt if ckpt is not None else p.ckpt
    try:
        if ckpt is not None:
            params = _exported(ckpt, load)
            if not p.layer_index < len(params.layers):
                raise BinbertError(f"layer_index {p.layer_index} out of range: {ckpt} has "
                                   f"{len(params.layers)} layers")
            layer = params.layers[p.layer_index]
            seq_len = min(p.seq_len, params.max_len)
        else:
            layer = _random_layer(p)
            seq_len = p.seq_len
        # an exported layer's width may not divide the preset's lanes: one feature per beat
        lanes = p.lanes if layer.ln1.n % p.lanes == 0 else 1
        return folding_for(layer, seq_len=seq_len, macs=p.macs, lanes=lanes,
                           ln_multiplier=p.layernorm, mvu_buffer=p.mvu_buffer)
    except BinbertError as exc:
        if str(exc).startswith(p.source):
            raise
        raise BinbertError(f"{p.source}: {exc}") from None


def bitstream_spec(config="tiny", ckpt=None, *, load=None) -> dict:
    """What hw/fpga/flow.py's LayerSpec needs for ``--layer encoder``: the params (``.create()``),
    XNOR lanes per cycle, activation bits, cycles per token, and a description (``load``: see
    :func:`bitstream_params`)."""
    preset = load_preset(config)
    p = bitstream_params(preset, ckpt, load=load)
    units = list(p.attention.projections) + [p.attention.out_proj, p.ffn.lin1, p.ffn.lin2]
    macs = sum(u.pe * u.simd for u in units)
    lyr = p.layer
    ckpt = ckpt if ckpt is not None else preset.ckpt
    return {"layer": "encoder", "params": p, "macs_per_cycle": macs,
            "a_bits": max(lyr.qkv_in.out_bits, lyr.ffn_in_q.out_bits),
            "cycles_per_vector": -(-p.cycles_per_sequence // p.seq_len),
            "describe": {"config": preset.name, "hidden": p.hidden, "heads": lyr.attention.heads,
                         "ffn": lyr.ffn_in.n, "seq_len": p.seq_len, "lanes": p.lanes,
                         "layernorm": p.ln_multiplier, "mvu_buffer": p.mvu_buffer,
                         "terms": lyr.query.terms, "attention": type(lyr.attention.probs).__name__,
                         "pe_simd": {"qkv": [p.pe_qkv, p.simd_qkv], "o": [p.pe_o, p.simd_o],
                                     "ffn1": [p.pe_ffn1, p.simd_ffn1], "ffn2": [p.pe_ffn2, p.simd_ffn2]},
                         "cycles_per_sequence": p.cycles_per_sequence,
                         "activation_bits": lyr.qkv_in.out_bits,
                         "preset": preset.source,
                         "weights": (f"layer {preset.layer_index} of {ckpt}" if ckpt is not None
                                     else f"seeded random ops (seed {preset.seed})")}}
