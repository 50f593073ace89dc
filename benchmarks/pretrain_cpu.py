"""CPU training throughput: the pretrain stage vs a plain PyTorch loop, same process, same shape.

Baseline: HF `LlamaForCausalLM` of the `small` shape (hidden 384, 6 layers, 6 heads, ffn 1024,
vocab 8192, untied), torch AdamW (fused=False), grad clipping, batch 8 x seq 256, fp32.
Ours: `fullchain.pretrain.run` on a packed dataset of random tokens: megatron-core GPTModel,
Megatron DDP, `get_megatron_optimizer` (distributed optimizer), the pipeline schedule, behind
the CPU compatibility shim. Both report steady-state tokens/s (first steps excluded) and MFU
against this machine's measured fp32 matmul peak. Prints ours / baseline (goal >= 0.9).

    .venv/bin/python benchmarks/pretrain_cpu.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 8192
SEQ = 256
BATCH = 8


def _reexec_with_malloc_pad() -> None:
    # FINDINGS: glibc returns logits-sized buffers every step; the runner sets this for stages.
    if os.environ.get("MALLOC_TOP_PAD_") != "1073741824":
        os.environ["MALLOC_TOP_PAD_"] = "1073741824"
        os.execv(sys.executable, [sys.executable, *sys.argv])


def baseline(steps: int) -> float:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=384, intermediate_size=1024,
                         num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.randint(0, VOCAB, (steps + 3, BATCH, SEQ + 1))
    times = []
    for step in range(steps + 3):
        start = time.perf_counter()
        batch = data[step]
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    steady = times[3:]
    return BATCH * SEQ * len(steady) / sum(steady)


def _data_artifact(root: Path, tokens: int) -> Path:
    import numpy
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = root / "packed" / "random" / "train"
    prefix.parent.mkdir(parents=True)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=numpy.uint16)
    generator = torch.Generator().manual_seed(0)
    for _ in range(tokens // 1000):
        builder.add_document(torch.randint(1, VOCAB, (1000,), generator=generator), [1000])
    builder.finalize(str(prefix) + ".idx")
    (root / "dataset.json").write_text(json.dumps({
        "format": "megatron-indexed", "tokenizer": "tokenizer", "vocab_size": VOCAB, "eod_id": 0,
        "pad_id": 1, "bos_id": None, "dtype": "uint16",
        "splits": {"train": {"prefixes": ["packed/random/train"], "weights": [1.0]}}}))
    (root / "manifest.json").write_text(json.dumps({"stage": "data", "step_id": "benchmark"}))
    return root


def ours(steps: int, peak: float) -> dict:
    from fullchain.core.artifact import Artifact
    from fullchain.pretrain import ModelConfig, PretrainConfig, run

    model = ModelConfig(name="small", num_layers=6, hidden_size=384, num_attention_heads=6,
                        ffn_hidden_size=1024, max_position_embeddings=1024)
    cfg = PretrainConfig(model=model, seq_length=SEQ, micro_batch_size=BATCH, global_batch_size=BATCH,
                         train_iters=steps + 1, warmup_iters=1, lr=1e-3, eval_iters=0,
                         eval_interval=0, save_interval=0, export_hf=False, tensorboard=False,
                         log_interval=1000, peak_flops=peak)
    with tempfile.TemporaryDirectory() as tmp:
        data = _data_artifact(Path(tmp) / "data", BATCH * (SEQ + 1) * (steps + 2) + 10_000)
        out = Path(tmp) / "out"
        out.mkdir()
        # The final checkpoint is written after the timed steps; its time is not in tokens/s.
        return run(cfg, {"data": Artifact.load(data)}, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    _reexec_with_malloc_pad()
    import torch

    from fullchain.pretrain.metrics import measure_peak_flops, model_flops_per_token

    peak = measure_peak_flops(seconds=2.0)
    params = 6 * (4 * 384 * 384 + 3 * 384 * 1024 + 2 * 384) + 384 + VOCAB * 384  # no input embedding
    flops_per_token = model_flops_per_token(6, 384, SEQ, params)
    print(f"threads={torch.get_num_threads()} measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    ref = baseline(args.steps)
    print(f"baseline HF Llama + torch AdamW: {ref:,.0f} tokens/s, MFU {ref * flops_per_token / peak:.1%}")
    metrics = ours(args.steps, peak)
    mine = metrics["tokens_per_second"]
    print(f"fullchain.pretrain (megatron DDP + distributed optimizer): {mine:,.0f} tokens/s, "
          f"MFU {metrics['mfu']:.1%}")
    print(f"ratio ours / baseline: {mine / ref:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
