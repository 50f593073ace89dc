"""The config vocabulary stages share, defined once (stdlib only: the driver imports it to
validate a spec without torch).

- `BenchmarkConfig`: one evaluation set. The `benchmarks/` group holds a list of them, and the
  spec interpolates that one list into `data.decontamination.benchmarks` and `eval.benchmarks`, so
  what the data stage decontaminates against is exactly what the eval stage scores.
- The training sub-configs, grouped by concern as torchtitan's `job_config.py` and litgpt's
  `args.py` group theirs: `batch`, `optimizer`, `schedule`, `validation`, `checkpoint`, `logging`.
  Pretrain and tune both hold them under these names, so `pretrain.optimizer.lr` and
  `tune.optimizer.lr` mean the same thing. Field names follow Megatron's arguments (`lr`,
  `adam_beta1`, `clip_grad`, `warmup_iters`, `lr_decay_style`, `save_interval`, `log_interval`):
  pretrain passes them to megatron-core as they are; tune translates them once into
  transformers' `TrainingArguments` names.

The classes' defaults are the pretraining ones, and every stage uses them as they are: a YAML
that sets one field of a group (`optimizer: {lr: 2e-5}`) gets the class defaults for the rest, so
a stage-specific default in a `default_factory` would silently vanish as soon as a YAML touched
its group. Stage-specific values live in the stage's YAML (conf/tune/sft.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

_NOT_HASHED = {"hash": False}


def _positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {value!r} must be a positive integer")


def _non_negative(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: {value!r} must be a non-negative integer")


@dataclass
class BenchmarkConfig:
    """One evaluation set: decontaminated against by the data stage, scored by the eval stage."""

    name: str
    """Benchmark name, as reported in decontamination.json and next to eval scores."""
    path: str = field(metadata={"hash": "content"})
    """File or glob of the split that is scored (.jsonl, .json, .csv, optionally .gz / .bz2);
    hashed by content, so a changed copy re-runs both decontamination and scoring."""
    text_fields: list[str] = field(default_factory=lambda: ["question"])
    """Fields joined (by newline) into the text of an item: what decontamination looks for."""
    id_field: Optional[str] = None
    """Field with the item id; None uses `file:line` (`benchmark_item_id`)."""
    mode: Literal["gen", "ppl"] = "gen"
    """How the eval stage scores it: generation, or perplexity-ranked multiple choice."""

    def __post_init__(self) -> None:
        if not self.name or any(ch in self.name for ch in "/\\ ${}"):
            raise ValueError(f"name: {self.name!r} must be non-empty without '/', spaces, '$' or braces")
        if not self.path:
            raise ValueError(f"path: benchmark {self.name!r} has no path")
        if not self.text_fields:
            raise ValueError(f"text_fields: benchmark {self.name!r} lists no fields")


def benchmark_item_id(file_name: str, number: int) -> str:
    """An item's id when its benchmark has no `id_field`: the file name without .gz/.bz2, then the
    line of a JSON Lines item (the first line of a multi-line text item) or the ordinal + 1 of a
    CSV record (the header is 1). The data stage names contaminated items by it and the eval
    stage the items it scores, so one name reaches from corpus to score."""
    return f"{file_name.removesuffix('.gz').removesuffix('.bz2')}:{number}"


def check_benchmark_names(benchmarks: list[BenchmarkConfig]) -> None:
    """Benchmark names key every report (decontamination.json, scores): they must be unique."""
    names = [b.name for b in benchmarks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"benchmarks: names must be unique, repeated: {repeated}")


@dataclass
class BatchConfig:
    """What one optimizer step sees."""

    seq_length: int = 128
    """Tokens per training sample (longer examples are truncated)."""
    micro_batch_size: int = 4
    """Samples per forward/backward on one data-parallel rank."""
    global_batch_size: int = 8
    """Samples per optimizer step over all data-parallel ranks; the rest of the way from
    micro_batch_size x data-parallel ranks is gradient accumulation."""

    def __post_init__(self) -> None:
        _positive(self, "seq_length", "micro_batch_size", "global_batch_size")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size: {self.global_batch_size} is not divisible by "
                f"micro_batch_size={self.micro_batch_size}")

    def check_data_parallel(self, data_parallel_size: int) -> None:
        """Raise unless the global batch splits into whole micro-batches on every DP rank."""
        if self.global_batch_size % (self.micro_batch_size * data_parallel_size):
            raise ValueError(
                f"global_batch_size: {self.global_batch_size} is not divisible by "
                f"micro_batch_size * data_parallel_size = {self.micro_batch_size} * "
                f"{data_parallel_size}")


@dataclass
class OptimizerConfig:
    """AdamW with decoupled weight decay and global gradient-norm clipping."""

    lr: float = 3.0e-4
    """Peak learning rate (reached after warmup)."""
    weight_decay: float = 0.1
    """Decoupled weight decay (not applied to norms and biases)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2."""
    adam_eps: float = 1.0e-8
    """AdamW epsilon."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: {self.lr!r} must be > 0")
        if not 0.0 <= self.adam_beta1 < 1.0 or not 0.0 <= self.adam_beta2 < 1.0:
            raise ValueError(
                f"adam_beta1: betas ({self.adam_beta1}, {self.adam_beta2}) must be in [0, 1)")
        if self.adam_eps <= 0:
            raise ValueError(f"adam_eps: {self.adam_eps!r} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: {self.weight_decay!r} must be >= 0")
        if self.clip_grad < 0:
            raise ValueError(f"clip_grad: {self.clip_grad!r} must be >= 0 (0 = no clipping)")


@dataclass
class ScheduleConfig:
    """How long to train and the learning-rate curve: linear warmup from 0 to `optimizer.lr`,
    then decay to `min_lr`."""

    train_iters: Optional[int] = 100
    """Optimizer steps to train for; None = `epochs` passes over the training data decide."""
    epochs: Optional[float] = None
    """Passes over the training data, used when train_iters is None (pretraining counts steps
    only: its blended datasets are sized by samples, not passes)."""
    warmup_iters: int = 10
    """Steps of linear warmup from 0 to optimizer.lr."""
    lr_decay_style: Literal["cosine", "linear", "constant"] = "cosine"
    """Shape of the decay from optimizer.lr to min_lr after warmup."""
    lr_decay_iters: Optional[int] = None
    """Step at which the decay reaches min_lr; None = the last step (train_iters)."""
    min_lr: float = 3.0e-5
    """Learning rate at the end of the decay."""

    def __post_init__(self) -> None:
        if self.train_iters is None and self.epochs is None:
            raise ValueError("train_iters: set train_iters or epochs")
        if self.train_iters is not None:
            _positive(self, "train_iters")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs: {self.epochs!r} must be > 0")
        _non_negative(self, "warmup_iters")
        if self.lr_decay_style not in ("cosine", "linear", "constant"):
            raise ValueError(
                f"lr_decay_style: {self.lr_decay_style!r} must be cosine, linear or constant")
        if self.lr_decay_iters is not None and self.lr_decay_iters <= self.warmup_iters:
            raise ValueError(
                f"lr_decay_iters: {self.lr_decay_iters} must exceed warmup_iters={self.warmup_iters}")
        decay = self.decay_iters
        if decay is not None and self.warmup_iters and self.warmup_iters >= decay:
            raise ValueError(
                f"warmup_iters: {self.warmup_iters} must be smaller than the decay length "
                f"(lr_decay_iters or train_iters = {decay})")
        if self.min_lr < 0:
            raise ValueError(f"min_lr: {self.min_lr!r} must be >= 0")

    @property
    def decay_iters(self) -> Optional[int]:
        """The step at which the learning rate reaches min_lr (None while the length is in epochs)."""
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.train_iters

    def check_lr(self, optimizer: OptimizerConfig) -> None:
        """The decay ends at or below the peak; raises naming `schedule.min_lr`."""
        if self.min_lr > optimizer.lr:
            raise ValueError(
                f"schedule.min_lr: {self.min_lr!r} must be within [0, optimizer.lr={optimizer.lr}]")


@dataclass
class ValidationConfig:
    """Periodic loss on the held-out split."""

    eval_interval: int = 50
    """Validate every N steps (and after the last); 0 = only after the last."""
    eval_iters: int = 4
    """Validation batches (of global_batch_size samples) per evaluation; 0 = no validation."""

    def __post_init__(self) -> None:
        _non_negative(self, "eval_interval", "eval_iters")


@dataclass
class CheckpointConfig:
    """Periodic checkpoints (a re-run of the step resumes from the last complete one)."""

    save_interval: int = 50
    """Save every N steps (and after the last); 0 = only after the last."""

    def __post_init__(self) -> None:
        _non_negative(self, "save_interval")


@dataclass
class LoggingConfig:
    """Where metrics go and how often; nothing here changes a step's output (not hashed)."""

    log_interval: int = field(default=1, metadata=_NOT_HASHED)
    """Log (and write metrics.jsonl / TensorBoard) every N steps."""
    tensorboard: bool = field(default=True, metadata=_NOT_HASHED)
    """Write TensorBoard event files into `tensorboard/`."""
    wandb: Literal["off", "offline", "online"] = field(default="off", metadata=_NOT_HASHED)
    """Weights & Biases logging; offline writes into `wandb/` without network."""
    wandb_project: str = field(default="fullchain", metadata=_NOT_HASHED)
    """W&B project name."""
    peak_flops: Optional[float] = field(default=None, metadata=_NOT_HASHED)
    """FLOP/s per rank that MFU divides by; None = measured fp32 matmul peak (CPU) / data-sheet
    bf16 rate (GPU)."""

    def __post_init__(self) -> None:
        _positive(self, "log_interval")
        if self.wandb not in ("off", "offline", "online"):
            raise ValueError(f"wandb: {self.wandb!r} must be off, offline or online")
