"""Configuration of the pretrain stage. Stdlib only (the driver validates specs without torch).

Every rule that can be checked from the config alone is checked here, in `__post_init__`, so a
bad spec fails before a process group is formed or a dataset is read. Rules that need the world
size or the data artifact (vocabulary, dataset length) are checked in `train.py` before step 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.pretrain.model_config import ModelConfig

_NOT_HASHED = {"hash": False}


@dataclass
class ParallelConfig:
    """How the model and the batch are split over ranks (megatron-core parallel_state)."""

    tensor_parallel_size: int = 1
    """Ranks that split each layer's matmuls (Megatron TP); must divide heads, groups and ffn."""
    pipeline_parallel_size: int = 1
    """Ranks that split the stack of layers into stages (Megatron PP); must divide num_layers."""
    data_parallel_size: int | None = None
    """Model replicas; None = whatever the world gives (world_size / (tp * pp))."""
    sequence_parallel: bool = False
    """Split norms/dropout activations along the sequence over TP ranks (needs TransformerEngine)."""
    use_distributed_optimizer: bool = True
    """Shard the optimizer state over data-parallel ranks (ZeRO-1 style, Megatron's DistOpt)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend; auto = nccl with CUDA, gloo on CPU."""

    def __post_init__(self) -> None:
        for key in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: {value!r} must be a positive integer")
        dp = self.data_parallel_size
        if dp is not None and (isinstance(dp, bool) or not isinstance(dp, int) or dp < 1):
            raise ValueError(f"data_parallel_size: {dp!r} must be a positive integer or null")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend: {self.backend!r} must be one of auto, gloo, nccl")
        if self.sequence_parallel and self.tensor_parallel_size == 1:
            raise ValueError("sequence_parallel: needs tensor_parallel_size > 1")

    @property
    def model_parallel_size(self) -> int:
        """Ranks holding one copy of the model (tp * pp)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def world_size(self) -> int:
        """Total ranks this layout needs; only defined when data_parallel_size is set."""
        if self.data_parallel_size is None:
            raise ValueError("data_parallel_size: is null, the world size comes from the launcher")
        return self.model_parallel_size * self.data_parallel_size

    def resolve_data_parallel_size(self, world_size: int) -> int:
        """The data-parallel size for a given world; raises naming the field when it does not fit."""
        mp = self.model_parallel_size
        if mp > world_size or world_size % mp:
            raise ValueError(
                f"tensor_parallel_size: tensor_parallel_size={self.tensor_parallel_size} x "
                f"pipeline_parallel_size={self.pipeline_parallel_size} = {mp} does not divide the "
                f"world size {world_size} (launch with a multiple of {mp} processes)")
        dp = world_size // mp
        if self.data_parallel_size is not None and self.data_parallel_size != dp:
            raise ValueError(
                f"data_parallel_size: {self.data_parallel_size} but the world of {world_size} "
                f"ranks with tp*pp={mp} gives {dp}")
        return dp


@dataclass
class PretrainConfig:
    """One pretraining run: model shape, parallel layout, batch, schedule, checkpoints, metrics."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape (config group `model/`)."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Parallel layout (config group `parallel/`)."""
    seq_length: int = 128
    """Tokens per training sample."""
    micro_batch_size: int = 4
    """Samples per forward/backward on one data-parallel rank."""
    global_batch_size: int = 8
    """Samples per optimizer step over all data-parallel ranks (the rest is grad accumulation)."""
    train_iters: int = 100
    """Optimizer steps to train for."""
    lr: float = 3.0e-4
    """Peak learning rate (reached after warmup)."""
    min_lr: float = 3.0e-5
    """Learning rate at the end of the decay."""
    warmup_iters: int = 10
    """Steps of linear warmup from 0 to lr."""
    lr_decay_style: Literal["cosine", "linear", "constant"] = "cosine"
    """Shape of the decay from lr to min_lr after warmup."""
    lr_decay_iters: int | None = None
    """Step at which the decay reaches min_lr; None = train_iters."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (not applied to norms)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2."""
    adam_eps: float = 1.0e-8
    """AdamW epsilon."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Parameter/compute dtype; auto = bf16 with CUDA, fp32 on CPU."""
    recompute: Literal["none", "selective", "full"] = "none"
    """Activation recomputation: selective = attention core only, full = every layer."""
    seed: int = 1234
    """Seed for weights, data order and dropout; same seed = same losses on CPU."""
    eval_interval: int = 50
    """Run validation every N steps (and at the end); 0 = only at the end."""
    eval_iters: int = 4
    """Validation batches (of global_batch_size samples) per evaluation; 0 = no validation."""
    save_interval: int = 50
    """Save a checkpoint every N steps (and at the end); 0 = only at the end."""
    init_from_hf: str | None = field(default=None, metadata={"hash": "content"})
    """A Hugging Face Llama checkpoint directory to start from (continued pretraining)."""
    export_hf: bool = True
    """After training, write a Hugging Face Llama checkpoint (with the tokenizer) into `hf/`."""
    log_interval: int = field(default=1, metadata=_NOT_HASHED)
    """Log (and write metrics.jsonl/TensorBoard) every N steps."""
    tensorboard: bool = field(default=True, metadata=_NOT_HASHED)
    """Write TensorBoard event files into `tensorboard/`."""
    wandb: Literal["off", "offline", "online"] = field(default="off", metadata=_NOT_HASHED)
    """Weights & Biases logging; offline writes into `wandb/` without network."""
    wandb_project: str = field(default="fullchain", metadata=_NOT_HASHED)
    """W&B project name."""
    peak_flops: float | None = field(default=None, metadata=_NOT_HASHED)
    """FLOP/s per rank that MFU divides by; None = measured fp32 matmul peak (CPU) / bf16 table (GPU)."""
    num_workers: int = field(default=0, metadata=_NOT_HASHED)
    """DataLoader worker processes per rank (0 = load in the training process)."""

    def __post_init__(self) -> None:
        # Hydra/OmegaConf hands nested nodes over as dicts when converting without a schema.
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.parallel, dict):
            self.parallel = ParallelConfig(**self.parallel)
        for key in ("seq_length", "micro_batch_size", "global_batch_size", "train_iters"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: {value!r} must be a positive integer")
        for key in ("warmup_iters", "eval_interval", "eval_iters", "save_interval", "seed",
                    "num_workers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key}: {value!r} must be a non-negative integer")
        if self.log_interval < 1:
            raise ValueError(f"log_interval: {self.log_interval!r} must be >= 1")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size: {self.global_batch_size} is not divisible by "
                f"micro_batch_size={self.micro_batch_size}")
        dp = self.parallel.data_parallel_size
        if dp is not None and self.global_batch_size % (self.micro_batch_size * dp):
            raise ValueError(
                f"global_batch_size: {self.global_batch_size} is not divisible by "
                f"micro_batch_size * data_parallel_size = {self.micro_batch_size} * {dp}")
        if self.seq_length > self.model.max_position_embeddings:
            raise ValueError(
                f"seq_length: {self.seq_length} exceeds model.max_position_embeddings="
                f"{self.model.max_position_embeddings}")
        self.model.validate_tensor_parallel(self.parallel.tensor_parallel_size)
        pp = self.parallel.pipeline_parallel_size
        if self.model.num_layers % pp:
            raise ValueError(
                f"pipeline_parallel_size: {pp} does not divide model.num_layers="
                f"{self.model.num_layers}")
        if not 0 < self.lr:
            raise ValueError(f"lr: {self.lr!r} must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr: {self.min_lr!r} must be within [0, lr={self.lr}]")
        if self.warmup_iters and self.warmup_iters >= self.decay_iters:
            raise ValueError(
                f"warmup_iters: {self.warmup_iters} must be smaller than the decay length "
                f"(lr_decay_iters or train_iters = {self.decay_iters})")
        if self.lr_decay_iters is not None and self.lr_decay_iters <= self.warmup_iters:
            raise ValueError(
                f"lr_decay_iters: {self.lr_decay_iters} must exceed warmup_iters={self.warmup_iters}")
        if self.lr_decay_style not in ("cosine", "linear", "constant"):
            raise ValueError(f"lr_decay_style: {self.lr_decay_style!r} must be cosine, linear or constant")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision: {self.precision!r} must be auto, fp32 or bf16")
        if self.recompute not in ("none", "selective", "full"):
            raise ValueError(f"recompute: {self.recompute!r} must be none, selective or full")
        if self.wandb not in ("off", "offline", "online"):
            raise ValueError(f"wandb: {self.wandb!r} must be off, offline or online")
        if not 0.0 <= self.adam_beta1 < 1.0 or not 0.0 <= self.adam_beta2 < 1.0:
            raise ValueError(
                f"adam_beta1: betas ({self.adam_beta1}, {self.adam_beta2}) must be in [0, 1)")
        if self.adam_eps <= 0:
            raise ValueError(f"adam_eps: {self.adam_eps!r} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: {self.weight_decay!r} must be >= 0")
        if self.clip_grad < 0:
            raise ValueError(f"clip_grad: {self.clip_grad!r} must be >= 0 (0 = no clipping)")

    @property
    def decay_iters(self) -> int:
        """The step at which the learning rate reaches min_lr."""
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.train_iters
