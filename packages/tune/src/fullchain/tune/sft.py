"""SFT (full, LoRA, QLoRA): transformers' Trainer on our tokenized rows and collator.

trl's SFTTrainer would tokenize through `datasets.map` and flatten a packed batch into one row
(padding-free, meant for FlashAttention's varlen kernels); on CPU/SDPA that one row costs a dense
(batch x seq)^2 mask. Our rows are tokenized once in memory (data.py) and a packed batch stays
[batch, seq_length] with per-conversation position ids. The arguments are still trl's SFTConfig
(a TrainingArguments), built by translate.to_trl_config.

The output layer runs only where a token is trained on (`LabelledLogits`): in the demo's tool-use
conversations a quarter of the tokens carry a label, and the 4k-vocabulary output layer over every
position was most of a tiny model's compute (benchmarks/tune_logits.py measures the step).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from fullchain.tune.config import TuneConfig
from fullchain.tune.data import IGNORE_INDEX, Collator, as_rows, pack, tokenize_conversations

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


class LabelledLogits:
    """The model's output layer computed only at the positions whose next token has a label.

    A forward pre-hook on the output layer (`get_output_embeddings()`, so it holds under PEFT and
    DDP, which call the same module) keeps the hidden states of those positions while a batch's
    loss is computed (`selecting(labels)`), so the model returns logits `[n, vocab]` for the `n`
    trained positions, in row-major order; `loss` is the causal-LM cross-entropy over them, the
    same value as the model's own loss (the Trainer's `compute_loss_func` contract: summed and
    divided by `num_items_in_batch` when the Trainer gives it, else the mean). Outside
    `selecting` the layer sees every position, so generation and export are untouched."""

    def __init__(self, output_layer: Any):
        self.keep = None
        output_layer.register_forward_pre_hook(self._select)

    @staticmethod
    def targets(labels: Any) -> Any:
        """The label each position predicts: the next position's (IGNORE_INDEX at each row's end)."""
        import torch

        return torch.nn.functional.pad(labels[..., 1:], (0, 1), value=IGNORE_INDEX)

    def _select(self, module: Any, args: tuple) -> tuple | None:
        if self.keep is None:
            return None
        hidden, *rest = args
        return (hidden[self.keep], *rest)

    @contextlib.contextmanager
    def selecting(self, labels: Any):
        self.keep = self.targets(labels) != IGNORE_INDEX
        try:
            yield
        finally:
            self.keep = None

    def loss(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        import torch

        targets = self.targets(labels)
        targets = targets[targets != IGNORE_INDEX].to(outputs.logits.device)
        summed = torch.nn.functional.cross_entropy(outputs.logits.float(), targets, reduction="sum")
        if num_items_in_batch is None:
            return summed / max(targets.numel(), 1)
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(summed.device)
        return summed / num_items_in_batch


def _labelled_logits_trainer(selection: LabelledLogits):
    from transformers import Trainer

    class LabelledLogitsTrainer(Trainer):
        """transformers' Trainer whose loss runs the output layer at labelled positions only."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            with selection.selecting(inputs["labels"]):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)

    return LabelledLogitsTrainer


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_sft(cfg: TuneConfig, net: Any, tokenizer: Any, train_records: list, eval_records: list,
              out: Path, precision: str, callback: Any):
    """A ready Trainer and the data statistics (records, truncated, dropped, rows, tokens)."""
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
    selection = LabelledLogits(net.get_output_embeddings())
    trainer = _labelled_logits_trainer(selection)(
        model=net, args=args, train_dataset=as_rows(train.examples, rows),
        eval_dataset=eval_rows, processing_class=tokenizer,
        data_collator=Collator(pad_id), callbacks=callbacks(cfg, out, callback),
        compute_loss_func=selection.loss)
    return trainer, stats
