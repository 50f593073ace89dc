"""Save and resume: megatron dist_checkpointing under `<out>/checkpoints/`.

Layout: `checkpoints/iter_{N:07d}/` holds one dist checkpoint with the keys
{"model", "optimizer", "scheduler", "iteration", "data_position", "rng", "parallel"}; the model
part loads alone from {"model": model.sharded_state_dict()} at any TP/PP (megatron reshards).
`checkpoints/latest.json` ({"iteration": N, "path": "iter_..."}) is written atomically only
after every rank finished writing, so a SIGKILL during a save leaves the previous checkpoint as
the latest complete one and the half-written directory is overwritten next time.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

from fullchain.core.artifact import write_json_atomic

logger = logging.getLogger(__name__)

LATEST = "latest.json"
# The distributed optimizer's state is stored in model space, so it reshards across TP, PP and DP
# (the TP=2 -> TP=1 resume); dp_reshardable only allows a DP change, and
# fully_sharded_model_space fails in 0.16.1 ("ShardedTensor.flattened_range is not supported").
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def iteration_dir(root: Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def latest_checkpoint(root: Path) -> tuple[int, Path] | None:
    """(iteration, directory) of the last complete checkpoint under `root`, or None."""
    file = Path(root) / LATEST
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        iteration, path = int(doc["iteration"]), Path(root) / doc["path"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{file}: unreadable ({exc}); delete it to restart from scratch") from exc
    if not (path / "metadata.json").is_file():
        raise ValueError(f"{file}: points to {path}, which is not a complete dist checkpoint")
    return iteration, path


def _layout() -> dict[str, int]:
    from megatron.core import parallel_state as ps

    return {"tensor_parallel_size": ps.get_tensor_model_parallel_world_size(),
            "pipeline_parallel_size": ps.get_pipeline_model_parallel_world_size(),
            "data_parallel_size": ps.get_data_parallel_world_size()}


def _rng_state() -> dict[str, Any]:
    import numpy
    import torch
    from megatron.core import tensor_parallel

    state = {"random": random.getstate(), "numpy": numpy.random.get_state(),
             "torch": torch.get_rng_state(),
             "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy
    import torch
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    numpy.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded(state: Any):
    """One RNG state per (pp, tp) rank; data-parallel replicas hold the same streams."""
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject(
        "rng_state", state,
        (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()),
        (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
        replica_id=ps.get_data_parallel_rank(with_context_parallel=True))


def save(root: Path, iteration: int, model_chunk: Any, optimizer: Any, scheduler: Any,
         consumed_samples: int, last_metrics: dict[str, Any] | None = None) -> Path:
    """Collective: every rank calls it. Writes iter_N/ then, on rank 0, latest.json.

    `last_metrics` ({"loss", "val_loss", "init_val_loss"} as of this iteration) comes back from
    `load`: a run resumed with no step left returns them instead of NaN."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    path = iteration_dir(root, iteration)
    if dist.get_rank() == 0:
        if path.exists():  # a save killed half-way: never trusted, rewrite it from scratch
            shutil.rmtree(path)
        path.mkdir(parents=True)
    dist.barrier()
    model_sd = model_chunk.sharded_state_dict()
    state = {
        "model": model_sd,
        "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=False,
                                                  metadata=OPTIMIZER_METADATA),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "data_position": {"consumed_samples": consumed_samples},
        "last_metrics": dict(last_metrics or {}),
        "rng": _rng_sharded(_rng_state()),
        "parallel": _layout(),
    }
    dist_checkpointing.save(state, str(path), content_metadata=OPTIMIZER_METADATA)
    dist.barrier()
    if dist.get_rank() == 0:
        write_json_atomic(Path(root) / LATEST, {"iteration": iteration, "path": path.name})
    dist.barrier()
    logger.info("saved checkpoint %s", path)
    return path


def _init_optimizer_state(optimizer: Any) -> None:
    """Allocate a fresh optimizer's Adam state with one step of zero gradients at lr 0.

    Without Apex/TransformerEngine (the CPU case) megatron 0.16.1's DistributedOptimizer needs
    every parameter's state, "step" included, while building the loading state dict, and its own
    `init_state_fn` creates only the moments: loading into a never-stepped optimizer fails with a
    bare AssertionError. A zero-gradient step at lr 0 changes no weight (m and v stay 0, the
    decoupled decay is lr * wd * p = 0) and everything it allocates is overwritten by the load."""
    if not any(len(group["params"]) and optimizer_state_empty(optimizer) for group in optimizer.param_groups):
        return
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.zero_grad()
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, saved):
        group["lr"] = lr


def optimizer_state_empty(optimizer: Any) -> bool:
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_optimizer = getattr(inner, "optimizer", None)
        if torch_optimizer is not None and len(torch_optimizer.state) == 0:
            return True
    return False


def _load_optimizer_state(optimizer: Any, state: dict) -> None:
    """optimizer.load_state_dict, working around megatron 0.16.1's fully_reshardable load without
    Apex/TE: torch Adam keeps a per-parameter "step" that the loader drops from the loaded
    tensors but still tries to copy into (KeyError: 'step'). Load the rest first, then the
    parameter state with "step" set aside, then put "step" (already the checkpoint's) back."""
    inners = getattr(optimizer, "chained_optimizers", [optimizer])
    if not (len(inners) == 1 and isinstance(state, dict)
            and state.get("param_state_sharding_type") == "fully_reshardable"):
        optimizer.load_state_dict(state)
        _unshare_steps(inners)
        return
    inner = inners[0]
    state = dict(state)
    param_state = state.pop("param_state")
    state.pop("param_state_sharding_type")
    inner.load_state_dict(state)
    torch_state = inner.optimizer.state
    steps = {param: values.pop("step") for param, values in torch_state.items() if "step" in values}
    inner.load_parameter_state_from_fully_reshardable(param_state)
    for param, step in steps.items():
        torch_state[param]["step"] = step
    _unshare_steps(inners)


def _unshare_steps(inners: list) -> None:
    """Without Apex/TE megatron's load_state_dict gives every parameter the SAME "step" tensor;
    torch Adam increments each parameter's step in place, so a shared one races ahead (wrong
    bias correction after a resume). One tensor per parameter, as torch itself keeps them."""
    for inner in inners:
        torch_optimizer = getattr(inner, "optimizer", None)
        if torch_optimizer is None:
            continue
        for values in torch_optimizer.state.values():
            if "step" in values and hasattr(values["step"], "clone"):
                values["step"] = values["step"].clone()


def load(path: Path, model_chunk: Any, optimizer: Any = None, scheduler: Any = None) -> dict[str, Any]:
    """Collective: load a checkpoint saved at any TP/PP/DP into this rank's model (and optimizer,
    scheduler, RNG when given). Returns {"iteration", "consumed_samples", "loss", "val_loss"}
    (the losses as saved; NaN when the checkpoint has none, e.g. an imported one)."""
    import torch
    from megatron.core import dist_checkpointing

    common = dist_checkpointing.load_common_state_dict(str(path))
    model_sd = model_chunk.sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        _init_optimizer_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=True,
                                                          metadata=OPTIMIZER_METADATA)
    same_layout = {k: v for k, v in common.get("parallel", {}).items() if k != "data_parallel_size"} == {
        k: v for k, v in _layout().items() if k != "data_parallel_size"}
    if optimizer is not None and same_layout:
        state["rng"] = _rng_sharded(None)
    # fp32 and no autograd: the distributed optimizer copies loaded state into its fp32 buffers.
    with torch.no_grad():
        loaded = dist_checkpointing.load(state, str(path))
    model_chunk.load_state_dict(loaded["model"])
    if optimizer is not None:
        _load_optimizer_state(optimizer, loaded["optimizer"])
    if scheduler is not None and "scheduler" in common:
        scheduler.load_state_dict(common["scheduler"])
    if "rng" in state:
        _set_rng_state(loaded["rng"])
    elif optimizer is not None:
        logger.info("checkpoint %s was saved at %s: resharded, RNG streams re-seeded", path,
                    common.get("parallel"))
    last = common.get("last_metrics") or {}
    return {"iteration": int(common.get("iteration", 0)),
            "consumed_samples": int(common.get("data_position", {}).get("consumed_samples", 0)),
            "loss": last.get("loss", float("nan")), "val_loss": last.get("val_loss", float("nan")),
            "init_val_loss": last.get("init_val_loss")}
