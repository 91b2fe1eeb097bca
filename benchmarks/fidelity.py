"""Fake-quant vs integer fidelity: op-by-op error budget of one checkpoint, and the benchmark table.

  python benchmarks/fidelity.py budget --ckpt CKPT [--limit N] [--export-opt key=value ...]
      Swap one integer op at a time into a float64 re-implementation of the fake-quant forward
      (and one float op at a time into the integer model) and count prediction flips and the
      hidden-state error each causes (docs/arithmetic.md "fidelity budget").
  python benchmarks/fidelity.py table [--runs out/bench-accuracy/runs] [--out benchmarks/fidelity.md]
      Export every benchmark setting's final checkpoint and compare fake-quant, integer accuracy and
      prediction agreement on the full SST-2 dev set.

The hybrid forward (``Hybrid``) follows the fake-quant model's dataflow op by op; each op has a
float version (the fake-quant formula in float64, with the model's own rounding rule) and an
integer version (the sw.intsim op on the exported parameters, inputs rounded to its format).
All ops integer == sw.intsim == golden bit for bit (checked at start); all ops float == the
fake-quant model up to float32 round-off (its flips are reported as the floor of the budget).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402

OPS = ("emb", "qkv_in", "qkv", "softmax", "context", "dense_res", "ln", "ffn_in_q", "gelu", "pooler", "classifier")
OP_LABELS = {
    "emb": "embeddings (16-bit tables + integer LayerNorm)",
    "qkv_in": "residual -> Q/K/V input code requant",
    "qkv": "Q/K/V dense + requant (16-bit M, half up)",
    "softmax": "integer softmax (exp ROM + shifter + reciprocal)",
    "context": "P.V + context requant",
    "dense_res": "attn-out / FFN-out dense -> residual (M, 2^-RES_FRAC rounding, clamp)",
    "ln": "integer LayerNorm (layers)",
    "ffn_in_q": "residual -> FFN input code requant",
    "gelu": "FFN-in dense + GELU LUT",
    "pooler": "pooler (input requant, dense, tanh LUT -> 8-bit codes)",
    "classifier": "classifier (8-bit weights, 32-bit logits)",
}


def _rnd(v: torch.Tensor, rounding: str) -> torch.Tensor:
    return torch.round(v) if rounding == "half_even" else torch.floor(v + 0.5)


class Hybrid:
    """Fake-quant forward in float64 with any subset of ops replaced by their integer versions."""

    def __init__(self, model, params):
        from sw import intsim
        from sw.export import act_of, bias_of
        from sw.qbert import bert_of

        self.m = copy.deepcopy(model).double().eval()
        self.bert = bert_of(self.m)
        self.p = params
        self.sim = intsim.IntSim(params)
        self.frac = params.res_frac
        self.layers = []
        for i, (layer, sl) in enumerate(zip(self.bert.encoder.layer, self.sim.layers)):
            att = layer.attention.self
            d = {"sim": sl, "att": att, "layer": layer}
            d["x"] = self._q(att.query.act_quant, f"{i}.x")
            for key in ("q", "k", "v"):
                d[key] = self._q(getattr(att, f"{key}_quant"), f"{i}.{key}")
            d["p"] = None if att.mode == "bi" else self._q(att.p_quant, f"{i}.p")  # None: heaviside
            d["c"] = self._q(layer.attention.output.dense.act_quant, f"{i}.c")
            d["fx"] = self._q(layer.intermediate.dense.act_quant, f"{i}.fx")
            d["o"] = self._q(layer.output.dense.act_quant, f"{i}.o")
            for nm, mod in (("wq", att.query), ("wk", att.key), ("wv", att.value),
                            ("wao", layer.attention.output.dense), ("wi", layer.intermediate.dense),
                            ("wo", layer.output.dense)):
                with torch.no_grad():
                    d[nm] = (mod.quantized_weight().double(), torch.as_tensor(bias_of(mod, mod.out_features)))
            self.layers.append(d)
        self.act_of = act_of
        pd = self.bert.pooler.dense
        self.pooler_quant = hasattr(pd, "act_quant")
        if self.pooler_quant:
            self.px = self._q(pd.act_quant, "pooler.x")
        with torch.no_grad():
            w = pd.quantized_weight() if hasattr(pd, "quantized_weight") else pd.weight
            self.wp = (w.double(), torch.as_tensor(bias_of(pd, pd.out_features)))
        self.hidden_act = self.bert.config.hidden_act

    def _q(self, q, name):
        from sw.export import act_of

        a = act_of(q, name)
        return {"act": a, "rounding": q.rounding}

    # ---- float versions -------------------------------------------------------------------
    @staticmethod
    def fcode(x_real, qa):
        a = qa["act"]
        if a.sign:
            return (x_real >= 0).double()
        return _rnd(x_real / a.step, qa["rounding"]).clamp(a.lo, a.hi)

    @staticmethod
    def val(codes, qa):
        a = qa["act"]
        return 2 * codes - 1 if a.sign else codes * a.step

    # ---- helpers for integer versions -----------------------------------------------------
    def to_int(self, real):
        return torch.floor(real * (1 << self.frac) + 0.5).long()

    def to_real(self, r):
        return r.double() / (1 << self.frac)

    def forward(self, ids, mask, types, use: set, want_hidden=False, trace=None):
        from sw import intsim

        valid = mask != 0
        with torch.no_grad():
            if "emb" in use:
                h = self.to_real(self.sim.embedding(ids, types))
            else:
                h = self.bert.embeddings(input_ids=ids, token_type_ids=types)
            hiddens = [h]
            for li, d in enumerate(self.layers):
                sl = d["sim"]
                tr = (lambda k, v: trace.__setitem__(f"{li}.{k}", v)) if trace is not None else (lambda k, v: None)
                # residual -> input code
                if "qkv_in" in use:
                    x = sl.qkv_in(self.to_int(h)[None]).double()
                else:
                    x = self.fcode(h, d["x"])
                tr("x", x)
                codes = {}
                for key, w in (("q", "wq"), ("k", "wk"), ("v", "wv")):
                    if "qkv" in use:
                        codes[key] = getattr(sl, {"q": "query", "k": "key", "v": "value"}[key])(x.long()).double()
                    else:
                        codes[key] = self.fcode(F.linear(self.val(x, d["x"]), *d[w]), d[key])
                att = sl.attention
                b, n, _ = ids.shape[0], ids.shape[1], None
                heads, hd = att.op.heads, att.op.head_dim

                def split(t, qa):
                    return self.val(t, qa).view(b, n, heads, hd).transpose(1, 2)
                for key in codes:
                    tr(key, codes[key])
                vm = valid[:, None, None, :]
                if "softmax" in use:
                    s = intsim._mm(att._heads(codes["q"].long(), att.op.q_bits),
                                   att._heads(codes["k"].long(), att.op.k_bits).transpose(2, 3), 1 << att.op.score_bits)
                    p = (att.probs(s, vm) if att.probs is not None else ((s > 0) & vm).long()).double()
                else:
                    sc = torch.matmul(split(codes["q"], d["q"]), split(codes["k"], d["k"]).transpose(2, 3))
                    sc = sc * float(d["att"].scaling)
                    if d["p"] is None:  # BiBERT: heaviside of the score, 0 where masked
                        p = ((sc > 0) & vm).double()
                    else:
                        p = self.fcode(torch.softmax(sc.masked_fill(~vm, float("-inf")), -1), d["p"])
                tr("p", p)
                if "context" in use:
                    ctx = intsim._mm(p.long(), att._heads(codes["v"].long(), att.op.v_bits), 1 << att.op.context_bits)
                    ctx = ctx.transpose(1, 2).reshape(b, n, -1)
                    c = att.context(ctx[None]).double()
                else:
                    s_p = 1.0 if d["p"] is None else d["p"]["act"].step
                    ctx = torch.matmul(p * s_p, split(codes["v"], d["v"]))
                    c = self.fcode(ctx.transpose(1, 2).reshape(b, n, -1), d["c"])
                tr("c", c)
                if "dense_res" in use:
                    ao = self.to_real(sl.attn_out(c.long()))
                else:
                    ao = F.linear(self.val(c, d["c"]), *d["wao"])
                ln1 = d["layer"].attention.output.LayerNorm
                if "ln" in use:
                    h = self.to_real(sl.ln1(self.to_int(ao + h)))
                else:
                    h = ln1(ao + h)
                if "ffn_in_q" in use:
                    fx = sl.ffn_in_q(self.to_int(h)[None]).double()
                else:
                    fx = self.fcode(h, d["fx"])
                tr("fx", fx)
                if "gelu" in use:
                    g = sl.ffn_in(fx.long()).double()
                else:
                    pre = F.linear(self.val(fx, d["fx"]), *d["wi"])
                    g = self.fcode(self.bert.encoder.layer[0].intermediate.intermediate_act_fn(pre), d["o"])
                tr("g", g)
                if "dense_res" in use:
                    fo = self.to_real(sl.ffn_out(g.long()))
                else:
                    fo = F.linear(self.val(g, d["o"]), *d["wo"])
                ln2 = d["layer"].output.LayerNorm
                if "ln" in use:
                    h = self.to_real(sl.ln2(self.to_int(fo + h)))
                else:
                    h = ln2(fo + h)
                hiddens.append(h)
            cls = h[:, 0]
            thi = (1 << (self.p.classifier.in_bits - 1)) - 1
            if "pooler" in use:
                x = self.to_int(cls)
                if self.sim.pooler_in is not None:
                    x = self.sim.pooler_in(x[None])
                t = self.sim.pooler(x)  # tanh codes
            else:
                if self.pooler_quant:
                    xr = self.val(self.fcode(cls, self.px), self.px)
                else:
                    xr = cls
                t = torch.tanh(F.linear(xr, *self.wp))
            if "classifier" in use:
                if "pooler" not in use:
                    t = torch.floor(t * thi + 0.5).long()
                logits = self.sim.classifier(t).double() / (1 << self.p.logit_frac)
            else:
                tr = t.double() / thi if "pooler" in use else t
                logits = F.linear(tr, self.m.classifier.weight, self.m.classifier.bias)
        return (logits, hiddens) if want_hidden else logits


def _dataset(cfg, limit, data_dir=None):
    from sw import backbone as bb
    from sw.data import Encoded, load_split, task_spec

    d = cfg.data
    return Encoded(load_split(data_dir or d.dir, d.task, "dev", limit), bb.load_tokenizer(cfg.model.backbone),
                   d.max_seq_len, task_spec(d.task).regression)


def budget(ckpt: str, limit: int | None, opts_kv: list[str], batch_size: int = 100, act_integer=None) -> dict:
    """Op-by-op table: flips and hidden-state error of each integer op alone (float elsewhere) and
    of each float op alone in the integer model."""
    from dataclasses import replace

    from binbert.commands.export import _batches
    from sw.export import ExportOptions, build_params
    from sw.qbert import set_act_integer
    from sw.train import load_checkpoint

    model, state, cfg = load_checkpoint(ckpt)
    model.eval()
    if act_integer is not None:
        set_act_integer(model, act_integer)
    opts = ExportOptions()
    for kv in opts_kv:
        k, v = kv.split("=")
        opts = replace(opts, **{k: int(v)})
    params = build_params(model, opts)
    hy = Hybrid(model, params)
    ds = _dataset(cfg, limit)
    allint, none = set(OPS), set()
    configs = {"float": none, "int": allint}
    for op in OPS:
        configs[f"+{op}"] = {op}
        configs[f"-{op}"] = allint - {op}
    logits = {k: [] for k in configs}
    hid = {k: [] for k in configs}
    fq, sim_l, labels = [], [], []
    t0 = time.time()
    for b in _batches(ds, batch_size):
        ids, mask, tt = b["input_ids"], b["attention_mask"], b["token_type_ids"]
        labels.append(b["labels"].numpy())
        with torch.no_grad():
            fq.append(model(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits.double().numpy())
            sim_l.append((hy.sim.logits(ids, mask, tt).double() / (1 << params.logit_frac)).numpy())
        for k, use in configs.items():
            lg, hs = hy.forward(ids, mask, tt, use, want_hidden=True)
            logits[k].append(lg.numpy())
            m = mask.bool()
            hid[k].append(hs[-1][m].numpy())  # final hidden state of every valid token
    y = np.concatenate(labels)
    fq = np.concatenate(fq)
    sim_l = np.concatenate(sim_l)
    L = {k: np.concatenate(v) for k, v in logits.items()}
    H = {k: np.concatenate(v) for k, v in hid.items()}
    pred = {k: v.argmax(1) for k, v in L.items()}
    ref_rms = float(np.sqrt((H["float"] ** 2).mean()))

    def herr(a, b):
        return float(np.sqrt(((H[a] - H[b]) ** 2).mean()) / ref_rms)

    rep = {"ckpt": ckpt, "examples": int(len(y)), "seconds": round(time.time() - t0, 1),
           "options": {k: v for k, v in vars(opts).items()},
           "fake_quant_acc": float((fq.argmax(1) == y).mean()),
           "golden_acc": float((sim_l.argmax(1) == y).mean()),
           "agreement": float((fq.argmax(1) == sim_l.argmax(1)).mean()),
           "hybrid_int_equals_intsim": bool(np.array_equal(L["int"], sim_l)),
           "hybrid_float_vs_fake_quant_flips": int((pred["float"] != fq.argmax(1)).sum()),
           "hybrid_float_max_logit_diff": float(np.abs(L["float"] - fq).max()),
           "float_vs_int_flips": int((pred["float"] != pred["int"]).sum()),
           "float_vs_int_hidden_rel_rms": herr("float", "int"),
           "ops": {}}
    margin = np.abs(fq[:, 1] - fq[:, 0]) if fq.shape[1] == 2 else None
    if margin is not None:
        rep["fake_quant_margin_quantiles"] = {q: float(np.quantile(margin, q)) for q in (0.01, 0.05, 0.1, 0.5)}
    for op in OPS:
        rep["ops"][op] = {
            "label": OP_LABELS[op],
            "alone_flips": int((pred[f"+{op}"] != pred["float"]).sum()),
            "alone_hidden_rel_rms": herr(f"+{op}", "float"),
            "alone_acc": float((pred[f"+{op}"] == y).mean()),
            "all_but_flips_vs_int": int((pred[f"-{op}"] != pred["int"]).sum()),
            "all_but_flips_vs_float": int((pred[f"-{op}"] != pred["float"]).sum()),
            "all_but_hidden_rel_rms": herr(f"-{op}", "float"),
        }
    return rep


def print_budget(rep: dict) -> str:
    lines = [f"{rep['examples']} examples, fake-quant acc {100*rep['fake_quant_acc']:.2f} %, golden "
             f"{100*rep['golden_acc']:.2f} %, agreement {100*rep['agreement']:.2f} % "
             f"(hybrid int == intsim: {rep['hybrid_int_equals_intsim']}; hybrid float vs fp32 model: "
             f"{rep['hybrid_float_vs_fake_quant_flips']} flips; all float vs all int: "
             f"{rep['float_vs_int_flips']} flips, hidden rel. RMS {rep['float_vs_int_hidden_rel_rms']:.2e})",
             "", "| op | flips, this op integer alone | hidden rel. RMS err | flips vs float, all integer but this op | hidden rel. RMS err |",
             "|---|---|---|---|---|"]
    for op, r in rep["ops"].items():
        lines.append(f"| {r['label']} | {r['alone_flips']} | {r['alone_hidden_rel_rms']:.2e} | "
                     f"{r['all_but_flips_vs_float']} | {r['all_but_hidden_rel_rms']:.2e} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# benchmark table (issue #4 item 7)
# --------------------------------------------------------------------------------------------

# (variant, run directory, final stage) as benchmarks/accuracy.py reports them
SETTINGS = [("tws-a8", "binary"), ("tws-a4", "binary"), ("bwn-a8", "bwn"), ("adaptive-25", "binary"),
            ("adaptive-50", "binary"), ("bibert", "bibert")]
SPOT = 256  # sentences also run through sw.intsim (bit-identity with the golden model)


def _device() -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} cores (shared with other jobs), torch {torch.__version__} CPU, 1 thread"


def fidelity_row(ckpt: Path, limit: int | None, batch_size: int = 64) -> dict:
    """Export ``ckpt`` and compare fake-quant, intsim (all of dev) and golden (first SPOT) on dev."""
    import tempfile

    from hw.errors import BinbertError
    from binbert.commands.export import _batches
    from sw.export import export_model
    from hw.golden.export_format import load_params, logits_real, run
    from sw.intsim import IntSim
    from sw.train import load_checkpoint

    row = {"ckpt": str(ckpt)}
    t0 = time.time()
    model, state, cfg = load_checkpoint(ckpt)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="binbert-fidelity-") as tmp:
        try:
            manifest = export_model(model, tmp, meta={"checkpoint": str(ckpt)})
        except BinbertError as e:
            row["refused"] = str(e)
            return row
        m = json.loads(manifest.read_text())
        row["rom_bytes"] = sum(f["bytes"] for r in m["roms"].values() for k, f in r["files"].items() if k == "bin")
        row["export_s"] = round(time.time() - t0, 1)
        params, _ = load_params(tmp)
    ds = _dataset(cfg, limit)
    fq, gl, y = [], [], []
    t_fq = t_gold = 0.0
    with torch.no_grad():
        for b in _batches(ds, batch_size):
            y.append(b["labels"].numpy())
            t = time.time()
            fq.append(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                            token_type_ids=b["token_type_ids"]).logits.double().numpy())
            t_fq += time.time() - t
            t = time.time()
            gl.append(run(params, b["input_ids"].numpy(), b["attention_mask"].numpy(),
                          b["token_type_ids"].numpy(), batch_size))
            t_gold += time.time() - t
    y, fq, gl = np.concatenate(y), np.concatenate(fq), np.concatenate(gl)
    # the PyTorch integer-simulation path on the first SPOT sentences: must equal golden bit for bit
    spot = next(iter(_batches(ds, SPOT)))
    t = time.time()
    il = IntSim(params).logits(spot["input_ids"], spot["attention_mask"], spot["token_type_ids"]).numpy()
    t_sim = time.time() - t
    row.update(examples=len(y), fake_quant_acc=float((fq.argmax(1) == y).mean()),
               integer_acc=float((gl.argmax(1) == y).mean()),
               agreement=float((fq.argmax(1) == gl.argmax(1)).mean()),
               intsim_spot=len(il), golden_equals_intsim=bool(np.array_equal(gl[: len(il)], il)),
               seconds={"fake_quant": round(t_fq, 1), "golden": round(t_gold, 1), "intsim_spot": round(t_sim, 1)},
               max_abs_logit_diff=float(np.abs(logits_real(params, gl) - fq).max()))
    return row


def write_table(rows: list[dict], out: Path, limit, cmd: str) -> None:
    lines = ["# Fake-quant vs integer model on SST-2 dev (benchmark settings)", "",
             "Generated by `" + cmd + "` (benchmarks/fidelity.py). Each setting's final checkpoint "
             "(the stage benchmarks/accuracy.py reports) is exported with the default options "
             "(docs/arithmetic.md §10-§19) and evaluated on the "
             + ("full SST-2 dev set of data/glue" if limit is None else f"first {limit} dev sentences") + ". "
             "Fake-quant = the float PyTorch model (`model(**batch)`); integer = the exported integer "
             "model, computed by the numpy golden model (hw/golden/export_format.py, reading only the export directory) on "
             f"every sentence; the PyTorch integer-simulation path sw/intsim.py ran the first {SPOT} too "
             "and must give the same logits bit for bit (column `golden == intsim`). "
             "Agreement = same predicted label. ROM bytes = all exported arrays in the raw `.bin` format.", "",
             "| setting | checkpoint | fake-quant acc (%) | integer acc (%) | agreement (%) | ROM bytes | golden == intsim | s: fake-quant / golden |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['setting']} | `{r['ckpt']}` | — | export refused: {r['refused']} | — | — | — | — |")
        elif "missing" in r:
            lines.append(f"| {r['setting']} | `{r['ckpt']}` | — | no checkpoint (not trained) | — | — | — | — |")
        else:
            s = r["seconds"]
            lines.append(f"| {r['setting']} | `{r['ckpt']}` | {100*r['fake_quant_acc']:.2f} | {100*r['integer_acc']:.2f} | "
                         f"{100*r['agreement']:.2f} | {r['rom_bytes']:,} | {r['golden_equals_intsim']} ({r['intsim_spot']}) | "
                         f"{s['fake_quant']:.0f} / {s['golden']:.0f} |")
    n = next((r["examples"] for r in rows if "examples" in r), None)
    met = [r["setting"] for r in rows if r.get("agreement", 0) >= 0.995
           and abs(r["integer_acc"] - r["fake_quant_acc"]) <= 0.003]
    chance = [r["setting"] for r in rows if "fake_quant_acc" in r and r["fake_quant_acc"] < 0.55]
    lines += ["", f"{n} dev sentences. Device: {_device()}.", "",
              "Goal (issue #4): agreement >= 99.5 % and accuracy within ±0.3 pt. Met by: "
              + (", ".join(met) if met else "none") + ". "
              "Why the others fall short: see the fidelity budget in docs/arithmetic.md (§9 continued): "
              "a binary layer turns one activation code rounded the other way into flipped codes in all "
              "its outputs, so after a layer or two the float and the integer model carry two independent "
              "samples of the activation quantization noise; agreement then measures the classifier's "
              "sensitivity to that noise (larger at 4 bits than at 8), not the precision of any one "
              "integer op."]
    if chance:
        lines.append("")
        lines.append(", ".join(chance) + ": the model is at chance (fake-quant accuracy ~50 %), its logits "
                     "sit near the decision boundary, so its agreement carries no information.")
    lines.append("")
    out.write_text("\n".join(lines))


def main(argv=None) -> int:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("budget")
    b.add_argument("--ckpt", required=True)
    b.add_argument("--limit", type=int, default=None)
    b.add_argument("--export-opt", action="append", default=[])
    b.add_argument("--act-integer", choices=("on", "off"), default=None)
    b.add_argument("--json", default=None)
    t = sub.add_parser("table")
    t.add_argument("--runs", default="out/bench-accuracy/runs")
    t.add_argument("--out", default="benchmarks/fidelity.md")
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--only", action="append", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "budget":
        ai = None if args.act_integer is None else args.act_integer == "on"
        rep = budget(args.ckpt, args.limit, args.export_opt, act_integer=ai)
        print(json.dumps(rep, indent=1))
        print(print_budget(rep))
        if args.json:
            Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")
    if args.cmd == "table":
        rows = []
        cache = Path(args.out).with_suffix(".json")
        old = {r["setting"]: r for r in json.loads(cache.read_text())} if cache.is_file() else {}
        for name, stage in SETTINGS:
            if args.only and name not in args.only:
                if name in old:
                    rows.append(old[name])
                continue
            ckpt = Path(args.runs) / name / stage / "final"
            if not (ckpt / "state.json").is_file():
                row = {"ckpt": str(ckpt), "missing": True}
            else:
                row = fidelity_row(ckpt, args.limit)
            row["setting"] = name
            print(json.dumps(row), flush=True)
            rows.append(row)
            cache.write_text(json.dumps(rows, indent=1) + "\n")
        cmd = "python benchmarks/fidelity.py table" + (f" --limit {args.limit}" if args.limit else "")
        write_table(rows, Path(args.out), args.limit, cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
