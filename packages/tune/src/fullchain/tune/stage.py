"""The tune stage: a HF model + a conversation set in, a fine-tuned HF model out.

Artifact layout (`out`), the type it provides in brackets:
    hf/                  the merged model: safetensors, config, tokenizer + chat template,
                         generation_config.json stopping at <|im_end|> [hf_model]
    adapter/             the LoRA adapter (peft) with the tokenizer (lora, qlora, dpo_adapter)
    checkpoints/         Trainer checkpoints (checkpoint.save_interval); a re-run resumes from the last
    metrics.jsonl        per logged step: loss, lr, grad_norm, tokens_per_second (+ eval_loss;
                         DPO: rewards/margins, rewards/accuracies)
    tensorboard/, loss.png
Runs on every rank under torchrun (DDP through the Trainer's accelerate); rank 0 writes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fullchain.core.artifact import Artifact, write_json_atomic
from fullchain.core.contracts import HFModel, read_conversations, read_hf_model
from fullchain.tune.config import TuneConfig

logger = logging.getLogger(__name__)

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
"""Special tokens the ChatML template writes; the base vocabulary must have them."""
END_OF_TURN = "<|im_end|>"


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# ---------------------------------------------------------------------------- inputs


def resolve_inputs(cfg: TuneConfig, inputs: dict[str, Artifact]):
    """The base model and the conversation set, through core's readers (errors name the field)."""
    if cfg.base_model and "model" in inputs:
        raise ValueError(
            f"base_model: {cfg.base_model} is set and the node's `model` input is wired too "
            f"({inputs['model'].path}); unwire one (`~graph.<node>.inputs.model`, or drop base_model)")
    if not cfg.base_model and "model" not in inputs:
        raise ValueError("base_model: no model to fine-tune: wire the node's `model` input "
                         "(e.g. inputs: {model: pretrain}) or set tune.base_model=/path/to/hf-dir")
    model = read_hf_model(cfg.base_model or inputs["model"])
    if model.adapter:
        raise ValueError(f"{model.path}: is a peft adapter directory; tune starts from a full "
                         "model (use the upstream step's merged hf/)")
    if cfg.dataset and "conversations" in inputs:
        raise ValueError(f"dataset: {cfg.dataset} is set and the `conversations` input is wired too "
                         f"({inputs['conversations'].path}); use one")
    if not cfg.dataset and "conversations" not in inputs:
        raise ValueError("dataset: no conversations to train on: wire the node's `conversations` "
                         "input (a chat data node) or set tune.dataset=/path/to/conversation-set")
    conversations = read_conversations(cfg.dataset or inputs["conversations"])
    wanted = "preference" if cfg.method == "dpo" else "messages"
    if conversations.format != wanted:
        raise ValueError(
            f"method: {cfg.method} trains on {wanted} records, but "
            f"{conversations.path / 'conversations.json'} holds {conversations.format} records")
    if cfg.train_split not in conversations.splits:
        raise ValueError(f"train_split: {conversations.path / 'conversations.json'} has no split "
                         f"{cfg.train_split!r}; it has {sorted(conversations.splits)}")
    return model, conversations


def _records(conversations, split: str, limit: int | None) -> list[dict[str, Any]]:
    out = []
    for record in conversations.records(split):
        if limit is not None and len(out) >= limit:
            break
        out.append(record)
    return out


# ---------------------------------------------------------------------------- model


def check_base_model(model: HFModel, tokenizer: Any, hf_config: Any) -> None:
    """A causal LM whose vocabulary has the chat template's special tokens (before training)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = list(getattr(hf_config, "architectures", None) or [])
    if hf_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            architectures and not any(a.endswith("ForCausalLM") for a in architectures)):
        raise ValueError(
            f"{model.path}: is not a causal language model (model_type {hf_config.model_type!r}, "
            f"architectures {architectures}); tune fine-tunes *ForCausalLM models such as the "
            "pretrain stage's Llama export")
    vocab = hf_config.vocab_size
    for token in CHAT_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id or token_id >= vocab or \
                len(tokenizer.tokenize(token)) != 1:
            raise ValueError(
                f"{model.path}: the vocabulary lacks the chat special token {token!r} (one token, "
                f"id < vocab_size {vocab}) that the ChatML template writes; train the tokenizer "
                "with the data stage's special_tokens, or add the token and resize the embeddings")


def check_target_modules(model: Any, target_modules: list[str]) -> None:
    """Every LoRA target must name a linear layer of the model; the error lists the ones it has."""
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear)})
    missing = [t for t in target_modules if t not in linear]
    if missing:
        raise ValueError(f"lora.target_modules: {missing} not in the model; its linear modules are "
                         f"{linear}")


def load_model(cfg: TuneConfig, model: HFModel, precision: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model.path))
    hf_config = AutoConfig.from_pretrained(str(model.path))
    check_base_model(model, tokenizer, hf_config)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if precision == "bf16" else torch.float32,
                              "attn_implementation": "sdpa"}
    if cfg.method == "qlora":
        if not torch.cuda.is_available():
            raise ValueError("method: qlora needs a CUDA GPU (bitsandbytes 4-bit); this process "
                             "has none. Use tune=lora on CPU")
        from fullchain.tune.translate import to_bnb_config
        from transformers import BitsAndBytesConfig

        bnb = to_bnb_config(cfg, precision)
        bnb["bnb_4bit_compute_dtype"] = getattr(torch, bnb["bnb_4bit_compute_dtype"])
        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    net = AutoModelForCausalLM.from_pretrained(str(model.path), **kwargs)
    # No KV cache while training: with one, transformers would not build the packed rows'
    # block-diagonal mask from position ids (and the cache is useless for a training forward).
    net.config.use_cache = False
    if cfg.uses_adapter:
        check_target_modules(net, cfg.lora.target_modules)
        from fullchain.tune.translate import to_peft_lora_config
        from peft import LoraConfig, get_peft_model

        if cfg.method == "qlora":
            from peft import prepare_model_for_kbit_training

            net = prepare_model_for_kbit_training(
                net, use_gradient_checkpointing=cfg.gradient_checkpointing)
        net = get_peft_model(net, LoraConfig(**to_peft_lora_config(cfg)))
    return net, tokenizer


# ---------------------------------------------------------------------------- metrics


def _metrics_callback(out: Path):
    """A TrainerCallback writing metrics.jsonl on rank 0, with tokens/s per logging window."""
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.window = None  # (time, step, tokens) at the end of the last logged window
            self.first_step_end = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.first_step_end is None:  # tokens/s excludes the first step (set-up, warm-up)
                self.first_step_end = (time.perf_counter(), state.global_step,
                                       state.num_input_tokens_seen)
            if self.window is None:
                self.window = self.first_step_end

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "train_loss" in logs:
                return  # (the end-of-training summary repeats what the rows hold)
            row = {"step": state.global_step}
            for key, value in logs.items():
                if isinstance(value, (int, float)) and not key.startswith("train_"):
                    row[key.replace("learning_rate", "lr")] = value
            now = (time.perf_counter(), state.global_step, state.num_input_tokens_seen)
            if self.window is not None and now[1] > self.window[1]:
                seconds = now[0] - self.window[0]
                row["tokens_per_second"] = round((now[2] - self.window[2]) / seconds, 2)
                row["step_time"] = round(seconds / (now[1] - self.window[1]), 4)
                self.window = now
            self.rows.append(row)
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            if "loss" in row:
                logger.info("step %d/%d loss %.4f lr %.3g %s tok/s", state.global_step,
                            state.max_steps, row["loss"], row.get("lr", 0.0),
                            row.get("tokens_per_second", "-"))

        def rate(self, state) -> float | None:
            if self.first_step_end is None or state.global_step <= self.first_step_end[1]:
                return None
            seconds = time.perf_counter() - self.first_step_end[0]
            return (state.num_input_tokens_seen - self.first_step_end[2]) / seconds

    return MetricsFile()


def plot_loss(metrics_file: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("eval_loss", "eval")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker="." if label == "eval" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- output


def save_merged(net: Any, tokenizer: Any, out: Path, adapter: bool, precision: str) -> Path:
    """Write `adapter/` (peft) and the merged model `hf/` (what eval and deploy load)."""
    import torch
    from transformers import GenerationConfig

    hf_dir = out / "hf"
    for stale in (hf_dir, out / "adapter"):
        if stale.exists():  # an interrupted earlier attempt of this step
            shutil.rmtree(stale)
    if adapter:
        net.save_pretrained(str(out / "adapter"))
        tokenizer.save_pretrained(str(out / "adapter"))
        net = net.merge_and_unload()
    net.config.use_cache = True
    if precision == "bf16":
        net = net.to(torch.bfloat16)
    net.save_pretrained(str(hf_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(hf_dir))
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    stops = [end_of_turn] + [t for t in [tokenizer.eos_token_id] if t not in (None, end_of_turn)]
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stops,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(str(hf_dir))
    return hf_dir


# ---------------------------------------------------------------------------- run


def run(cfg: TuneConfig, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
    """Fine-tune `inputs["model"]` (or cfg.base_model) on the conversations into `out`."""
    import torch
    from transformers import set_seed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_ref, conversations = resolve_inputs(cfg, inputs)
    precision = cfg.precision
    if precision == "auto":  # run() called directly (tests); the graph resolves it before hashing
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    if cfg.method == "qlora" and not torch.cuda.is_available():
        raise ValueError("method: qlora needs a CUDA GPU (bitsandbytes 4-bit); this process has "
                         "none. Use tune=lora on CPU")
    set_seed(cfg.seed)
    train_records = _records(conversations, cfg.train_split, cfg.max_train_records)
    if not train_records:
        raise ValueError(f"{conversations.splits[cfg.train_split]}: the {cfg.train_split} split "
                         "has no records")
    eval_records = []
    if cfg.eval_split and cfg.eval_split in conversations.splits:
        eval_records = _records(conversations, cfg.eval_split, None)
    net, tokenizer = load_model(cfg, model_ref, precision)

    checkpoints = out / "checkpoints"
    resume = last_complete_checkpoint(checkpoints, remove_incomplete=_rank() == 0)
    if resume is None and _rank() == 0 and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a failed attempt that saved no checkpoint
    elif resume is not None:
        logger.info("resuming from %s", resume)
        if _rank() == 0:
            _truncate_metrics(out / "metrics.jsonl", int(resume.rsplit("-", 1)[-1]))
    callback = _metrics_callback(out)
    if cfg.method == "dpo":
        from fullchain.tune.dpo import train_dpo

        trainer, data_stats = train_dpo(cfg, net, tokenizer, model_ref, train_records,
                                        eval_records, out, precision, callback)
    else:
        from fullchain.tune.sft import train_sft

        trainer, data_stats = train_sft(cfg, net, tokenizer, train_records, eval_records, out,
                                        precision, callback)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # ours logs each window; Printer's dict lines are noise
    result = trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, Any] = {"method": cfg.method, "precision": precision,
                               "world_size": _world_size(), **data_stats,
                               "train_steps": trainer.state.global_step,
                               "train_loss": round(float(result.training_loss), 6)}
    rate = callback.rate(trainer.state)
    if rate is not None:
        metrics["tokens_per_second"] = round(rate, 2)
    rows = callback.rows  # this attempt's; with the rows kept from before a resume, on rank 0
    if _rank() == 0 and (out / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    losses = [r["loss"] for r in rows if "loss" in r]
    if losses:
        metrics["first_loss"], metrics["last_loss"] = losses[0], losses[-1]
    if eval_records:
        evaluated = trainer.evaluate()
        metrics.update({k: v for k, v in evaluated.items() if isinstance(v, (int, float))
                        and k.startswith("eval_") and not k.endswith(("runtime", "per_second"))})
    if cfg.method == "dpo":
        last = [r for r in rows if "rewards/margins" in r]
        if last:
            metrics["reward_margin"] = last[-1]["rewards/margins"]
            metrics["reward_accuracy"] = last[-1]["rewards/accuracies"]
    metrics["trainable_parameters"] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if _rank() == 0:
        unwrapped = trainer.model
        save_merged(unwrapped, tokenizer, out, cfg.uses_adapter, precision)
        metrics["hf_dir"] = "hf"
        if cfg.uses_adapter:
            metrics["adapter_dir"] = "adapter"
        if (out / "metrics.jsonl").exists():
            plot_loss(out / "metrics.jsonl", out / "loss.png", f"tune {cfg.method}")
        write_json_atomic(out / "tune.json", {"base_model": str(model_ref.path),
                                              "conversations": str(conversations.path)})
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in metrics.items()}


def last_complete_checkpoint(checkpoints: Path, remove_incomplete: bool = False) -> str | None:
    """The newest `checkpoint-N` the Trainer finished writing, or None.

    The Trainer writes `trainer_state.json` last; a step stopped while saving leaves a newer
    checkpoint with the model but without it (or with it cut short). Such a checkpoint is skipped,
    with a warning, and removed when `remove_incomplete` (rank 0), so the re-run resumes from
    the last whole one instead of failing on the missing file."""
    found = []
    for path in checkpoints.glob("checkpoint-*") if checkpoints.is_dir() else []:
        step = path.name.removeprefix("checkpoint-")
        if path.is_dir() and step.isdigit():
            found.append((int(step), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("%s: incomplete (the step stopped while saving it): not resumed from", path)
            if remove_incomplete:
                shutil.rmtree(path, ignore_errors=True)
            continue
        return str(path)
    return None


def _truncate_metrics(file: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a resumed run continues from."""
    if not file.exists():
        return
    kept = [line for line in file.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    file.write_text("".join(line + "\n" for line in kept))
