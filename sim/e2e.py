"""``binbert sim --layer model``: every encoder layer of an exported model in RTL, chained.

Real dev sentences go through the golden embedding; layer 0's RTL (hw.rtl.encoder_layer, cocotb bench
sim/benches/encoder.py) gets that residual stream, and the *RTL's* output of layer l is the input of
layer l+1. Each layer's output must equal the golden model's hidden state (hw.golden,
``EncoderParams.hidden_states``) bit for bit; the golden pooler + classifier then turn the RTL's
final hidden states into logits, which must equal the golden full model's (hw.golden.export_format.run),
and so must the predictions. Anything else is a :class:`ModelMismatch` naming layer, sentence,
token and feature.

The layers' RTL builds run concurrently (``jobs`` worker processes) while earlier layers
simulate. By default the
stream traffic is back to back (no random idles/backpressure: the sentences themselves give the
steady-state cycles per sequence); ``backpressure=True`` keeps the random traffic of ``binbert
sim --layer encoder`` and adds its random throughput burst.
"""
from __future__ import annotations

import json
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from hw.errors import BinbertError
from sim.defaults import DEFAULT_SENTENCES
from sim.runner import SimulationError

TB = "sim.benches.encoder"


class ModelMismatch(SimulationError):
    """The chained RTL disagreed with the golden model (hidden state, logit or prediction)."""


def first_mismatch(got: np.ndarray, want: np.ndarray) -> tuple[int, int, int] | None:
    """(sentence, token, feature) of the first differing element, None when equal."""
    bad = np.argwhere(got != want)
    return None if not len(bad) else tuple(int(v) for v in bad[0])


def check_model_args(ckpt, *, sentences: int, seq_len: int, jobs: int) -> None:
    if ckpt is None:
        raise BinbertError("--layer model needs --ckpt (an export or checkpoint directory)")
    if sentences < 1:
        raise BinbertError(f"--sentences {sentences}: must be >= 1")
    if seq_len < 1:
        raise BinbertError(f"--seq-len {seq_len}: must be >= 1")
    if jobs < 1:
        raise BinbertError(f"--jobs {jobs}: must be >= 1")


def prepare(ckpt, *, sentences: int = DEFAULT_SENTENCES, seq_len: int | None = None,
            macs: int | None = None) -> dict:
    """Everything before the RTL: the export, the sentences, the golden hidden states and
    logits, and each layer's folding. All bad input fails here, before any build."""
    from hw.rtl.encoder_layer import folding_for
    from sim.defaults import CKPT_MACS
    from sim.layers import default_seq_len, dev_sentences
    from sw.export import load_export
    from hw.golden.export_format import run as golden_run

    check_model_args(ckpt, sentences=sentences, seq_len=1 if seq_len is None else seq_len, jobs=1)
    params, meta, backbone = load_export(ckpt)
    # the default fits the model and the task; an explicit length beyond its position table is an error
    seq_len = default_seq_len(params, meta, backbone, sentences) if seq_len is None else seq_len
    d = dev_sentences(params, meta, backbone, seq_len=seq_len, count=sentences, exact=True)
    states = params.hidden_states(d["ids"], d["valid"], d["types"])
    logits = golden_run(params, d["ids"], d["valid"], d["types"])
    if not np.array_equal(params.head(states[-1]), logits):  # the two golden paths agree
        raise BinbertError(f"--ckpt {ckpt}: golden pooler/classifier on the hidden states differ "
                           "from hw.golden.export_format.run (golden model inconsistent)")
    folds = [folding_for(layer, seq_len=seq_len, macs=CKPT_MACS if macs is None else macs)
             for layer in params.layers]
    return {"params": params, "meta": meta, "sentences": d, "states": states, "logits": logits,
            "folds": folds, "seq_len": seq_len, "task": meta.get("task", "sst2")}


def run_model(ckpt, *, sim: str = "verilator", sentences: int = DEFAULT_SENTENCES,
              seq_len: int | None = None, seed: int | None = None, macs: int | None = None,
              jobs: int = 2, backpressure: bool = False, build_dir=None, json_path=None,
              verbose: bool = False, log: Callable[[str], None] | None = print) -> dict:
    """Run every layer of ``ckpt`` through its RTL on ``sentences`` real dev sentences, chained
    (see the module docstring). Returns the summary (also written to ``json_path``); raises
    :class:`ModelMismatch` / SimulationError after writing the summary when anything differs."""
    from sim.runner import check_sim_name, simulator_env

    say = log or (lambda _msg: None)
    check_sim_name(sim)
    check_model_args(ckpt, sentences=sentences, seq_len=1 if seq_len is None else seq_len, jobs=jobs)
    simulator_env(sim)
    t_start = time.monotonic()
    prep = prepare(ckpt, sentences=sentences, seq_len=seq_len, macs=macs)
    params, d = prep["params"], prep["sentences"]
    n_layers, valid = len(prep["folds"]), d["valid"]
    say(f"model: {n_layers} layers of {ckpt}, {len(d['ids'])} {prep['task']} dev sentences "
        f"({int(valid.sum())} tokens, seq_len {prep['seq_len']}), {sim}, builds {jobs} at a time")
    if seed is None:
        import random

        seed = random.SystemRandom().randrange(2**31)
    summary = {"ckpt": str(ckpt), "sim": sim, "seed": int(seed), "seq_len": prep["seq_len"],
               "sentences": len(d["ids"]), "tokens": int(valid.sum()), "traffic":
               "random idles + backpressure" if backpressure else "back to back", "layers": [],
               "status": "running"}
    rtl_states: list[np.ndarray] = []

    def finish(status: str, error: str | None = None) -> dict:
        summary["status"] = status
        summary["wall_s"] = round(time.monotonic() - t_start, 1)
        if error:
            summary["error"] = error
        if json_path is not None:
            path = Path(json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            if rtl_states:  # the RTL's hidden states, for a closer look at any difference
                np.savez_compressed(path.with_suffix(".npz"), **{f"layer{i}": y for i, y in enumerate(rtl_states)})
                summary["hidden_states"] = str(path.with_suffix(".npz"))
            path.write_text(json.dumps(summary, indent=1))
        return summary

    with tempfile.TemporaryDirectory(prefix="binbert-model-") as tmp:
        r = _run_layers(Path(tmp), prep, summary, rtl_states, finish, sim=sim, seed=seed, jobs=jobs,
                        backpressure=backpressure, build_dir=build_dir, verbose=verbose, say=say)

    logits_rtl = params.head(r)
    logits = prep["logits"]
    pred_rtl, pred_gold = logits_rtl.argmax(-1), logits.argmax(-1)
    labels = d["labels"]
    scale = float(1 << params.logit_frac)
    summary["predictions"] = [
        {"dev_index": int(d["index"][s]), "text": d["text"][s], "label": _num(labels[s]),
         "golden": int(pred_gold[s]), "rtl": int(pred_rtl[s]),
         "logits_golden": [v / scale for v in logits[s].tolist()],
         "logits_rtl": [v / scale for v in logits_rtl[s].tolist()]} for s in range(len(labels))]
    summary["logits_equal"] = bool(np.array_equal(logits_rtl, logits))
    summary["predictions_equal"] = bool(np.array_equal(pred_rtl, pred_gold))
    summary["accuracy_rtl"] = float(np.mean(pred_rtl == labels))
    summary["accuracy_golden"] = float(np.mean(pred_gold == labels))
    if not summary["logits_equal"] or not summary["predictions_equal"]:
        s = int(np.argwhere((logits_rtl != logits).any(-1))[0][0])
        msg = (f"logits: sentence {s} (dev #{int(d['index'][s])}) RTL {logits_rtl[s].tolist()} "
               f"!= golden full model {logits[s].tolist()} (predictions {pred_rtl[s]} vs {pred_gold[s]})")
        finish("fail", msg)
        raise ModelMismatch(msg)
    say(f"model: logits and predictions of all {len(labels)} sentences equal the golden full model's; "
        f"accuracy {summary['accuracy_rtl']:.3f} (labels)")
    return finish("pass")


def _run_layers(work: Path, prep: dict, summary: dict, rtl_states: list, finish, *, sim: str, seed: int,
                jobs: int, backpressure: bool, build_dir, verbose: bool, say) -> np.ndarray:
    """Build every layer (worker processes) and simulate them in order, each fed the previous
    layer's RTL output; returns the last layer's RTL output."""
    from sim.runner import _patched_environ, build_block, run_block, simulator_env

    d, states, folds = prep["sentences"], prep["states"], prep["folds"]
    valid = d["valid"]
    # Builds run in worker processes: the Verilog generation is pure Python (the GIL would
    # serialise threads), the compile a subprocess; layer l simulates while l+1 still builds.
    ctx = multiprocessing.get_context("spawn")   # no fork of a process that has threads
    with _patched_environ(simulator_env(sim)), ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        builds = [pool.submit(build_block, f, block="encoder", sim=sim, build_dir=build_dir, log=None)
                  for f in folds]
        r = states[0]
        for layer, (fold, fut) in enumerate(zip(folds, builds)):
            try:
                b = fut.result()
            except SimulationError as exc:
                finish("fail", f"layer {layer}: {exc}")
                raise SimulationError(f"layer {layer}: {exc}") from None
            say(f"layer {layer}: build {'done' if b.built else 'reused'} in {b.build_s:.1f}s ({b.directory})")
            inp, outp = work / f"layer{layer}-in.npz", work / f"layer{layer}-out.npz"
            np.savez(inp, r=r, valid=valid)
            burst = 0 if not backpressure and len(r) >= 3 else 3
            extra = {"inputs": str(inp), "outputs": str(outp), "burst": burst}
            if not backpressure:
                extra.update(idle_prob=0.0, ready_prob=1.0)
            try:
                res = run_block(fold, block="encoder", sim=sim, seed=seed, vectors=len(r), build_dir=build_dir,
                                test_module=TB, extra=extra, verbose=verbose, prebuilt=b,
                                log=(lambda m, i=layer: say(f"layer {i}: {m}")))
            except SimulationError as exc:
                finish("fail", f"layer {layer}: {exc}")
                raise SimulationError(f"layer {layer} (RTL != golden layer on the RTL's input): {exc}") from None
            with np.load(outp) as f:
                y = f["y"].astype(np.int64)
            rtl_states.append(y)
            st = res.stats
            row = {"layer": layer, "beats_in": int(len(r) * fold.seq_len * fold.beats),
                   "beats_out": int(y.size // fold.lanes), "sequences": int(st.get("sequences", len(r))),
                   "cycles_per_sequence": st.get("cycles_per_group"),
                   "cycles_per_sequence_model": st.get("cycles_per_group_model"),
                   "first_sequence_cycles": st.get("first_sequence_cycles"), "cycles": st.get("last_cycle"),
                   "build_s": round(b.build_s, 1), "built": b.built, "sim_s": round(res.sim_s, 1),
                   "kcycles_per_s": round(st.get("last_cycle", 0) / max(res.sim_s, 1e-9) / 1000, 2),
                   "stage_cycles": st.get("stage_cycles"), "pe_simd": {
                       "qkv": [fold.pe_qkv, fold.simd_qkv], "o": [fold.pe_o, fold.simd_o],
                       "ffn1": [fold.pe_ffn1, fold.simd_ffn1], "ffn2": [fold.pe_ffn2, fold.simd_ffn2]},
                   "lanes": fold.lanes}
            want = states[layer + 1]
            bad = first_mismatch(y, want) if y.shape == want.shape else (0, 0, 0)
            row["bit_exact"] = bad is None
            summary["layers"].append(row)
            if bad is not None:
                msg = _describe(layer, bad, y, want, d)
                finish("fail", msg)
                raise ModelMismatch(msg)
            say(f"layer {layer}: {row['beats_out']} output beats equal the golden hidden states bit for bit; "
                f"{row['cycles_per_sequence']:g} cycles/sequence (model {row['cycles_per_sequence_model']}), "
                f"sim {res.sim_s:.1f}s")
            r = y   # the RTL's output is the next layer's input
    return r


def _num(v):
    return int(v) if float(v).is_integer() else float(v)


def _describe(layer: int, bad: tuple[int, int, int], got: np.ndarray, want: np.ndarray, d: dict) -> str:
    if got.shape != want.shape:
        return f"layer {layer}: RTL output shape {got.shape} != golden hidden states {want.shape}"
    s, t, j = bad
    n = int((got != want).sum())
    kind = "token" if d["valid"][s, t] else "padding position"
    return (f"layer {layer}: sentence {s} (dev #{int(d['index'][s])}) {kind} {t} feature {j}: RTL {got[s, t, j]} "
            f"!= golden {want[s, t, j]} ({n} elements differ)")
