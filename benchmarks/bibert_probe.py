"""Why a fully binarised (W1A1, Bi-Attention) MiniLM stays at chance: per-layer diagnostics of a
BiBERT student built from a full-precision teacher checkpoint, beside the teacher.

    .venv/bin/python benchmarks/bibert_probe.py --ckpt out/bench-accuracy/runs/bibert/teacher/final
        [--student CKPT ...] [--train 1000] [--dev 500]

Per encoder layer (0 = embeddings) it prints:

* probe: dev accuracy of a logistic-regression probe (L-BFGS, L2) fitted on the training
  sentences' mean-pooled hidden states: how much task information the layer still carries;
* drop_cos: cosine (centred over the batch) between a sentence's CLS features with and without
  a dropout mask (the model's own dropout rates): 1 = dropout is a small perturbation, 0 = the
  features seen in training are unrelated to those at evaluation;
* branch: mean ||branch|| / ||skip|| at the layer's two residual adds (attention, FFN).

Students: the teacher binarised as models/minilm-sst2-bibert.yaml does (no training), and any
trained checkpoints given with --student.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sw import backbone as bb  # noqa: E402
from sw.config import load_config, stage_quant_dict  # noqa: E402
from sw.data import Encoded, epoch_batches, load_split, loader  # noqa: E402
from sw.qbert import QuantBertConfig, quantize_bert, record  # noqa: E402
from sw.train import load_checkpoint  # noqa: E402


@torch.no_grad()
def layer_features(model, ds: Encoded, batch_size: int = 64) -> list[torch.Tensor]:
    """Mean-pooled hidden states over valid tokens, per layer: [(N, H)] * (L + 1)."""
    model.eval()
    out: list[list[torch.Tensor]] = []
    for b in loader(ds, epoch_batches(len(ds), batch_size, 0, 0, shuffle=False)):
        m = b["attention_mask"].to(torch.float32)[..., None]
        with record(model) as rec:
            model(**{k: v for k, v in b.items() if k != "labels"})
        feats = [(h * m).sum(1) / m.sum(1) for h in rec.hidden_states]
        out = [o + [f] for o, f in zip(out, feats)] if out else [[f] for f in feats]
    return [torch.cat(o) for o in out]


def probe_accuracy(x_tr, y_tr, x_dev, y_dev, l2: float = 1e-2) -> float:
    """Dev accuracy of an L2-regularised logistic regression on standardised features."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_dev = (x_tr - mu) / sd, (x_dev - mu) / sd
    w = torch.zeros(x_tr.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)
    y = y_tr.to(torch.float32)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x_tr @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((((x_dev @ w + b) > 0).long() == y_dev.long()).to(torch.float32).mean())


@torch.no_grad()
def dropout_cosine(model, batch: dict, seed: int = 0) -> list[float]:
    """Per layer, centred cosine of the CLS features with a dropout mask against without."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    was = model.training
    try:
        model.eval()
        with record(model) as rec:
            model(**inputs)
        clean = [h[:, 0] for h in rec.hidden_states]
        model.train()
        torch.manual_seed(seed)
        with record(model) as rec:
            model(**inputs)
        noisy = [h[:, 0] for h in rec.hidden_states]
    finally:
        model.train(was)
    return [float(F.cosine_similarity(a - a.mean(0), c - c.mean(0), dim=-1).mean())
            for a, c in zip(clean, noisy)]


@torch.no_grad()
def branch_ratios(model, batch: dict) -> list[tuple[float, float]]:
    """Per layer, mean ||dense output|| / ||residual input|| at the attention and FFN adds."""
    model.eval()
    mask = batch["attention_mask"].bool()
    res: dict[tuple[int, int], float] = {}
    hooks = []
    bert = model.base_model
    for i, layer in enumerate(bert.encoder.layer):
        for j, block in enumerate((layer.attention.output, layer.output)):
            store: dict = {}
            hooks.append(block.dense.register_forward_hook(
                lambda mod, a, o, store=store: store.__setitem__("d", o)))

            def hook(mod, args, out, store=store, key=(i, j)):
                res[key] = float(store["d"][mask].norm(dim=-1).mean()
                                 / args[1][mask].norm(dim=-1).mean())
            hooks.append(block.register_forward_hook(hook))
    try:
        model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in hooks:
            h.remove()
    return [(res[(i, 0)], res[(i, 1)]) for i in range(len(bert.encoder.layer))]


def bibert_student(teacher, config: Path = ROOT / "models" / "minilm-sst2-bibert.yaml"):
    """The teacher binarised with the BiBERT stage's quantization of ``config`` (untrained)."""
    cfg = load_config(config)
    stage = next(s for s in cfg.stages if s.type == "bibert")
    return quantize_bert(copy.deepcopy(teacher), QuantBertConfig.from_dict(stage_quant_dict(stage)))


def report(name: str, model, tr: Encoded, dev: Encoded) -> str:
    f_tr, f_dev = layer_features(model, tr), layer_features(model, dev)
    probe = [probe_accuracy(a, tr.labels, c, dev.labels) for a, c in zip(f_tr, f_dev)]
    batch = next(loader(tr, epoch_batches(len(tr), 32, 0, 0)))
    cos = dropout_cosine(model, batch)
    br = branch_ratios(model, batch)
    fmt = lambda xs: "[" + ", ".join(f"{x:.2f}" for x in xs) + "]"
    return (f"{name}\n  probe    {fmt(probe)}\n  drop_cos {fmt(cos)}\n"
            f"  branch   attn {fmt([a for a, _ in br])} ffn {fmt([b for _, b in br])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="full-precision teacher checkpoint")
    ap.add_argument("--student", action="append", default=[], help="trained student checkpoints")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--dev", type=int, default=500)
    ap.add_argument("--max-seq-len", type=int, default=48)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    teacher, _, cfg = load_checkpoint(args.ckpt)
    tok = bb.load_tokenizer(cfg.model.backbone)
    d = cfg.data
    data_dir = d.dir if Path(d.dir).is_absolute() else ROOT / d.dir
    tr = Encoded(load_split(data_dir, d.task, "train", args.train, 42), tok, args.max_seq_len, False)
    dev = Encoded(load_split(data_dir, d.task, "dev", args.dev, 0), tok, args.max_seq_len, False)
    print(report("teacher (full precision)", teacher, tr, dev), flush=True)
    print(report("BiBERT student, untrained", bibert_student(teacher), tr, dev), flush=True)
    for s in args.student:
        print(report(s, load_checkpoint(s)[0], tr, dev), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
