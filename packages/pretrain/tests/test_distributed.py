"""distributed.initialize / destroy in a one-process world, layout errors, seeding."""

from __future__ import annotations

import pytest
import torch
from fullchain.pretrain import distributed
from fullchain.pretrain.config import ParallelConfig


def test_single_process_world_and_teardown():
    from megatron.core import parallel_state

    distributed.initialize(ParallelConfig(), seed=3)
    try:
        assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1
        assert torch.distributed.get_backend() == ("nccl" if torch.cuda.is_available() else "gloo")
        assert parallel_state.get_tensor_model_parallel_world_size() == 1
        assert parallel_state.get_data_parallel_world_size() == 1
        # Re-initialising (e.g. a second run in one process) rebuilds the groups.
        distributed.initialize(ParallelConfig(), seed=3)
        assert parallel_state.model_parallel_is_initialized()
    finally:
        distributed.destroy()
    assert not parallel_state.model_parallel_is_initialized()
    assert not torch.distributed.is_initialized()
    distributed.destroy()  # safe to repeat


def test_layout_larger_than_world_fails_before_forming_it():
    with pytest.raises(ValueError, match="^tensor_parallel_size:"):
        distributed.initialize(ParallelConfig(tensor_parallel_size=2), seed=0)
    with pytest.raises(ValueError, match="^data_parallel_size:"):
        distributed.initialize(ParallelConfig(data_parallel_size=2), seed=0)
    assert not torch.distributed.is_initialized()


def test_backend_resolution():
    assert distributed.resolve_backend(ParallelConfig(backend="gloo")) == "gloo"
    if not torch.cuda.is_available():
        assert distributed.resolve_backend(ParallelConfig()) == "gloo"
        with pytest.raises(ValueError, match="^backend:"):
            distributed.resolve_backend(ParallelConfig(backend="nccl"))


def test_seeding_is_reproducible_and_feeds_the_rng_tracker():
    from megatron.core import tensor_parallel

    distributed.initialize(ParallelConfig(), seed=11)
    try:
        first = torch.rand(4)
        with tensor_parallel.get_cuda_rng_tracker().fork():
            tp_first = torch.rand(4)
        distributed.set_seed(11)
        assert torch.equal(torch.rand(4), first)
        with tensor_parallel.get_cuda_rng_tracker().fork():
            assert torch.equal(torch.rand(4), tp_first)
        assert torch.initial_seed() == 11
        distributed.set_seed(12)
        assert not torch.equal(torch.rand(4), first)
    finally:
        distributed.destroy()
