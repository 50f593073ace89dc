"""Training metrics: metrics.jsonl, TensorBoard, optional W&B, the loss-curve PNG, and MFU.

Only rank 0 writes. MFU = model FLOP/s / peak FLOP/s of the ranks used; the peak is measured on
the CPU (fp32 `torch.mm`, ~210 GFLOP/s on the 2-core reference machine) and looked up for known
GPUs (dense bf16), so "70% MFU" means the same thing here as in docs/pretrain.md's benchmark.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from fullchain.core.schema import LoggingConfig

logger = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched on the device name.
GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                 "L4": 121e12, "V100": 125e12}


def model_flops_per_token(num_layers: int, hidden_size: int, seq_length: int,
                          matmul_parameters: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention scores
    (QK^T and AV: 2 * 2 * s * h per layer forward, x3 for backward) — the PaLM formula."""
    return 6.0 * matmul_parameters + 12.0 * num_layers * hidden_size * seq_length


def measure_peak_flops(size: int = 2048, seconds: float = 0.6) -> float:
    """This process's sustained fp32 matmul FLOP/s (CPU), the denominator of CPU MFU."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool, caches
    count, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * size ** 3 * count / elapsed


def device_peak_flops(precision: str) -> float:
    """Peak FLOP/s of one rank's device: the data-sheet bf16 number on a GPU, measured on a CPU."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, peak in GPU_BF16_PEAK.items():
            if key in name:
                return peak if precision == "bf16" else peak / 2
        logger.warning("unknown GPU %r: MFU against a measured matmul peak", name)
    return measure_peak_flops()


class MetricsWriter:
    """metrics.jsonl + TensorBoard + W&B on rank 0; a no-op object on the other ranks."""

    def __init__(self, out: Path, enabled: bool, log_config: LoggingConfig, run_config: dict[str, Any],
                 resume_iteration: int) -> None:
        self.enabled = enabled
        self.jsonl = Path(out) / "metrics.jsonl"
        self.tb = None
        self.wandb_run = None
        if not enabled:
            return
        _truncate_after(self.jsonl, resume_iteration)
        if log_config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote past the checkpoint we resume from.
            self.tb = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=resume_iteration + 1)
        if log_config.wandb != "off":
            try:
                import wandb as wandb_lib
            except ImportError as exc:
                raise ImportError(
                    f"logging.wandb: {log_config.wandb!r} needs the wandb package "
                    "(pip install 'fullchain-pretrain[wandb]')") from exc
            self.wandb_run = wandb_lib.init(project=log_config.wandb_project, mode=log_config.wandb,
                                            dir=str(Path(out)), config=run_config, resume="allow")

    def log(self, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"iteration": iteration, **values}
        with self.jsonl.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    self.tb.add_scalar(key, value, iteration)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _truncate_after(file: Path, iteration: int) -> None:
    """Drop rows past `iteration` (written by a run killed after its last checkpoint); a fresh
    start (0) drops them all, the initialisation's validation row too (it is measured again)."""
    if not file.is_file():
        return
    keep = [line for line in file.read_text(encoding="utf-8").splitlines()
            if line.strip() and iteration > 0 and json.loads(line)["iteration"] <= iteration]
    file.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def read_metrics(file: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file."""
    if not Path(file).is_file():
        return []
    return [json.loads(line) for line in Path(file).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(metrics_file: Path, png: Path, title: str | None = None) -> None:
    """loss.png: training loss per step and validation loss where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_file)
    train = [(r["iteration"], r["loss"]) for r in rows if r.get("loss") is not None]
    valid = [(r["iteration"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "pretrain loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
