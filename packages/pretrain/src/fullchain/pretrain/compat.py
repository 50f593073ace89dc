"""THE one place that knows megatron-core 0.16.1 assumes CUDA. Everything here is a no-op with CUDA.

megatron-core hard-codes CUDA in ~100 places that a CPU (gloo) run walks through:
`torch.cuda.current_device()` (rotary embedding, GlobalMemoryBuffer, dist_checkpointing),
`torch.cuda.synchronize()`, the CUDA RNG tracker (`model_parallel_cuda_manual_seed`), tensors
created with `device="cuda"` (pipeline schedules, `get_megatron_optimizer`, grad clipping, the
default causal mask), `.cuda()` calls, and `param.type() == "torch.cuda.FloatTensor"` checks in the
(distributed) optimizer. Rather than patch each call site, `enable_cpu_compat()`:

1. replaces the few `torch.cuda` functions that fail without a CUDA build by CPU equivalents
   (current device 0, synchronize/empty_cache do nothing, "the CUDA RNG" is the CPU generator, so
   Megatron's RNG tracker forks and restores the CPU generator state);
2. pushes a `TorchFunctionMode` that maps every CUDA device argument to the CPU, makes
   `.cuda()` the identity, drops `pin_memory` and reports CPU tensors as `torch.cuda.*Tensor` to
   `Tensor.type()` (Megatron's optimizer only branches on the dtype part of that string);
3. does Megatron DDP's bucket reduce-scatter / all-gather (the distributed optimizer's) locally
   when the data-parallel group has one rank: gloo still runs them on its own threads (11% of a
   1-rank step on the ~20M shape), while the result is the input;
4. keeps that mode on the stack across megatron's `dist_checkpointing.save`/`load`: they run
   torch.distributed.checkpoint planners, spawn/fork writer processes and thread pools, and a
   training loop must not have to know whether the stack it gets back still holds the mode (an
   earlier version of the loop re-enabled the shim after every save/load for that reason; with
   torch 2.13 / megatron-core 0.16.1 the mode was not seen lost again, and the guard makes sure).

On the ~20M benchmark shape the mode's cost was too small to measure (kernels
dominate; the handler is one dict lookup per torch call). It is pushed on the calling thread's
torch-function mode stack, which is the thread that runs forward and (on CPU) backward.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_mode: _CudaToCpuMode | None = None
_patched_torch = False
_patched_megatron = False


def cuda_available() -> bool:
    """Whether a CUDA device is usable (then the compatibility layer stays off)."""
    return torch.cuda.is_available()


def is_enabled() -> bool:
    """Whether the CPU compatibility layer is active on this thread."""
    return _mode is not None and _mode in _active_modes()


def enable_cpu_compat() -> bool:
    """Make megatron-core run on the CPU. Idempotent; returns True when the shim is active.

    A no-op returning False when CUDA is available: the GPU path never sees this module's
    patches. Call it before building the model, the optimizer or loading a checkpoint.
    """
    if cuda_available():
        return False
    global _mode
    with _lock:
        _patch_torch_cuda()
        _patch_megatron()
        if _mode is None:
            _mode = _CudaToCpuMode()
        if _mode not in _active_modes():
            # Entered and never exited: the mode lives for the rest of the process (on this thread).
            _mode.__enter__()
            logger.debug("CPU compatibility mode for megatron-core enabled")
    return True


def _reenter_mode() -> None:
    """Push the shim's mode back if something left this thread's stack without it."""
    with _lock:
        if _mode is not None and _mode not in _active_modes():
            _mode.__enter__()
            logger.debug("CPU compatibility mode re-entered")


def _active_modes() -> list:
    from torch.overrides import _get_current_function_mode_stack

    return list(_get_current_function_mode_stack())


# ---------------------------------------------------------------------------------------------
# 1. torch.cuda functions that raise "Torch not compiled with CUDA enabled" on a CPU build.

def _current_device() -> int:
    return 0


# Distinct functions (not one shared no-op): torch.compile's trace rules reject one object
# registered under several torch names.
def _synchronize(device: Any = None) -> None:
    return None


def _empty_cache() -> None:
    return None


def _set_device(device: Any) -> None:
    return None


def _get_rng_state(device: Any = "cuda") -> torch.Tensor:
    return torch.get_rng_state()


def _set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
    torch.set_rng_state(new_state)


def _manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def _patch_torch_cuda() -> None:
    global _patched_torch
    if _patched_torch:
        return
    torch.cuda.current_device = _current_device
    torch.cuda.synchronize = _synchronize
    torch.cuda.empty_cache = _empty_cache
    torch.cuda.set_device = _set_device
    # Megatron's RNG tracker keeps named "CUDA" generator states and forks between them; on the
    # CPU the generator that dropout and init actually draw from is the CPU one.
    torch.cuda.get_rng_state = _get_rng_state
    torch.cuda.set_rng_state = _set_rng_state
    torch.cuda.manual_seed = _manual_seed
    torch.cuda.random.get_rng_state = _get_rng_state
    torch.cuda.random.set_rng_state = _set_rng_state
    _patched_torch = True


# ---------------------------------------------------------------------------------------------
# 2. megatron functions that reach CUDA internals directly (not through torch.cuda's public API).

def _megatron_get_cuda_rng_state(device: Any = "cuda", clone: bool = False,
                                 graph_safe: bool = False) -> torch.Tensor:
    return torch.get_rng_state()


def _megatron_set_cuda_rng_state(new_state: torch.Tensor, device: int = -1,
                                 graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


def _keeping_mode(function: Any) -> Any:
    """`function`, after which the shim's mode is on the caller's stack as it was before."""
    if getattr(function, "_keeps_cpu_compat_mode", False):
        return function

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            _reenter_mode()

    wrapper._keeps_cpu_compat_mode = True
    return wrapper


class _CompletedWork:
    """What an async collective returns when there was nothing to communicate."""

    def wait(self, timeout: Any = None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def _local_when_alone(collective: Any) -> Any:
    """`collective(output, input, group=..., async_op=...)` (reduce-scatter / all-gather into a
    tensor) done locally when the group has one rank: the result is the input. gloo would still
    hand every bucket to its own threads and wake the caller after (measured on the ~20M shape,
    1 rank: 11% of the step, the training thread sleeping ~4,900 times per step)."""
    if getattr(collective, "_local_when_alone", False):
        return collective

    @functools.wraps(collective)
    def wrapper(output: torch.Tensor, input: torch.Tensor, *args: Any, group: Any = None,
                async_op: bool = False, **kwargs: Any) -> Any:
        if torch.distributed.get_world_size(group) != 1:
            return collective(output, input, *args, group=group, async_op=async_op, **kwargs)
        # With one rank the distributed optimizer's shard IS the whole buffer (same memory).
        if output.data_ptr() != input.data_ptr() or output.shape != input.shape:
            output.copy_(input.view_as(output))
        return _CompletedWork() if async_op else None

    wrapper._local_when_alone = True
    return wrapper


def _patch_megatron() -> None:
    global _patched_megatron
    if _patched_megatron:
        return
    from megatron.core import dist_checkpointing
    from megatron.core.distributed import param_and_grad_buffer
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = _megatron_get_cuda_rng_state
    mp_random._set_cuda_rng_state = _megatron_set_cuda_rng_state
    # Callers use `dist_checkpointing.save(...)`/`.load(...)` (looked up at call time).
    dist_checkpointing.save = _keeping_mode(dist_checkpointing.save)
    dist_checkpointing.load = _keeping_mode(dist_checkpointing.load)
    # Megatron DDP's bucket collectives (module-level aliases bound at import): the distributed
    # optimizer's grad reduce-scatter and param all-gather.
    param_and_grad_buffer.dist_reduce_scatter_func = _local_when_alone(
        param_and_grad_buffer.dist_reduce_scatter_func)
    param_and_grad_buffer.dist_all_gather_func = _local_when_alone(
        param_and_grad_buffer.dist_all_gather_func)
    _patched_megatron = True


# ---------------------------------------------------------------------------------------------
# 3. A torch-function mode mapping CUDA devices to the CPU.

def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int means a CUDA ordinal (e.g. device=torch.cuda.current_device()).
    return isinstance(device, int) and not isinstance(device, bool)


def _tensor_cuda(func: Any, args: tuple, kwargs: dict) -> Any:
    return args[0]


def _tensor_to(func: Any, args: tuple, kwargs: dict) -> Any:
    if len(args) > 1 and _is_cuda_device(args[1]):
        args = (args[0], "cpu") + tuple(args[2:])
    return func(*args, **kwargs)


_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _tensor_type(func: Any, args: tuple, kwargs: dict) -> Any:
    result = func(*args, **kwargs)
    if len(args) == 1 and not kwargs and isinstance(result, str):
        # Megatron's optimizers accept only 'torch.cuda.{Float,Half,BFloat16}Tensor'.
        return _CUDA_TYPE_NAMES.get(result, result)
    return result


def _tensor_pin_memory(func: Any, args: tuple, kwargs: dict) -> Any:
    return args[0]


_SPECIAL = {
    torch.Tensor.cuda: _tensor_cuda,
    torch.Tensor.to: _tensor_to,
    torch.Tensor.type: _tensor_type,
    torch.Tensor.pin_memory: _tensor_pin_memory,
}


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments of every torch call to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs:
            device = kwargs.get("device")
            if device is not None and _is_cuda_device(device):
                kwargs = dict(kwargs, device="cpu")
            if kwargs.get("pin_memory"):
                kwargs = dict(kwargs, pin_memory=False)
        else:
            kwargs = {}
        special = _SPECIAL.get(func)
        if special is not None:
            return special(func, args, kwargs)
        return func(*args, **kwargs)
