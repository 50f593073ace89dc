"""Configuration of the pretrain stage. Stdlib only (the driver validates specs without torch).

Every rule that can be checked from the config alone is checked here, in `__post_init__`, so a
bad spec fails before a process group is formed or a dataset is read. Rules that need the world
size or the data artifact (vocabulary, dataset length) are checked in `train.py` before step 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage
from fullchain.core.placement import Placement
from fullchain.core.schema import (
    BatchConfig,
    CheckpointConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    ValidationConfig,
)
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
    """One pretraining run: model shape, parallel layout, and the training concerns shared with
    the other training stages (`fullchain.core.schema`): batch, optimizer, schedule, validation,
    checkpoint, logging."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape (config group `model/`)."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Parallel layout (config group `parallel/`)."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """Sequence length, micro and global batch size."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """AdamW: peak lr, weight decay, betas, epsilon, gradient clipping."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Steps to train, warmup, decay to min_lr (counted in steps: `train_iters` is required)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """How often and on how many batches the validation loss is measured."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """How often a checkpoint is saved."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Log interval, TensorBoard, W&B, the peak FLOP/s for MFU (none of it hashed)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Parameter/compute dtype; auto = bf16 with CUDA, fp32 on CPU (resolved before hashing)."""
    transformer_impl: Literal["auto", "local", "transformer_engine"] = "auto"
    """Layer implementation: TransformerEngine's fused layers or megatron's local spec; auto = TE
    where it is installed and a GPU runs the step (resolved before hashing: outputs differ)."""
    recompute: Literal["none", "selective", "full"] = "none"
    """Activation recomputation: selective = attention core only, full = every layer."""
    seed: int = 1234
    """Seed for weights, data order and dropout; same seed = same losses on CPU."""
    init_from_hf: str | None = field(default=None, metadata={"hash": "content"})
    """A Hugging Face Llama checkpoint directory to start from (continued pretraining)."""
    export_hf: bool = True
    """After training, write a Hugging Face Llama checkpoint (with the tokenizer) into `hf/`."""
    num_workers: int = field(default=0, metadata=_NOT_HASHED)
    """DataLoader worker processes per rank (0 = load in the training process)."""

    def __post_init__(self) -> None:
        for key in ("seed", "num_workers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key}: {value!r} must be a non-negative integer")
        if self.schedule.train_iters is None:
            raise ValueError("schedule.train_iters: pretraining counts steps; set train_iters")
        if self.schedule.epochs is not None:
            raise ValueError("schedule.epochs: pretraining counts steps (train_iters), not epochs")
        self.schedule.check_lr(self.optimizer)
        dp = self.parallel.data_parallel_size
        if dp is not None:
            try:
                self.batch.check_data_parallel(dp)
            except ValueError as exc:
                raise ValueError(f"batch.{exc}") from None
        if self.batch.seq_length > self.model.max_position_embeddings:
            raise ValueError(
                f"batch.seq_length: {self.batch.seq_length} exceeds model.max_position_embeddings="
                f"{self.model.max_position_embeddings}")
        try:
            self.model.validate_tensor_parallel(self.parallel.tensor_parallel_size)
        except ValueError as exc:
            raise ValueError(f"model.{exc}") from None
        pp = self.parallel.pipeline_parallel_size
        if self.model.num_layers % pp:
            raise ValueError(
                f"parallel.pipeline_parallel_size: {pp} does not divide model.num_layers="
                f"{self.model.num_layers}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision: {self.precision!r} must be auto, fp32 or bf16")
        if self.recompute not in ("none", "selective", "full"):
            raise ValueError(f"recompute: {self.recompute!r} must be none, selective or full")

    def resolve(self, placement: Placement) -> None:
        """Called by the graph before the step id is computed: every `auto` that changes the
        output becomes what this placement will run (a CPU fp32 artifact and a GPU bf16 one of
        the same spec get different ids), and the layout is checked against the world the
        launcher starts, so a bad one fails at `plan`, not 18 s into the run."""
        cuda = placement.accelerator == "cuda"
        if self.precision == "auto":
            self.precision = "bf16" if cuda else "fp32"
        if self.parallel.backend == "auto":
            self.parallel.backend = "nccl" if cuda else "gloo"
        elif self.parallel.backend == "nccl" and not cuda:
            raise ValueError("parallel.backend: nccl needs CUDA, and this step runs on CPU "
                             "(use gloo or auto)")
        if self.transformer_impl == "auto":
            self.transformer_impl = "transformer_engine" if placement.transformer_engine else "local"
        elif self.transformer_impl == "transformer_engine" and not placement.transformer_engine:
            raise ValueError("transformer_impl: transformer_engine, but the step's environment has "
                             "no TransformerEngine or no GPU (use local or auto)")
        if self.parallel.sequence_parallel and self.transformer_impl != "transformer_engine":
            raise ValueError("parallel.sequence_parallel: needs TransformerEngine layers "
                             "(transformer_impl resolved to local here)")
        try:
            dp = self.parallel.resolve_data_parallel_size(placement.world_size)
        except ValueError as exc:
            raise ValueError(f"parallel.{exc} (launcher: {placement.world_size} process(es) for "
                             "this step; launcher=torchrun launcher.nproc_per_node=N starts N)") from None
        try:
            self.batch.check_data_parallel(dp)
        except ValueError as exc:
            raise ValueError(f"batch.{exc}") from None


def _pretrain_outputs(cfg: PretrainConfig) -> dict[str, str]:
    return {"megatron_checkpoint": "checkpoints", **({"hf_model": "hf"} if cfg.export_hf else {})}


# Pretrain reads a packed corpus and provides Megatron checkpoints (and, with export_hf, the
# Hugging Face model that tune, eval and deploy read).
STAGE = Stage(kind="pretrain", module="fullchain.pretrain", config=PretrainConfig,
              inputs={"corpus": Role("packed_corpus", doc="the data stage's packed token files")},
              outputs=_pretrain_outputs)
