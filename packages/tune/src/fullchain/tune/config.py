"""Config schema of the tune stage (SFT, LoRA, DPO). The stage itself is planned (issue to come);
the schema is fixed now so the spec tree, sweeps and step ids cover every stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class LoraConfig:
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA scaling numerator (alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names (HF Llama layout) that get adapters."""


@dataclass
class TuneConfig:
    dataset: str = field(metadata={"hash": "content"})
    """Training file (alpaca / sharegpt / preference-pair JSON); hashed by content."""
    method: Literal["sft", "lora", "dpo"] = "sft"
    """Full-parameter SFT, LoRA SFT, or DPO on preference pairs."""
    dataset_format: Literal["alpaca", "sharegpt", "dpo_pairs"] = "alpaca"
    """How records map to chat turns."""
    lr: float = 2e-5
    """Peak learning rate."""
    epochs: float = 1.0
    """Passes over the dataset."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (None: epochs decide)."""
    micro_batch_size: int = 4
    """Sequences per forward pass."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    seq_length: int = 512
    """Maximum tokens per example (longer are truncated)."""
    warmup_ratio: float = 0.03
    """Fraction of steps spent warming up the learning rate."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter shape, used when method is lora."""
    dpo_beta: float = 0.1
    """DPO temperature, used when method is dpo."""
    seed: int = 1234
    """Seed for data order and init of new weights."""
    log_interval: int = field(default=10, metadata={"hash": False})
    """Steps between log lines."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.method == "dpo" and self.dataset_format != "dpo_pairs":
            raise ValueError("dataset_format: method dpo needs dataset_format dpo_pairs")
