"""Encoder-level blocks for ``binbert sim --layer attn|ffn|ln|encoder``: default configurations
(the seeded random golden ops of :mod:`hw.golden.random`, or the ops of an exported checkpoint)
and :func:`run_layer`. With ``ckpt`` the ops come from ``binbert export`` output (or a
checkpoint, exported on the fly).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hw.golden.random import random_layer_pair, random_layernorm
from sim.defaults import (CKPT_MACS, CKPT_SEQ_LEN, CKPT_SENTENCES, CKPT_SENTENCES_BY_SIM, CONFIG_SEED, LAYER_VECTORS,
                          LAYERS, SIZES)


def _random_configs(layer: str, size: str = "default") -> list[tuple[str, object]]:
    from hw.rtl.encoder_layer import folding_for
    from hw.rtl.layernorm import LayerNormUnitParams, shared_or_parallel

    z = SIZES[size]
    rng = np.random.default_rng(CONFIG_SEED)
    if layer == "ln":
        n1, n2 = z["ln_n"]
        a = LayerNormUnitParams(ln=random_layernorm(n1, rng), lanes=4)
        b = LayerNormUnitParams(ln=random_layernorm(n2, rng, eps=0.0), lanes=1)
        # the iCE40 preset's unit: one bit-serial multiplier, radix-2 dividers
        c = shared_or_parallel(random_layernorm(n1, rng), 4, "shared")
        return [(f"ln n={n1} lanes=4", a), (f"ln n={n2} lanes=1 eps=0", b),
                (f"ln n={n1} lanes=4 shared multiplier", c)]
    split, bi = random_layer_pair(rng, hidden=z["hidden"], heads=z["heads"], ffn=z["ffn"], max_len=z["seq_len"])
    shape = f"hidden={z['hidden']} heads={z['heads']} ffn={z['ffn']} seq={z['seq_len']}"
    cases = [(f"{shape} W1A4 split (T=2) softmax", split), (f"{shape} W1A1 BiBERT Heaviside", bi)]
    return [(f"{layer} {label}", _block(layer, folding_for(lyr, seq_len=z["seq_len"], macs=z["macs"],
                                                            lanes=z["lanes"])))
            for label, lyr in cases]


def _block(layer: str, p):
    return {"encoder": p, "attn": p.attention, "ffn": p.ffn}[layer]


def dev_sentences(params, meta: dict, backbone: str, *, seq_len: int, count: int,
                  exact: bool = False) -> dict:
    """The first ``count`` dev sentences of the export's task that fit ``seq_len`` tokens of the
    model's vocabulary: ``ids``, ``types``, ``valid`` (S, seq_len) padded arrays, ``labels``,
    ``index`` (position in the dev set) and ``text``.

    ``exact``: a BinbertError (before any simulation) unless exactly ``count`` are found, naming
    the dev set's size or how many sentences fit; otherwise fewer are returned (at least one).
    """
    from hw.errors import BinbertError
    from sw import backbone as bb
    from sw.data import load_split

    task = meta.get("task", "sst2")
    if seq_len > params.max_len:
        raise BinbertError(f"seq_len {seq_len}: longer than the model's maximum of {params.max_len} "
                           f"tokens (its position table)")
    examples = load_split(meta.get("data_dir", "data/glue"), task, "dev")
    if exact and count > len(examples):
        raise BinbertError(f"--sentences {count}: the {task} dev set has only {len(examples)} sentences")
    tok = bb.load_tokenizer(backbone)
    rows = {k: [] for k in ("ids", "types", "valid", "labels", "index", "text")}
    for i, e in enumerate(examples):
        enc = tok(e.text_a, e.text_b, truncation=False, return_token_type_ids=True)
        n = len(enc["input_ids"])
        if n > seq_len or max(enc["input_ids"]) >= params.embedding.vocab:
            continue
        pad = seq_len - n
        rows["ids"].append(enc["input_ids"] + [tok.pad_token_id or 0] * pad)
        rows["types"].append(enc["token_type_ids"] + [0] * pad)
        rows["valid"].append([1] * n + [0] * pad)
        rows["labels"].append(e.label)
        rows["index"].append(i)
        rows["text"].append(e.text_a if e.text_b is None else f"{e.text_a} / {e.text_b}")
        if len(rows["ids"]) == count:
            break
    found = len(rows["ids"])
    if not found or (exact and found < count):
        lengths = sorted(_token_lengths(tok, examples, params.embedding.vocab))
        want = count if exact else 1
        if not lengths:  # a model with a vocabulary of its own, not the backbone's tokenizer's
            hint = f"none tokenizes within its vocabulary of {params.embedding.vocab} ids"
        elif len(lengths) >= want and lengths[want - 1] <= params.max_len:
            hint = f"--seq-len {lengths[want - 1]} would fit {want}"
        else:  # the position table itself is too short for them
            hint = (f"{sum(n <= params.max_len for n in lengths)} fit its position table of "
                    f"{params.max_len} tokens")
        raise BinbertError(f"--sentences {count}: only {found} of the {len(examples)} {task} dev "
                           f"sentences fit {seq_len} tokens of this model's vocabulary ({hint})")
    return {"ids": np.array(rows["ids"]), "types": np.array(rows["types"]),
            "valid": np.array(rows["valid"], dtype=bool), "labels": np.array(rows["labels"]),
            "index": np.array(rows["index"]), "text": rows["text"]}


def _token_lengths(tok, examples, vocab: int) -> list[int]:
    """Tokens of every example whose ids are all in the model's ``vocab`` ([CLS] and [SEP]s included)."""
    lengths = []
    for e in examples:
        ids = tok(e.text_a, e.text_b, truncation=False)["input_ids"]
        if max(ids) < vocab:
            lengths.append(len(ids))
    return lengths


def default_seq_len(params, meta: dict, backbone: str, count: int) -> int:
    """Tokens per sequence when none is given: ``CKPT_SEQ_LEN`` (at most the position table)
    when ``count`` dev sentences of the export's task fit it, else the shortest length that fits
    ``count`` of them (MRPC and STS-B pairs are longer than 16 tokens), capped by the position
    table."""
    from sw import backbone as bb
    from sw.data import load_split

    base = min(CKPT_SEQ_LEN, params.max_len)
    examples = load_split(meta.get("data_dir", "data/glue"), meta.get("task", "sst2"), "dev")
    lengths = sorted(_token_lengths(bb.load_tokenizer(backbone), examples, params.embedding.vocab))
    if len(lengths) < count or lengths[count - 1] <= base:
        return base  # enough fit the default, or too few exist at any length (dev_sentences says so)
    return min(lengths[count - 1], params.max_len)


def sentence_inputs(params, meta: dict, backbone: str, *, seq_len: int, count: int):
    """Dev sentences of the export's task of at most ``seq_len`` tokens: (input_ids, token
    types, mask)."""
    d = dev_sentences(params, meta, backbone, seq_len=seq_len, count=count)
    return d["ids"], d["types"], d["valid"]


def ckpt_configs(layer: str, ckpt, *, seq_len: int | None = None, count: int = CKPT_SENTENCES,
                 layer_index: int = 0, macs: int = 256) -> list[tuple[str, object, dict]]:
    """The exported layer ``layer_index`` of a checkpoint on real sentences: the block's params
    and an .npz of its inputs (the residual stream the golden model feeds that block)."""
    import tempfile

    from hw.errors import BinbertError
    from hw.rtl.encoder_layer import folding_for
    from hw.rtl.layernorm import LayerNormUnitParams
    from sw.export import load_export

    params, meta, backbone = load_export(ckpt)
    if not 0 <= layer_index < len(params.layers):
        raise BinbertError(f"--ckpt {ckpt}: layer {layer_index} out of range ({len(params.layers)} layers)")
    # the default fits the model and the task; an explicit length beyond its position table is an error
    seq_len = default_seq_len(params, meta, backbone, count) if seq_len is None else seq_len
    ids, types, valid = sentence_inputs(params, meta, backbone, seq_len=seq_len, count=count)
    states = params.hidden_states(ids, valid, types)
    lyr = params.layers[layer_index]
    r = states[layer_index]
    enc = folding_for(lyr, seq_len=seq_len, macs=macs)
    att = enc.attention
    h = att.compute(r, valid)
    note = (f"layer {layer_index} of {ckpt} on {len(ids)} {meta.get('task', 'sst2')} dev sentences "
            f"({int(valid.sum())} tokens, seq_len {seq_len})")
    tmp = tempfile.NamedTemporaryFile(prefix="binbert-sim-", suffix=".npz", delete=False)
    if layer == "ln":
        v = lyr.attention_sum(r, valid)[valid]  # the sum ln1 normalises, of every token
        block = LayerNormUnitParams(ln=lyr.ln1, lanes=enc.lanes)
        np.savez(tmp, v=v)
    elif layer == "ffn":
        block = enc.ffn
        np.savez(tmp, h=h[valid])
    else:
        block = _block(layer, enc)
        np.savez(tmp, r=r, valid=valid)
    tmp.close()
    return [(f"{layer} {note}", block, {"inputs": tmp.name, "burst": 3})]


def layer_configs(layer: str, ckpt=None, size: str = "default", sentences: int = CKPT_SENTENCES,
                  seq_len: int | None = None) -> list[tuple[str, object, dict]]:
    from hw.errors import BinbertError

    if layer not in LAYERS:
        raise BinbertError(f"unknown layer {layer!r}: encoder-level layers are {', '.join(LAYERS)}")
    if ckpt is not None:
        # a trained layer is BERT-sized: fold it wider than the random default (~1k XNOR lanes
        # per MVU) so a sentence takes tens of thousands of cycles, not millions
        macs = CKPT_MACS if size == "default" else SIZES[size]["macs"]
        return ckpt_configs(layer, ckpt, count=sentences, seq_len=seq_len, macs=macs)
    if size not in SIZES:
        raise BinbertError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    return [(label, p, {}) for label, p in _random_configs(layer, size)]


def run_layer(layer: str, sim: str = "verilator", waves: bool = False, seed: int | None = None,
              ckpt=None, vectors: int | None = None, build_dir=None, log=print,
              size: str = "default", seq_len: int | None = None, **run_kw) -> list:
    """Run every configuration of ``layer`` (attn, ffn, ln, encoder) through its cocotb bench on
    ``sim``; returns the :class:`sim.runner.SimResult` list, raising SimulationError on a mismatch.

    With ``ckpt`` (a checkpoint or export directory) the block is that model's layer 0 on
    ``vectors`` dev sentences of the export's task (default ``CKPT_SENTENCES_BY_SIM[sim]``) of at
    most ``seq_len`` tokens (default :func:`default_seq_len`) instead of random ops
    and inputs.
    ``run_kw`` goes to :func:`sim.runner.run_block` (e.g. ``verbose``).
    """
    from sim.runner import check_sim_name, run_block

    check_sim_name(sim)
    results = []
    sentences = CKPT_SENTENCES_BY_SIM[sim] if vectors is None or ckpt is None else max(1, vectors)
    for label, params, extra in layer_configs(layer, ckpt, size, sentences=sentences, seq_len=seq_len):
        if log:
            log(f"{label}")
        try:
            results.append(run_block(params, block=layer, sim=sim, waves=waves, seed=seed,
                                     vectors=LAYER_VECTORS[layer] if vectors is None else vectors,
                                     build_dir=build_dir, test_module=LAYERS[layer], extra=extra,
                                     log=log, **run_kw))
        finally:  # ckpt_configs' stimulus file: a temporary of this run only
            if extra.get("inputs"):
                Path(extra["inputs"]).unlink(missing_ok=True)
    return results

