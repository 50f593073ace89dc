"""The training loop: megatron-core all the way down, in the order Megatron-LM's pretrain uses.

world + parallel groups -> checks that need the world and the data -> GPT datasets -> model chunk
-> (HF weights) -> Megatron DDP (contiguous grad buffers) -> Megatron optimizer (AdamW, the
distributed optimizer when configured) -> warmup + cosine scheduler -> resume from the last
complete checkpoint -> steps through `get_forward_backward_func` (it does the pipeline schedule
and gradient accumulation over micro-batches) -> periodic validation and checkpoints.

Every rank runs this function; every rank returns the same metrics dict.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from fullchain.core.contracts import PackedCorpus
from fullchain.pretrain import checkpoint
from fullchain.pretrain.config import PretrainConfig
from fullchain.pretrain.data import batch_iterator, build_datasets, check_enough_tokens

logger = logging.getLogger(__name__)


def resolve_vocab(cfg: PretrainConfig, spec: PackedCorpus) -> tuple[int, int]:
    """(vocabulary of the tokenizer, padded embedding rows); raises naming `vocab_size`."""
    from fullchain.pretrain.model import padded_vocab_size

    if cfg.model.vocab_size is not None and cfg.model.vocab_size < spec.vocab_size:
        raise ValueError(
            f"vocab_size: model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{spec.vocab_size} tokens ({spec.path / 'dataset.json'})")
    return spec.vocab_size, padded_vocab_size(spec.vocab_size, cfg.model,
                                              cfg.parallel.tensor_parallel_size)


def _loss_func(loss_mask, output_tensor):
    """Mean token loss of one micro-batch; the schedule divides by the number of micro-batches
    and Megatron DDP averages over data-parallel ranks, so the step's gradient is the gradient
    of the global batch's mean token loss (for unmasked, equal-length samples)."""
    import torch

    losses = output_tensor.float().view(-1)
    mask = loss_mask.view(-1).float()
    loss = torch.sum(losses * mask) / torch.clamp(mask.sum(), min=1.0)
    # A copy: the schedule divides the returned loss in place by the number of micro-batches.
    return loss, {"lm loss": loss.detach().clone()}


def _forward_step(attention_mask, device, data_iterator: Iterator[dict], model):
    batch = next(data_iterator)
    tokens = batch["tokens"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    position_ids = batch["position_ids"].to(device, non_blocking=True)
    loss_mask = batch["loss_mask"].to(device, non_blocking=True)
    # Intermediate pipeline stages ignore tokens and read the received activations instead.
    output = model(tokens, position_ids, attention_mask, labels=labels)
    return output, partial(_loss_func, loss_mask)


def _global_mean(values: list[float], contributes: bool, device) -> float:
    """Mean over the micro-batch values held by the contributing ranks (last PP stage, TP rank 0),
    made known to every rank (rank 0 is a first pipeline stage and holds no loss)."""
    import torch
    import torch.distributed as dist

    summary = torch.zeros(2, dtype=torch.float64, device=device)
    if contributes and values:
        summary[0] = float(sum(values))
        summary[1] = float(len(values))
    dist.all_reduce(summary)
    return float(summary[0] / summary[1]) if summary[1] > 0 else float("nan")


def train(cfg: PretrainConfig, spec: PackedCorpus, out: Path) -> dict[str, Any]:
    """Train (or resume) into `out`; collective over the torchrun world."""
    from fullchain.pretrain import distributed

    distributed.initialize(cfg.parallel, cfg.seed)
    try:
        return _train(cfg, spec, Path(out))
    finally:
        distributed.destroy()


def _train(cfg: PretrainConfig, spec: PackedCorpus, out: Path) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from fullchain.pretrain.metrics import MetricsWriter, device_peak_flops, model_flops_per_token
    from fullchain.pretrain.model import build_gpt_model, causal_attention_mask, resolve_precision
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func

    batch, schedule, adamw = cfg.batch, cfg.schedule, cfg.optimizer
    rank = dist.get_rank()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dp_size = ps.get_data_parallel_world_size()
    dp_rank = ps.get_data_parallel_rank()
    per_step = batch.micro_batch_size * dp_size
    if batch.global_batch_size % per_step:
        raise ValueError(
            f"batch.global_batch_size: {batch.global_batch_size} is not divisible by micro_batch_size * "
            f"data_parallel_size = {batch.micro_batch_size} * {dp_size}")
    num_microbatches = batch.global_batch_size // per_step
    precision = resolve_precision(cfg.precision)
    vocab_size, padded_vocab = resolve_vocab(cfg, spec)

    # --- data (checked before any model is built: a too-short dataset fails in seconds)
    check_enough_tokens(spec, batch.seq_length, batch.global_batch_size)
    eval_samples = cfg.validation.eval_iters * batch.global_batch_size if "valid" in spec.splits else 0
    train_samples = schedule.train_iters * batch.global_batch_size
    datasets = build_datasets(spec, batch.seq_length, cfg.seed,
                              {"train": train_samples, "valid": eval_samples}, out / "data_cache")
    valid_dataset = datasets.get("valid")
    if valid_dataset is not None and len(valid_dataset) < eval_samples:
        eval_samples = len(valid_dataset) // per_step * per_step

    # --- model, DDP, optimizer, scheduler
    model = build_gpt_model(cfg.model, cfg.parallel, padded_vocab, batch.seq_length,
                            precision=precision, recompute=cfg.recompute,
                            transformer_impl=cfg.transformer_impl)
    resume = checkpoint.latest_checkpoint(out / "checkpoints")
    if resume is None and cfg.init_from_hf:
        from fullchain.pretrain.hf import load_hf_into

        load_hf_into(model, cfg.init_from_hf)
        logger.info("initialised from Hugging Face checkpoint %s", cfg.init_from_hf)
    config = model.config
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False,
        use_distributed_optimizer=cfg.parallel.use_distributed_optimizer)
    ddp_model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=adamw.lr, min_lr=schedule.min_lr,
                        weight_decay=adamw.weight_decay, adam_beta1=adamw.adam_beta1,
                        adam_beta2=adamw.adam_beta2, adam_eps=adamw.adam_eps,
                        clip_grad=adamw.clip_grad, bf16=precision == "bf16",
                        params_dtype=config.params_dtype,
                        use_distributed_optimizer=cfg.parallel.use_distributed_optimizer),
        [ddp_model])
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=adamw.lr, min_lr=schedule.min_lr,
        lr_warmup_steps=schedule.warmup_iters, lr_decay_steps=schedule.decay_iters,
        lr_decay_style=schedule.lr_decay_style, start_wd=adamw.weight_decay,
        end_wd=adamw.weight_decay, wd_incr_steps=schedule.train_iters, wd_incr_style="constant")
    config.no_sync_func = ddp_model.no_sync
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss

    iteration, consumed_samples, resumed_from = 0, 0, None
    # The losses as of the checkpoint: what a resumed run returns if no step is left to take.
    loss = val_loss = float("nan")
    init_val_loss = None  # validation loss of the untrained initialisation: what training bought
    if resume is not None:
        position = checkpoint.load(resume[1], model, optimizer, scheduler)
        iteration, consumed_samples = position["iteration"], position["consumed_samples"]
        loss, val_loss = position["loss"], position["val_loss"]
        init_val_loss = position.get("init_val_loss")
        resumed_from = iteration
        logger.info("resumed from %s (iteration %d, %d samples consumed)", resume[1], iteration,
                    consumed_samples)

    # --- metrics
    matmul_params = cfg.model.num_parameters(padded_vocab) - (
        0 if cfg.model.tie_word_embeddings else padded_vocab * cfg.model.hidden_size)
    flops_per_token = model_flops_per_token(cfg.model.num_layers, cfg.model.hidden_size,
                                            batch.seq_length, matmul_params)
    peak = cfg.logging.peak_flops or device_peak_flops(precision)
    world = dist.get_world_size()
    writer = MetricsWriter(out, rank == 0, cfg.logging,
                           {"seq_length": batch.seq_length, "global_batch_size": batch.global_batch_size,
                            "model": cfg.model.name}, iteration)
    contributes = ps.is_pipeline_last_stage(ignore_virtual=True) and ps.get_tensor_model_parallel_rank() == 0
    attention_mask = causal_attention_mask(batch.seq_length, device=device)
    forward_step = partial(_forward_step, attention_mask, device)
    forward_backward = get_forward_backward_func()
    tokens_per_step = batch.global_batch_size * batch.seq_length

    def evaluate() -> float | None:
        if valid_dataset is None or eval_samples == 0:
            return None
        for chunk in (ddp_model,):
            chunk.eval()
        iterator = batch_iterator(valid_dataset, 0, eval_samples, batch.micro_batch_size, dp_rank,
                                  dp_size)
        with torch.no_grad():
            outputs = forward_backward(
                forward_step_func=forward_step, data_iterator=iterator, model=[ddp_model],
                num_microbatches=eval_samples // per_step, seq_length=batch.seq_length,
                micro_batch_size=batch.micro_batch_size, forward_only=True)
        ddp_model.train()
        return _global_mean([float(o["lm loss"]) for o in outputs], contributes, device)

    train_iter = batch_iterator(datasets["train"], consumed_samples, train_samples,
                                batch.micro_batch_size, dp_rank, dp_size, cfg.num_workers)
    ddp_model.train()
    if iteration == 0:
        init_val_loss = evaluate()
        if init_val_loss is not None:
            writer.log(0, {"val_loss": init_val_loss,
                           "val_perplexity": math.exp(min(init_val_loss, 50.0))})
            if rank == 0:
                logger.info("iter 0 (initialisation) val_loss %.4f", init_val_loss)
    step_times: list[float] = []
    grad_norm = None
    while iteration < schedule.train_iters:
        start = time.perf_counter()
        ddp_model.zero_grad_buffer()
        optimizer.zero_grad()
        outputs = forward_backward(
            forward_step_func=forward_step, data_iterator=train_iter, model=[ddp_model],
            num_microbatches=num_microbatches, seq_length=batch.seq_length,
            micro_batch_size=batch.micro_batch_size, forward_only=False)
        update_ok, grad_norm, _ = optimizer.step()
        if not update_ok:
            raise FloatingPointError(f"iteration {iteration + 1}: optimizer step skipped (non-finite grads)")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(increment=1)
        iteration += 1
        consumed_samples += batch.global_batch_size
        loss = _global_mean([float(o["lm loss"]) for o in outputs], contributes, device)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        step_time = time.perf_counter() - start
        step_times.append(step_time)
        if not math.isfinite(loss):
            raise FloatingPointError(f"iteration {iteration}: training loss is {loss}")

        values: dict[str, Any] = {}
        evaluate_now = iteration == schedule.train_iters or (
            cfg.validation.eval_interval and iteration % cfg.validation.eval_interval == 0)
        if evaluate_now:
            val_loss = evaluate()
            if val_loss is not None:
                values.update(val_loss=val_loss, val_perplexity=math.exp(min(val_loss, 50.0)))
        if iteration % cfg.logging.log_interval == 0 or values:
            tokens_per_second = tokens_per_step / step_time
            values.update(loss=loss, lr=lr, grad_norm=float(grad_norm) if grad_norm is not None else None,
                          step_time=step_time, tokens_per_second=tokens_per_second,
                          mfu=tokens_per_second * flops_per_token / (peak * world))
            writer.log(iteration, values)
            if rank == 0:
                logger.info("iter %d/%d loss %.4f lr %.3g %.0f tok/s%s", iteration, schedule.train_iters,
                            loss, lr, tokens_per_second,
                            f" val_loss {val_loss:.4f}" if "val_loss" in values else "")
        save_interval = cfg.checkpoint.save_interval
        if iteration == schedule.train_iters or (save_interval and iteration % save_interval == 0):
            checkpoint.save(out / "checkpoints", iteration, model, optimizer, scheduler,
                            consumed_samples, {"loss": loss, "val_loss": val_loss,
                                               "init_val_loss": init_val_loss})
    writer.close()

    # Steady-state speed: the first step of a process pays for allocator growth and warm-up.
    steady = step_times[1:] or step_times
    tokens_per_second = tokens_per_step * len(steady) / sum(steady) if steady else None
    return {
        "iteration": iteration,
        "final_loss": loss,
        "val_loss": val_loss,
        "val_perplexity": math.exp(min(val_loss, 50.0)) if val_loss is not None and math.isfinite(val_loss) else None,
        "init_val_loss": init_val_loss,
        "init_val_perplexity": (math.exp(min(init_val_loss, 50.0)) if init_val_loss is not None
                                and math.isfinite(init_val_loss) else None),
        "tokens_per_second": tokens_per_second,
        "mfu": tokens_per_second * flops_per_token / (peak * world) if tokens_per_second else None,
        "peak_flops_per_rank": peak,
        "train_tokens": consumed_samples * batch.seq_length,
        "num_parameters": cfg.model.num_parameters(padded_vocab),
        "vocab_size": vocab_size,
        "padded_vocab_size": padded_vocab,
        "world_size": world,
        "data_parallel_size": dp_size,
        "num_microbatches": num_microbatches,
        "resumed_from_iteration": resumed_from,
        "precision": precision,
    }
