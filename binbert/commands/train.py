"""``binbert train`` and ``binbert eval`` (registered into the one CLI by binbert.cli)."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="run the training stages of a YAML config (teacher, ternary, split, "
                      "binary, or BiBERT)",
        description="Run the stages of CONFIG into OUT/<stage>/. Re-running the same command "
                    "resumes: complete stages are loaded, an interrupted one continues from "
                    "its last checkpoint. Under torchrun (WORLD_SIZE set) it trains with DDP.")
    p.add_argument("--config", required=True, help="YAML config, e.g. models/demo.yaml")
    p.add_argument("--data", default=None, help="GLUE data directory (overrides data.dir)")
    p.add_argument("--out", default="out/train", help="output directory (default: out/train)")
    p.add_argument("--stages", default=None,
                   help="comma-separated stage names to run (earlier stages must be complete "
                        "in OUT)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap every stage at N optimizer steps (smoke runs)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (stage and evaluation lines are still logged)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no log lines")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "eval", help="dev-set metrics of a checkpoint (fake-quant PyTorch model)",
        description="Rebuild the model of a checkpoint directory (e.g. OUT/binary/final) and "
                    "print its dev metrics as JSON.")
    e.add_argument("--ckpt", required=True, help="checkpoint directory")
    e.add_argument("--data", default=None, help="GLUE data directory (default: the "
                                                "checkpoint config's data.dir)")
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--integer", action="store_true",
                   help="also run the integer golden model (as `binbert eval-integer`)")
    e.add_argument("--export", default=None, help="with --integer: export directory of CKPT")
    e.add_argument("--limit", type=int, default=None,
                   help="score the first N dev examples (default: the config's data.eval_limit "
                        "on its own dev set, the whole file of any other --data)")
    e.set_defaults(func=cmd_eval)


def _positive(name: str, v: int | None) -> None:
    from hw.errors import BinbertError

    if v is not None and v <= 0:
        raise BinbertError(f"{name} must be a positive integer, not {v}")


def cmd_train(args: argparse.Namespace) -> int:
    from sw.config import load_config
    from sw.train import Trainer

    _positive("--max-steps", args.max_steps)
    cfg = load_config(args.config)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    tr = Trainer(cfg, args.out, data_dir=args.data, max_steps=args.max_steps, stages=stages,
                 progress=not (args.no_progress or args.quiet), verbose=not args.quiet)
    summary = tr.run()
    if tr.dist.main:
        print(json.dumps({k: v.get("dev") if isinstance(v, dict) else v
                          for k, v in summary.items()}, indent=1))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sw import backbone as bb
    from sw.data import Encoded, eval_examples, task_spec, truncation_report
    from sw.train import evaluate, load_checkpoint

    _positive("--batch-size", args.batch_size)
    _positive("--limit", args.limit)
    if args.integer:  # the integer golden model beside fake-quant: one implementation, two names
        from binbert.commands.export import cmd_eval_integer

        return cmd_eval_integer(argparse.Namespace(
            ckpt=args.ckpt, export=args.export, data=args.data, limit=args.limit,
            batch_size=args.batch_size or 64, no_intsim=False, json=None))
    model, state, cfg = load_checkpoint(args.ckpt)
    d = cfg.data
    spec = task_spec(d.task)
    examples, rows = eval_examples(d.task, args.data, d.dir, d.eval_limit, args.limit)
    ds = Encoded(examples, bb.load_tokenizer(cfg.model.backbone), d.max_seq_len, spec.regression)
    metrics = evaluate(model, ds, d.task, args.batch_size or cfg.train.eval_batch_size)
    print(f"eval: {rows}\neval: {truncation_report('dev', ds)}", file=sys.stderr)
    print(json.dumps({"ckpt": str(args.ckpt), "stage": state.get("stage"), "task": d.task,
                      "examples": len(ds), **metrics}, indent=1))
    return 0
