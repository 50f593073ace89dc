"""Config schema of the tune stage (SFT, LoRA, DPO). The stage itself is planned (issue to come);
the schema is fixed now so the spec tree, sweeps and step ids cover every stage.

The training concerns (batch, optimizer, schedule, checkpoint, logging) are core's shared
sub-configs, under the same names as in pretrain. The library-specific parts keep their
library's names: `lora` holds peft's `LoraConfig` arguments, `dpo` trl's `DPOConfig` ones;
`fullchain.tune.translate` turns each into the library's keyword arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage
from fullchain.core.schema import (
    BatchConfig,
    CheckpointConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
)


@dataclass
class LoraConfig:
    """peft.LoraConfig's arguments, under peft's names (used when method is lora)."""

    r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """Scaling numerator: the adapter's output is multiplied by lora_alpha / r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch's input."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names (HF Llama layout) that get adapters."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r: {self.r} must be >= 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: {self.lora_dropout} must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("target_modules: name at least one module")


@dataclass
class DpoConfig:
    """trl.DPOConfig's DPO-specific arguments, under trl's names (used when method is dpo)."""

    beta: float = 0.1
    """Temperature of the implicit reward: how far the policy may move from the reference."""
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid"
    """sigmoid = the DPO paper's loss; hinge = SLiC; ipo = IPO's squared loss."""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta: {self.beta} must be > 0")


@dataclass
class TuneConfig:
    """One fine-tuning run of a Hugging Face model directory (the pretrain stage's `hf/`)."""

    dataset: str = field(metadata={"hash": "content"})
    """Training file (alpaca / sharegpt / preference-pair JSON); hashed by content."""
    method: Literal["sft", "lora", "dpo"] = "sft"
    """Full-parameter SFT, LoRA SFT, or DPO on preference pairs."""
    dataset_format: Literal["alpaca", "sharegpt", "dpo_pairs"] = "alpaca"
    """How records map to chat turns."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """Sequence length (longer examples are truncated), micro and global batch size."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """AdamW."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Steps (or epochs: set train_iters to null) to train, warmup, decay to min_lr."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints during training; 0 = only the final model."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Log interval, TensorBoard, W&B (not hashed)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter shape, used when method is lora."""
    dpo: DpoConfig = field(default_factory=DpoConfig)
    """DPO loss, used when method is dpo."""
    seed: int = 1234
    """Seed for data order and init of new weights."""

    def __post_init__(self) -> None:
        self.schedule.check_lr(self.optimizer)
        if self.schedule.lr_decay_iters is not None:
            raise ValueError("schedule.lr_decay_iters: transformers decays over the whole run; "
                             "leave it null for tune")
        if self.method == "dpo" and self.dataset_format != "dpo_pairs":
            raise ValueError("dataset_format: method dpo needs dataset_format dpo_pairs")
        if self.method != "dpo" and self.dataset_format == "dpo_pairs":
            raise ValueError(f"dataset_format: dpo_pairs needs method dpo, not {self.method}")


STAGE = Stage(kind="tune", module="fullchain.tune", config=TuneConfig,
              inputs={"model": Role("hf_model", doc="the model to fine-tune"),
                      "conversations": Role("conversations", optional=True,
                                            doc="chat data or preference pairs to train on")},
              outputs={"hf_model": "hf"})
