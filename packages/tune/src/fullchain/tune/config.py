"""Config of the tune stage (full SFT, LoRA, QLoRA, DPO). Stdlib only: the driver validates specs
without torch.

The training concerns (batch, optimizer, schedule, checkpoint, logging) are core's shared
sub-configs, under the same names as in pretrain. The library-specific parts keep their
library's names: `lora` holds peft's `LoraConfig` arguments, `dpo` trl's `DPOConfig` ones;
`fullchain.tune.translate` turns each into the library's keyword arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from fullchain.core.contracts import Role, Stage
from fullchain.core.placement import Placement
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
class QloraConfig:
    """transformers.BitsAndBytesConfig's 4-bit arguments, under their names (method qlora; the
    adapters are `lora`'s)."""

    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type of the frozen base weights (QLoRA's NormalFloat4 by default)."""
    bnb_4bit_use_double_quant: bool = True
    """Quantize the quantization constants too (~0.4 bit/parameter less)."""


@dataclass
class TuneConfig:
    """One fine-tuning run of a Hugging Face model directory (the pretrain stage's `hf/`, or
    `base_model`) on a conversation set (the `conversations` input, or `dataset`)."""

    method: Literal["sft", "lora", "qlora", "dpo"] = "sft"
    """Full-parameter SFT, LoRA SFT, QLoRA SFT (4-bit base, GPU only), or DPO on preference pairs
    (full, or LoRA when `dpo_adapter` is true)."""
    base_model: Optional[str] = field(default=None, metadata={"hash": "content"})
    """A local Hugging Face causal-LM directory to fine-tune instead of the `model` input
    (hashed by content); unwire the input then (`~graph.tune.inputs.model`)."""
    dataset: Optional[str] = field(default=None, metadata={"hash": "content"})
    """A conversation set directory (`conversations.json` + JSONL, core's `conversations`
    layout) to train on when no `conversations` input is wired; hashed by content."""
    train_split: str = "train"
    """Split of the conversation set to train on."""
    eval_split: Optional[str] = "valid"
    """Split for the evaluation loss (skipped when the set has no such split); None = none."""
    max_train_records: Optional[int] = None
    """Use only the first N training records (None = all): quick runs on a large set."""
    packing: bool = False
    """Pack several conversations into each row of batch.seq_length tokens (attention and
    positions kept per conversation); SFT methods only."""
    train_sampling_strategy: Literal["random", "group_by_length"] = "random"
    """transformers' `TrainingArguments.train_sampling_strategy`: the order rows are drawn in.
    group_by_length draws batches of rows of similar length (its `LengthGroupedSampler`), so an
    unpacked batch is padded little: with short rows of varied length (the demo's tool-use
    conversations) it is faster than packing, whose block-diagonal masks over long rows cost
    attention compute, but a batch then holds one kind of conversation at a time: on the demo it
    learned half as much per conversation (docs/tune.md)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute dtype; auto = bf16 with CUDA, fp32 on CPU (resolved before hashing)."""
    dpo_adapter: bool = False
    """DPO with LoRA adapters (`lora`) on a frozen base, which then also serves as the reference
    (adapters disabled); false = full-parameter DPO against a frozen copy."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """Sequence length (longer examples are truncated), micro and global batch size."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """AdamW."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Steps (or epochs: set train_iters to null) to train, warmup, decay to min_lr."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints during training (a re-run of the step resumes from the last); 0 = only the
    final model."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Log interval, TensorBoard, W&B (not hashed)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter shape, used by lora, qlora and DPO with dpo_adapter."""
    qlora: QloraConfig = field(default_factory=QloraConfig)
    """4-bit quantization of the base, used when method is qlora."""
    dpo: DpoConfig = field(default_factory=DpoConfig)
    """DPO loss, used when method is dpo."""
    seed: int = 1234
    """Seed for data order and init of new weights."""
    num_workers: int = field(default=0, metadata={"hash": False})
    """DataLoader worker processes (0 = load in the training process)."""

    def __post_init__(self) -> None:
        self.schedule.check_lr(self.optimizer)
        if self.schedule.lr_decay_iters is not None:
            raise ValueError("schedule.lr_decay_iters: transformers decays over the whole run; "
                             "leave it null for tune")
        if self.method not in ("sft", "lora", "qlora", "dpo"):
            raise ValueError(f"method: {self.method!r} must be sft, lora, qlora or dpo")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision: {self.precision!r} must be auto, fp32 or bf16")
        if self.packing and self.method == "dpo":
            raise ValueError("packing: not supported for dpo (pairs are scored one by one)")
        if self.max_train_records is not None and self.max_train_records < 1:
            raise ValueError(f"max_train_records: {self.max_train_records} must be >= 1 or null")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: {self.num_workers} must be >= 0")

    @property
    def uses_adapter(self) -> bool:
        """LoRA adapters on a frozen base (lora, qlora, dpo with dpo_adapter)."""
        return self.method in ("lora", "qlora") or (self.method == "dpo" and self.dpo_adapter)

    def resolve(self, placement: Placement) -> None:
        """Before hashing: `auto` precision for the hardware, and what the placement cannot run
        (QLoRA needs a GPU; the global batch must split over the data-parallel ranks)."""
        cuda = placement.accelerator == "cuda"
        if self.precision == "auto":
            self.precision = "bf16" if cuda else "fp32"
        if self.method == "qlora" and not cuda:
            raise ValueError(
                "method: qlora quantizes the base model to 4 bits with bitsandbytes, which needs a "
                "CUDA GPU; this step runs on CPU. Use tune=lora (the same adapters on an "
                "unquantized base) or run on a GPU machine")
        try:
            self.batch.check_data_parallel(placement.world_size)
        except ValueError as exc:
            raise ValueError(f"batch.{exc} (launcher: {placement.world_size} process(es) for this "
                             "step)") from None


# Tune reads a HF model (pretrain's export, another tune step's, or `base_model`) and a
# conversation set, and provides the merged HF model that eval, deploy and a further tune read.
STAGE = Stage(kind="tune", module="fullchain.tune", config=TuneConfig,
              inputs={"model": Role("hf_model", optional=True,
                                    doc="the model to fine-tune (or tune.base_model)"),
                      "conversations": Role("conversations", optional=True,
                                            doc="chat data or preference pairs (or tune.dataset)")},
              outputs={"hf_model": "hf"})
