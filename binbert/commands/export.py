"""``binbert export`` and ``binbert eval-integer``: checkpoint -> integer model -> dev metrics.

export        CKPT --out DIR: ROM images (.hex/.mem/.bin) + manifest.json (docs/arithmetic.md §19)
eval-integer  --ckpt CKPT [--export DIR]: the golden integer model (read from DIR alone) on the
              dev set, beside the fake-quant model and the PyTorch integer-simulation path, with
              their prediction agreement (JSON on stdout).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import fields


def register(subparsers) -> None:
    from sw.export import ExportOptions

    p = subparsers.add_parser(
        "export", help="trained checkpoint -> packed ROM images + manifest.json (integer model)",
        description="Fold a trained (split) checkpoint into the integer model of "
                    "docs/arithmetic.md: bit-packed binary weights per term, fixed-point "
                    "requantizers, LayerNorm and LUT ROMs, written as .hex/.mem/.bin plus "
                    "manifest.json (shapes, widths, bit order, sha256).")
    p.add_argument("ckpt", help="checkpoint directory (e.g. out/train/binary/final)")
    p.add_argument("--out", default="out/export", help="export directory (default: out/export)")
    defaults = ExportOptions()
    for f in fields(ExportOptions):
        p.add_argument("--" + f.name.replace("_", "-"), type=int, default=getattr(defaults, f.name),
                       dest=f.name, help=f"fixed-point option (default {getattr(defaults, f.name)})")
    p.set_defaults(func=cmd_export)

    e = subparsers.add_parser(
        "eval-integer", help="dev metrics of the golden integer model vs the fake-quant model",
        description="Run the integer-only golden model (numpy, reading only the export "
                    "directory) on the dev set of the checkpoint's task and report its metrics "
                    "beside the fake-quant PyTorch model's and the PyTorch integer-simulation "
                    "path's, with prediction agreement. Without --export the checkpoint is "
                    "exported to a temporary directory first.")
    e.add_argument("--ckpt", required=True, help="checkpoint directory")
    e.add_argument("--export", default=None, help="export directory of that checkpoint")
    e.add_argument("--data", default=None, help="GLUE data directory (default: the config's)")
    e.add_argument("--limit", type=int, default=None,
                   help="first N dev examples only (default: the config's data.eval_limit on its "
                        "own dev set, the whole file of any other --data)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--no-intsim", action="store_true", help="skip the PyTorch integer-sim path")
    e.add_argument("--json", default=None, help="also write the report to this file")
    e.set_defaults(func=cmd_eval_integer)


def cmd_export(args: argparse.Namespace) -> int:
    from sw.export import ExportOptions, export_checkpoint

    opts = ExportOptions(**{f.name: getattr(args, f.name) for f in fields(ExportOptions)})
    t0 = time.time()
    manifest = export_checkpoint(args.ckpt, args.out, opts)
    m = json.loads(manifest.read_text())
    size = sum(f["bytes"] for r in m["roms"].values() for k, f in r["files"].items() if k == "bin")
    print(json.dumps({"export": str(manifest.parent), "manifest": str(manifest), "roms": len(m["roms"]),
                      "rom_bytes": size, "seconds": round(time.time() - t0, 2)}, indent=1))
    return 0


def _batches(ds, batch_size: int):
    from sw.data import epoch_batches, loader

    return loader(ds, epoch_batches(len(ds), batch_size, 0, 0, shuffle=False))


def integer_report(model, params, ds, task: str, batch_size: int = 64, intsim: bool = True) -> dict:
    """Metrics of fake-quant, golden and (optionally) integer-sim predictions on ``ds``, and agreement.

    ``params``: the golden EncoderParams (from hw.golden.export_format.load_params). Classification tasks
    report prediction agreement; regression (STS-B) the largest |difference| of the outputs.
    """
    import numpy as np
    import torch

    from hw.golden.export_format import logits_real, run
    from sw.intsim import from_model
    from sw.metrics import task_metrics

    model.eval()
    dev = next(model.parameters()).device
    sim = from_model(model) if intsim else None
    fq, gold_l, sim_l, labels = [], [], [], []
    t_fq = t_gold = t_sim = 0.0
    with torch.no_grad():
        for b in _batches(ds, batch_size):
            labels.append(b["labels"].numpy())
            t = time.time()
            fq.append(model(**{k: v.to(dev) for k, v in b.items() if k != "labels"}).logits.double().cpu().numpy())
            t_fq += time.time() - t
            t = time.time()
            gold_l.append(logits_real(params, run(params, b["input_ids"].numpy(), b["attention_mask"].numpy(),
                                                  b["token_type_ids"].numpy(), batch_size)))
            t_gold += time.time() - t
            if sim is not None:
                t = time.time()
                sim_l.append(sim.logits(b["input_ids"], b["attention_mask"], b["token_type_ids"]).cpu().numpy()
                             / float(1 << params.logit_frac))
                t_sim += time.time() - t
    gold_y = np.concatenate(labels)
    outs = {"fake_quant": np.concatenate(fq), "golden": np.concatenate(gold_l)}
    if sim is not None:
        outs["intsim"] = np.concatenate(sim_l)
    regression = outs["golden"].shape[1] == 1

    def pred(z):
        return z[:, 0] if regression else z.argmax(1)

    rep = {"task": task, "examples": int(len(gold_y))}
    for name, z in outs.items():
        rep[name] = task_metrics(task, pred(z), gold_y)
    for other in [k for k in outs if k != "golden"]:
        key = f"golden_vs_{other}"
        if regression:
            rep[key] = {"max_abs_diff": float(np.abs(outs["golden"] - outs[other]).max())}
        else:
            rep[key] = {"agreement": float((pred(outs["golden"]) == pred(outs[other])).mean()),
                        "max_abs_logit_diff": float(np.abs(outs["golden"] - outs[other]).max())}
    rep["seconds"] = {"fake_quant": round(t_fq, 2), "golden": round(t_gold, 2)}
    if sim is not None:
        rep["seconds"]["intsim"] = round(t_sim, 2)
    return rep


def cmd_eval_integer(args: argparse.Namespace) -> int:
    from hw.errors import BinbertError
    from sw import backbone as bb
    from sw.data import Encoded, eval_examples, task_spec, truncation_report
    from sw.export import check_export_of, export_checkpoint_model
    from hw.golden.export_format import load_params
    from sw.train import load_checkpoint

    for name in ("limit", "batch_size"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise BinbertError(f"--{name.replace('_', '-')} must be a positive integer, not {v}")
    model, state, cfg = load_checkpoint(args.ckpt)
    model.eval()
    d = cfg.data
    examples, rows = eval_examples(d.task, args.data, d.dir, d.eval_limit, args.limit)
    ds = Encoded(examples, bb.load_tokenizer(cfg.model.backbone), d.max_seq_len,
                 task_spec(d.task).regression)
    with tempfile.TemporaryDirectory(prefix="binbert-export-") as tmp:
        export_dir = args.export
        if export_dir is None:
            export_dir = tmp
            export_checkpoint_model(model, tmp, args.ckpt, state.get("stage"),
                                    meta={"checkpoint": str(args.ckpt)})
        params, meta = load_params(export_dir)
        if args.export is not None:  # another model's export would be scored without a word
            check_export_of(args.export, meta, args.ckpt)
        if params.max_len < d.max_seq_len:
            raise BinbertError(f"{export_dir}: position table holds {params.max_len} tokens, "
                               f"data.max_seq_len is {d.max_seq_len}")
        rep = integer_report(model, params, ds, d.task, args.batch_size, intsim=not args.no_intsim)
    rep = {"ckpt": str(args.ckpt), "stage": state.get("stage"), "export": args.export, **rep}
    text = json.dumps(rep, indent=1)
    print(f"eval-integer: {rows}\neval-integer: {truncation_report('dev', ds)}", file=sys.stderr)
    print(text)
    if args.json:
        from hw.files import atomic_write_text

        atomic_write_text(args.json, text + "\n")  # whole or not at all, a fault as one line
    return 0
