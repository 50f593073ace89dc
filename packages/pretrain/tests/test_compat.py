"""The CPU compatibility layer: what it maps, that megatron's CUDA-only paths then run, and that
it stays off when CUDA is present (checked by its branch logic here; a GPU test is skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from fullchain.pretrain import compat

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU shim")


@cpu_only
def test_enable_is_idempotent_and_maps_cuda_to_cpu():
    assert compat.enable_cpu_compat() is True
    assert compat.enable_cpu_compat() is True
    assert compat.is_enabled()
    modes = [m for m in compat._active_modes() if isinstance(m, compat._CudaToCpuMode)]
    assert len(modes) == 1
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.empty(2, device=torch.device("cuda", 0)).device.type == "cpu"
    assert torch.ones(1, device=torch.cuda.current_device()).device.type == "cpu"
    x = torch.arange(3.0)
    assert x.cuda() is x and x.to("cuda").device.type == "cpu"
    assert x.type() == "torch.cuda.FloatTensor" and x.bfloat16().type() == "torch.cuda.BFloat16Tensor"
    assert x.type(torch.float64).dtype == torch.float64
    assert torch.tensor([1], pin_memory=True).device.type == "cpu"
    torch.cuda.synchronize()
    state = torch.cuda.get_rng_state()
    first = torch.rand(3)
    torch.cuda.set_rng_state(state)
    assert torch.equal(first, torch.rand(3))


@cpu_only
def test_megatron_cuda_only_paths_run_on_cpu():
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from megatron.core import tensor_parallel
    from megatron.core.transformer.utils import get_default_causal_mask
    from megatron.core.utils import GlobalMemoryBuffer

    distributed.initialize(ParallelConfig(), seed=5)
    try:
        buffer = GlobalMemoryBuffer().get_tensor((4, 4), torch.float32, "test")
        assert buffer.device.type == "cpu"
        assert get_default_causal_mask(4)[0, 1].item() is True
        tracker = tensor_parallel.get_cuda_rng_tracker()
        outside = torch.rand(2)
        torch.manual_seed(5)
        with tracker.fork():
            inside = torch.rand(2)
        # The fork draws from the tensor-parallel stream and restores the default one after.
        assert torch.equal(torch.rand(2), outside) and not torch.equal(inside, outside)
    finally:
        distributed.destroy()


@cpu_only
def test_megatron_ddp_optimizer_schedule_and_checkpoint_on_cpu(tmp_path):
    """Megatron DDP + get_megatron_optimizer (distributed) + pipeline schedule + dist ckpt."""
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model, causal_attention_mask, position_ids
    from fullchain.pretrain.model_config import ModelConfig
    from megatron.core import dist_checkpointing
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    parallel = ParallelConfig()
    distributed.initialize(parallel, seed=1)
    try:
        gpt = build_gpt_model(ModelConfig(num_layers=1, hidden_size=32, num_attention_heads=2,
                                          ffn_hidden_size=64, max_position_embeddings=16),
                              parallel, 128, 8)
        ddp = DistributedDataParallel(
            gpt.config, DistributedDataParallelConfig(use_distributed_optimizer=True), gpt)
        optimizer = get_megatron_optimizer(
            OptimizerConfig(optimizer="adam", lr=1e-2, clip_grad=1.0, use_distributed_optimizer=True),
            [ddp])
        tokens = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(0))

        def forward_step(data_iterator, model):
            batch = next(data_iterator)
            output = model(batch, position_ids(2, 8), causal_attention_mask(8), labels=batch)
            return output, lambda out: (out.mean(), {"loss": out.mean().detach()})

        losses = []
        for _ in range(3):
            ddp.zero_grad_buffer()
            optimizer.zero_grad()
            result = get_forward_backward_func()(
                forward_step_func=forward_step, data_iterator=iter([tokens]), model=[ddp],
                num_microbatches=1, seq_length=8, micro_batch_size=2, forward_only=False)
            ok, grad_norm, _ = optimizer.step()
            assert ok and grad_norm > 0
            losses.append(result[0]["loss"].item())
        assert losses[-1] < losses[0]

        state = {"model": gpt.sharded_state_dict(),
                 "optimizer": optimizer.sharded_state_dict(
                     gpt.sharded_state_dict(),
                     metadata={"distrib_optim_sharding_type": "dp_reshardable"})}
        dist_checkpointing.save(state, str(tmp_path))
        assert compat.is_enabled()  # the loop goes on with the shim after checkpoint I/O
        before = {k: v.clone() for k, v in gpt.state_dict().items() if v is not None
                  and torch.is_tensor(v)}
        with torch.no_grad():
            for param in gpt.parameters():
                param.zero_()
        loaded = dist_checkpointing.load({"model": gpt.sharded_state_dict()}, str(tmp_path))
        gpt.load_state_dict(loaded["model"])
        assert compat.is_enabled()
        for key, value in before.items():
            assert torch.equal(gpt.state_dict()[key], value), key
    finally:
        distributed.destroy()


@cpu_only
def test_dist_checkpointing_calls_give_the_mode_back():
    """Whatever save/load do to the torch-function mode stack, the caller gets the shim back."""
    from megatron.core import dist_checkpointing

    compat.enable_cpu_compat()
    assert dist_checkpointing.save._keeps_cpu_compat_mode
    assert dist_checkpointing.load._keeps_cpu_compat_mode

    def drops_the_mode():
        compat._mode.__exit__(None, None, None)
        assert not compat.is_enabled()
        return 7

    assert compat._keeping_mode(drops_the_mode)() == 7
    assert compat.is_enabled()
    assert torch.zeros(1, device="cuda").device.type == "cpu"
    compat.enable_cpu_compat()  # idempotent: no second wrapper, no second mode
    assert dist_checkpointing.save.__wrapped__ is not None
    assert not getattr(dist_checkpointing.save.__wrapped__, "_keeps_cpu_compat_mode", False)
    assert len([m for m in compat._active_modes() if isinstance(m, compat._CudaToCpuMode)]) == 1


@cpu_only
def test_one_rank_bucket_collectives_stay_local():
    """The distributed optimizer's reduce-scatter/all-gather in a 1-rank group skip gloo (the
    DP=2 run in test_parallel covers the real collective path against these)."""
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from megatron.core.distributed import param_and_grad_buffer

    compat.enable_cpu_compat()
    assert param_and_grad_buffer.dist_reduce_scatter_func._local_when_alone
    assert param_and_grad_buffer.dist_all_gather_func._local_when_alone
    calls = []
    local = compat._local_when_alone(lambda *args, **kwargs: calls.append(args))
    distributed.initialize(ParallelConfig(), seed=0)
    try:
        buffer = torch.arange(6.0)
        assert local(buffer, buffer, group=None) is None and buffer.tolist() == list(range(6))
        out = torch.zeros(6)
        assert local(out, buffer, group=None, async_op=True).wait()
        assert torch.equal(out, buffer) and calls == []
    finally:
        distributed.destroy()


def test_noop_when_cuda_is_present():
    """With CUDA reported available, nothing is patched and no mode is pushed (fresh process)."""
    script = textwrap.dedent("""
        import torch
        torch.cuda.is_available = lambda: True
        original = torch.cuda.current_device
        from fullchain.pretrain import compat
        assert compat.enable_cpu_compat() is False
        assert torch.cuda.current_device is original
        assert not compat.is_enabled() and compat._active_modes() == []
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_build_leaves_cuda_untouched():
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model
    from fullchain.pretrain.model_config import ModelConfig

    distributed.initialize(ParallelConfig(), seed=1)
    try:
        gpt = build_gpt_model(ModelConfig(), ParallelConfig(), 256, 16)
        assert next(gpt.parameters()).is_cuda and not compat.is_enabled()
    finally:
        distributed.destroy()
