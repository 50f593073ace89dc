"""Our YAML -> the libraries' own config objects, one function per library (stdlib only: each
returns keyword arguments; the stage builds `peft.LoraConfig(**...)` / `trl.SFTConfig(**...)`).

Field names that are already the library's (`r`, `lora_alpha`, `beta`, `loss_type`) pass through
unchanged; only the shared training vocabulary (Megatron's names, see `fullchain.core.schema`)
is renamed here, to transformers' `TrainingArguments` names that trl's configs inherit.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fullchain.tune.config import TuneConfig

# Our decay styles -> transformers' scheduler names. The decay to schedule.min_lr needs the
# "_with_min_lr" variant; "constant" keeps lr after warmup (min_lr is then unused).
_SCHEDULERS = {"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}


def to_peft_lora_config(cfg: TuneConfig) -> dict[str, Any]:
    """Keyword arguments of `peft.LoraConfig` for a causal LM."""
    return {**dataclasses.asdict(cfg.lora), "task_type": "CAUSAL_LM"}


def to_trl_config(cfg: TuneConfig, output_dir: str, precision: str,
                  data_parallel_size: int = 1) -> dict[str, Any]:
    """Keyword arguments of `trl.SFTConfig` (method sft / lora) or `trl.DPOConfig` (dpo).

    `precision` is the resolved one ("bf16" or "fp32", decided by the stage for its hardware):
    trl's configs default to bf16 and refuse it on a CPU."""
    batch, schedule, adamw, log = cfg.batch, cfg.schedule, cfg.optimizer, cfg.logging
    per_step = batch.micro_batch_size * data_parallel_size
    if batch.global_batch_size % per_step:
        raise ValueError(
            f"batch.global_batch_size: {batch.global_batch_size} is not divisible by "
            f"micro_batch_size * data_parallel_size = {batch.micro_batch_size} * {data_parallel_size}")
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": batch.micro_batch_size,
        "gradient_accumulation_steps": batch.global_batch_size // per_step,
        "max_length": batch.seq_length,
        "learning_rate": adamw.lr,
        "weight_decay": adamw.weight_decay,
        "adam_beta1": adamw.adam_beta1,
        "adam_beta2": adamw.adam_beta2,
        "adam_epsilon": adamw.adam_eps,
        "max_grad_norm": adamw.clip_grad,
        "optim": "adamw_torch",
        "bf16": precision == "bf16",
        # transformers: max_steps > 0 overrides num_train_epochs; -1 lets the epochs decide.
        "max_steps": schedule.train_iters if schedule.train_iters is not None else -1,
        "num_train_epochs": schedule.epochs if schedule.epochs is not None else 1.0,
        "warmup_steps": schedule.warmup_iters,
        "lr_scheduler_type": _SCHEDULERS[schedule.lr_decay_style],
        "logging_steps": log.log_interval,
        # 0 = only the final model (our convention); transformers saves per save_steps otherwise.
        "save_strategy": "steps" if cfg.checkpoint.save_interval else "no",
        "report_to": [name for name, on in (("tensorboard", log.tensorboard),
                                            ("wandb", log.wandb != "off")) if on],
        "seed": cfg.seed,
        "activation_checkpointing": cfg.gradient_checkpointing,  # transformers 5 name of it
        "dataloader_num_workers": cfg.num_workers,
        "train_sampling_strategy": cfg.train_sampling_strategy,
    }
    if cfg.checkpoint.save_interval:
        kwargs["save_steps"] = cfg.checkpoint.save_interval
    if schedule.lr_decay_style == "cosine":
        kwargs["lr_scheduler_kwargs"] = {"min_lr": schedule.min_lr}
    if cfg.method == "dpo":
        kwargs.update(dataclasses.asdict(cfg.dpo))
    return kwargs


def to_bnb_config(cfg: TuneConfig, precision: str) -> dict[str, Any]:
    """Keyword arguments of `transformers.BitsAndBytesConfig` for QLoRA's 4-bit base."""
    return {"load_in_4bit": True, **dataclasses.asdict(cfg.qlora),
            "bnb_4bit_compute_dtype": "bfloat16" if precision == "bf16" else "float32"}
