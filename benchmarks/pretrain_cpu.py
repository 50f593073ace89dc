"""CPU training throughput: the pretrain stage vs a plain PyTorch loop, same process, same shape.

Baseline: HF `LlamaForCausalLM` of the `small` shape (hidden 384, 6 layers, 6 heads, ffn 1024,
vocab 8192, untied, SDPA attention), torch AdamW, grad clipping, batch 8 x seq 256, fp32.
Ours: `fullchain.pretrain.run` on a packed dataset of random tokens: megatron-core GPTModel,
Megatron DDP, `get_megatron_optimizer` (distributed optimizer), the pipeline schedule, behind
the CPU compatibility shim.

Equal conditions: one run of this script, the same threads and `MALLOC_TOP_PAD_` (set by
re-exec before torch loads) for both sides; windows interleaved A B B A ... so that drift and
other jobs on the machine hit both sides alike; every window is a FRESH process of this script
(`--window`) that builds its model and optimizer and drops its first `--warmup` steps (allocator
growth, first-touch page faults). Fresh processes, because sharing one is not neutral: in a
process where the stage has trained, the HF loop then runs ~15% slower (1,850 -> 1,550 tokens/s,
3x the page faults, ~4,000 voluntary context switches per step instead of ~10; not the CPU shim's
mode, not the checkpoint save, not distributed init or model build; cause not found yet).
Per-step times come from the same clocks (wall and process CPU time, marked after each baseline step and, for ours, when the
stage's loop logs the step: its whole loop, not only its own `step_time`). MFU =
(6 x matmul weights + 12 x layers x hidden x seq) FLOPs/token against this process's measured fp32
`torch.mm` peak, taken before and after. Prints the median of each side and their ratio (goal
>= 0.9) and the load average (other jobs on a 2-core machine move every number).

    .venv/bin/python benchmarks/pretrain_cpu.py [--steps 8] [--warmup 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 8192
SEQ = 256
BATCH = 8
SHAPE = dict(num_layers=6, hidden_size=384, num_attention_heads=6, ffn_hidden_size=1024)
MALLOC_TOP_PAD = "1073741824"


def _reexec_with_malloc_pad() -> None:
    # glibc returns logits-sized buffers to the OS every step (~34k page faults per
    # step); the runner sets this for every stage. Set before torch loads, for both sides.
    if os.environ.get("MALLOC_TOP_PAD_") != MALLOC_TOP_PAD:
        os.environ["MALLOC_TOP_PAD_"] = MALLOC_TOP_PAD
        os.execv(sys.executable, [sys.executable, *sys.argv])


def _per_step(marks: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step from (perf_counter, process_time) marks taken after the
    warm-up steps and after every step."""
    (wall0, cpu0), (wall1, cpu1) = marks[warmup - 1], marks[-1]
    steps = len(marks) - warmup
    return (wall1 - wall0) / steps, (cpu1 - cpu0) / steps


def _mark() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def baseline_window(steps: int, warmup: int, seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of a plain HF Llama + torch AdamW loop (fresh model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=SHAPE["hidden_size"],
                         intermediate_size=SHAPE["ffn_hidden_size"],
                         num_hidden_layers=SHAPE["num_layers"],
                         num_attention_heads=SHAPE["num_attention_heads"],
                         num_key_value_heads=SHAPE["num_attention_heads"],
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         attention_bias=False, mlp_bias=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.randint(0, VOCAB, (warmup + steps, BATCH, SEQ),
                         generator=torch.Generator().manual_seed(seed))
    marks = []
    for step in range(warmup + steps):
        batch = data[step]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # as the stage does: the step's loss is read every step
        marks.append(_mark())
    return _per_step(marks, warmup)


def _data_artifact(root: Path, tokens: int) -> Path:
    import numpy
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = root / "packed" / "random" / "train"
    prefix.parent.mkdir(parents=True)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=numpy.uint16)
    generator = torch.Generator().manual_seed(0)
    for _ in range(tokens // 1000 + 1):
        builder.add_document(torch.randint(1, VOCAB, (1000,), generator=generator), [1000])
    builder.finalize(str(prefix) + ".idx")
    (root / "dataset.json").write_text(json.dumps({
        "format": "megatron-indexed", "tokenizer": "tokenizer", "vocab_size": VOCAB, "eod_id": 0,
        "pad_id": 1, "bos_id": None, "dtype": "uint16",
        "splits": {"train": {"prefixes": ["packed/random/train"], "weights": [1.0]}}}))
    (root / "manifest.json").write_text(json.dumps({"stage": "data", "step_id": "benchmark"}))
    return root


class _StepMarks(logging.Handler):
    """Marks the clocks when the stage's loop logs "iter N/...", i.e. after each step's update,
    loss and metrics row: the whole loop per step, not only the stage's own `step_time`."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("iter "):
            self.marks.append(_mark())


def ours_window(steps: int, warmup: int, seed: int, data: Path, workdir: Path,
                peak: float) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the pretrain stage (a fresh run)."""
    from fullchain.core.artifact import Artifact
    from fullchain.core.schema import (
        BatchConfig,
        CheckpointConfig,
        LoggingConfig,
        OptimizerConfig,
        ScheduleConfig,
        ValidationConfig,
    )
    from fullchain.pretrain import ModelConfig, PretrainConfig, run

    model = ModelConfig(name="small", max_position_embeddings=1024, **SHAPE)
    cfg = PretrainConfig(
        model=model,
        batch=BatchConfig(seq_length=SEQ, micro_batch_size=BATCH, global_batch_size=BATCH),
        optimizer=OptimizerConfig(lr=1e-3),
        schedule=ScheduleConfig(train_iters=warmup + steps, warmup_iters=1),
        validation=ValidationConfig(eval_iters=0, eval_interval=0),
        checkpoint=CheckpointConfig(save_interval=0),
        logging=LoggingConfig(tensorboard=False, log_interval=1, peak_flops=peak),
        export_hf=False, seed=seed)
    out = Path(tempfile.mkdtemp(dir=workdir))
    logger = logging.getLogger("fullchain.pretrain.train")
    handler = _StepMarks()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        # The final checkpoint is written after the last mark: not timed.
        run(cfg, {"data": Artifact.load(data)}, out)
    finally:
        logger.removeHandler(handler)
    assert len(handler.marks) == warmup + steps, len(handler.marks)
    return _per_step(handler.marks, warmup)


def _window_in_fresh_process(side: str, args: argparse.Namespace, seed: int, data: Path,
                             workdir: Path, peak: float, threads: int) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--window", side, "--seed", str(seed), "--data", str(data),
           "--workdir", str(workdir), "--peak", str(peak), "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{side} window failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["wall"], result["cpu"]


def _window_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.window == "baseline":
        wall, cpu = baseline_window(args.steps, args.warmup, args.seed)
    else:
        wall, cpu = ours_window(args.steps, args.warmup, args.seed, Path(args.data),
                                Path(args.workdir), args.peak)
    print(json.dumps({"wall": wall, "cpu": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per window")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of (baseline, ours, ours, baseline) windows")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    # One timed window in this (fresh) process; used by the main run.
    parser.add_argument("--window", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _reexec_with_malloc_pad()
    if args.window:
        _window_main(args)
        return
    import torch
    from fullchain.pretrain.metrics import measure_peak_flops, model_flops_per_token

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    h, layers, ffn = SHAPE["hidden_size"], SHAPE["num_layers"], SHAPE["ffn_hidden_size"]
    # Matmul weights: q,k,v,o + gate,up,down per layer, and the output layer (not the embedding).
    matmul_params = layers * (4 * h * h + 3 * h * ffn) + VOCAB * h
    flops_per_token = model_flops_per_token(layers, h, SEQ, matmul_params)
    load_before = os.getloadavg()
    peak_before = measure_peak_flops(seconds=2.0)
    print(f"threads={threads} MALLOC_TOP_PAD_={os.environ['MALLOC_TOP_PAD_']} "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"fp32 matmul peak {peak_before / 1e9:.0f} GFLOP/s; {flops_per_token / 1e6:.1f} MFLOP/token; "
          f"batch {BATCH} x seq {SEQ}; {args.rounds} rounds x 2 windows x ({args.warmup} + "
          f"{args.steps}) steps per side")

    tokens_per_step = BATCH * SEQ
    results: dict[str, list[float]] = {"baseline": [], "ours": []}
    cpu_results: dict[str, list[float]] = {"baseline": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = _data_artifact(Path(tmp) / "data", tokens_per_step * (args.warmup + args.steps + 4)
                              + 10_000)
        order = []
        for r in range(args.rounds):
            order += ["baseline", "ours", "ours", "baseline"] if r % 2 == 0 else \
                     ["ours", "baseline", "baseline", "ours"]
        for index, side in enumerate(order):
            wall, cpu = _window_in_fresh_process(side, args, index, data, Path(tmp), peak_before,
                                                 threads)
            results[side].append(tokens_per_step / wall)
            cpu_results[side].append(tokens_per_step / cpu)
            print(f"  window {index + 1}/{len(order)} {side:8s} {tokens_per_step / wall:7,.0f} "
                  f"tokens/s ({wall:.3f} s/step wall, {cpu:.3f} s CPU, load "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
    peak_after = measure_peak_flops(seconds=2.0)
    peak = max(peak_before, peak_after)
    load_after = os.getloadavg()
    ref = statistics.median(results["baseline"])
    mine = statistics.median(results["ours"])
    print(f"fp32 matmul peak after: {peak_after / 1e9:.0f} GFLOP/s (MFU uses the higher, "
          f"{peak / 1e9:.0f})")
    print(f"baseline HF Llama (sdpa) + torch AdamW: {ref:,.0f} tokens/s, "
          f"MFU {ref * flops_per_token / peak:.1%}")
    print(f"fullchain.pretrain (megatron DDP + distributed optimizer): {mine:,.0f} tokens/s, "
          f"MFU {mine * flops_per_token / peak:.1%}")
    print(f"ratio ours / baseline: {mine / ref:.3f} (goal >= 0.9); best window of each: "
          f"{max(results['ours']) / max(results['baseline']):.3f}")
    cpu_ratio = statistics.median(cpu_results["ours"]) / statistics.median(cpu_results["baseline"])
    print(f"per CPU-second (less sensitive to other jobs): ours / baseline {cpu_ratio:.3f}")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
