"""DPO with trl's DPOTrainer: preference records `prompt` (messages) / `chosen` / `rejected`
(assistant messages) are trl's conversational preference format as they are; trl applies the
tokenizer's chat template. The reference is a frozen copy of the base model, or, with LoRA
adapters (`dpo_adapter`), the base itself with the adapters disabled (trl does that for a peft
model given no reference)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fullchain.core.contracts import HFModel
from fullchain.tune.config import TuneConfig

logger = logging.getLogger(__name__)


def _pairs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records]


def train_dpo(cfg: TuneConfig, net: Any, tokenizer: Any, model_ref: HFModel, train_records: list,
              eval_records: list, out: Path, precision: str, callback: Any):
    from datasets import Dataset
    from fullchain.tune.sft import callbacks, training_arguments
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    args = training_arguments(cfg, out, precision, int(os.environ.get("WORLD_SIZE", "1")),
                              config_class=DPOConfig)
    reference = None
    if not cfg.uses_adapter:
        reference = AutoModelForCausalLM.from_pretrained(
            str(model_ref.path), dtype=net.dtype, attn_implementation="sdpa")
        reference.config.use_cache = False
        reference.eval().requires_grad_(False)
    trainer = DPOTrainer(
        model=net, ref_model=reference, args=args, train_dataset=Dataset.from_list(_pairs(train_records)),
        eval_dataset=Dataset.from_list(_pairs(eval_records)) if eval_records else None,
        processing_class=tokenizer, callbacks=callbacks(cfg, out, callback))
    stats = {"train_records": len(train_records), "train_pairs": len(trainer.train_dataset)}
    if len(trainer.train_dataset) == 0:
        raise ValueError(f"dataset: none of the {len(train_records)} preference records is usable")
    logger.info("dpo data: %s", stats)
    return trainer, stats
