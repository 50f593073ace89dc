"""Process group + megatron-core parallel_state set-up and tear-down, for torchrun or one process.

Order matters and is fixed here: CPU compatibility (no-op with CUDA) -> torch.distributed ->
megatron's tensor/pipeline/data groups -> seeds (CPU, CUDA, and megatron's model-parallel RNG
tracker, which gives every TP rank its own dropout stream and every DP replica the same one).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from typing import Any

logger = logging.getLogger(__name__)

_INITIALIZED_PROCESS_GROUP = False


def resolve_backend(parallel: Any) -> str:
    """The torch.distributed backend: `parallel.backend` unless "auto" (nccl with CUDA, else gloo)."""
    import torch

    backend = getattr(parallel, "backend", "auto") or "auto"
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend: nccl needs CUDA, and no CUDA device is available (use gloo/auto)")
    return backend


def initialize(parallel: Any, seed: int) -> None:
    """Form the world (torchrun's env vars, or a one-process world) and megatron's parallel groups.

    `parallel` is a `ParallelConfig` (tensor_parallel_size, pipeline_parallel_size,
    data_parallel_size, backend). Raises ValueError naming the field when tp * pp does not divide
    the world size, or data_parallel_size disagrees with it.
    """
    import torch
    import torch.distributed as dist
    from fullchain.pretrain.compat import enable_cpu_compat
    from megatron.core import parallel_state

    global _INITIALIZED_PROCESS_GROUP
    enable_cpu_compat()
    tp = parallel.tensor_parallel_size
    pp = parallel.pipeline_parallel_size
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    _check_world(parallel, world_size)

    backend = resolve_backend(parallel)
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if "RANK" not in os.environ:
            # A one-process world for plain `python` runs and tests: an in-memory store, no port
            # and no environment variables set. (Setting MASTER_PORT/RANK here leaked into every
            # child of the process, e.g. a test's `fullchain run`, whose own one-process world
            # then tried to listen on the port this process still held: EADDRINUSE.)
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=datetime.timedelta(minutes=30))
        else:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        _INITIALIZED_PROCESS_GROUP = True
    elif dist.get_world_size() != world_size:
        world_size = dist.get_world_size()
        _check_world(parallel, world_size)

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    set_seed(seed)
    logger.info("rank %d/%d: tp=%d pp=%d dp=%d backend=%s", dist.get_rank(), world_size, tp, pp,
                parallel_state.get_data_parallel_world_size(), backend)


def _check_world(parallel: Any, world_size: int) -> None:
    resolve = getattr(parallel, "resolve_data_parallel_size", None)
    if resolve is not None:
        resolve(world_size)
        return
    model_parallel = parallel.tensor_parallel_size * parallel.pipeline_parallel_size
    if model_parallel > world_size or world_size % model_parallel:
        raise ValueError(
            f"tensor_parallel_size: tp={parallel.tensor_parallel_size} x "
            f"pp={parallel.pipeline_parallel_size} = {model_parallel} does not divide the world "
            f"size {world_size}")


def set_seed(seed: int) -> None:
    """Seed Python, torch (CPU and CUDA) and megatron's model-parallel RNG tracker.

    The data-parallel stream gets `seed` on every rank; megatron derives the tensor-parallel one
    as seed + 2718 + tp_rank. Weights built with `use_cpu_initialization` draw from the CPU
    generator over the full (unsplit) matrix, so they do not depend on the TP size.
    """
    import torch
    from megatron.core import tensor_parallel

    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    # model_parallel_cuda_manual_seed re-seeds "the CUDA generator", which on CPU is the CPU one:
    # seed it last so the CPU stream starts the same way on every path.
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def destroy() -> None:
    """Tear down megatron's groups and the process group this module created (safe to repeat)."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    global _INITIALIZED_PROCESS_GROUP
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if _INITIALIZED_PROCESS_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _INITIALIZED_PROCESS_GROUP = False
