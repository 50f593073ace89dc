"""SFT (full, LoRA, QLoRA): transformers' Trainer on our tokenized rows and collator.

trl's SFTTrainer would tokenize through `datasets.map` and flatten a packed batch into one row
(padding-free, meant for FlashAttention's varlen kernels); on CPU/SDPA that one row costs a dense
(batch x seq)^2 mask. Our rows are tokenized once in memory (data.py) and a packed batch stays
[batch, seq_length] with per-conversation position ids. The arguments are still trl's SFTConfig
(a TrainingArguments), built by translate.to_trl_config.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fullchain.tune.config import TuneConfig
from fullchain.tune.data import Collator, as_rows, pack, tokenize_conversations

logger = logging.getLogger(__name__)


def training_arguments(cfg: TuneConfig, out: Path, precision: str, world_size: int,
                       config_class: Any = None):
    """trl's SFTConfig (or DPOConfig) for this run: to_trl_config's translation plus what the
    stage itself decides (output places, token counting, CPU)."""
    from fullchain.tune.translate import to_trl_config
    from trl import SFTConfig

    kwargs = to_trl_config(cfg, str(out / "checkpoints"), precision, data_parallel_size=world_size)
    kwargs.update(
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # our rows carry position_ids, which Trainer would drop
        per_device_eval_batch_size=cfg.batch.micro_batch_size,
        eval_strategy="no",  # evaluated once at the end (stage.run): the loss curve is training's
        save_only_model=False,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        use_cpu=precision == "fp32" and not _cuda(),
    )
    # TensorBoard goes to out/tensorboard through our own writer (callbacks() below)
    kwargs["report_to"] = [r for r in kwargs["report_to"] if r != "tensorboard"]
    if cfg.gradient_checkpointing:
        kwargs["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return (config_class or SFTConfig)(**kwargs)


def callbacks(cfg: TuneConfig, out: Path, metrics_callback: Any) -> list:
    """metrics.jsonl, and TensorBoard event files in out/tensorboard (rank 0)."""
    found = [metrics_callback]
    if cfg.logging.tensorboard and int(os.environ.get("RANK", "0")) == 0:
        from transformers.integrations import TensorBoardCallback

        tensorboard = TensorBoardCallback()
        # its directory (transformers 5 reads it from TENSORBOARD_LOGGING_DIR, else output_dir/runs);
        # the writer is reopened there for the evaluation logged after training ends
        tensorboard.logging_dir = str(out / "tensorboard")
        found.append(tensorboard)
    return found


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_sft(cfg: TuneConfig, net: Any, tokenizer: Any, train_records: list, eval_records: list,
              out: Path, precision: str, callback: Any):
    """A ready Trainer and the data statistics (records, truncated, dropped, rows, tokens)."""
    from transformers import Trainer

    seq = cfg.batch.seq_length
    train = tokenize_conversations(tokenizer, train_records, seq)
    if not train.examples:
        raise ValueError(
            f"dataset: none of the {train.records} {cfg.train_split} records has an assistant token "
            f"within batch.seq_length={seq} tokens after the chat template; nothing to train on")
    rows = pack(train.examples, seq) if cfg.packing else None
    stats = {"train_records": train.records, "train_truncated": train.truncated,
             "train_dropped": train.dropped, "train_rows": len(rows or train.examples),
             "train_label_tokens": train.trained_tokens}
    logger.info("sft data: %s", stats)
    eval_rows = None
    if eval_records:
        evaluated = tokenize_conversations(tokenizer, eval_records, seq)
        eval_rows = as_rows(evaluated.examples, None) if evaluated.examples else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = training_arguments(cfg, out, precision, world)
    pad_id = tokenizer.pad_token_id
    trainer = Trainer(
        model=net, args=args, train_dataset=as_rows(train.examples, rows),
        eval_dataset=eval_rows, processing_class=tokenizer,
        data_collator=Collator(pad_id), callbacks=callbacks(cfg, out, callback))
    return trainer, stats
