"""The pretrain stage: data artifact in, trained model artifact out.

Artifact layout (`out`), the types it provides in brackets:
    checkpoints/iter_NNNNNNN/   megatron dist checkpoints (model, optimizer, scheduler, data position, RNG)
    checkpoints/latest.json     the last complete checkpoint, written after it completed [megatron_checkpoint]
    model.json                  the resolved ModelConfig + vocab_size, padded_vocab_size, seq_length
    metrics.jsonl, tensorboard/, loss.png
    hf/                         Hugging Face Llama export with the data stage's tokenizer (export_hf) [hf_model]
Runs on every rank under torchrun; re-running in the same `out` resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from fullchain.core.artifact import Artifact, write_json_atomic
from fullchain.pretrain.config import PretrainConfig

logger = logging.getLogger(__name__)

# torchrun's variables must not leak into the single-process export (it forms its own world).
# TORCHELASTIC_USE_AGENT_STORE=True in particular makes rank 0 a client of torchrun's store
# instead of hosting its own: the export then waits for a store that never comes (30 min).
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
             "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR",
             "MASTER_PORT")


def _single_process_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in _DIST_ENV and not k.startswith("TORCHELASTIC_")}


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run(cfg: PretrainConfig, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
    """Train `cfg.model` on the packed corpus `inputs["corpus"]` into `out` (resuming if `out`
    holds checkpoints)."""
    from fullchain.core.contracts import read_packed_corpus
    from fullchain.pretrain.train import train

    if "corpus" not in inputs:
        raise ValueError(f"inputs: the pretrain stage needs a 'corpus' input, got {sorted(inputs)}")
    out = Path(out)
    spec = read_packed_corpus(inputs["corpus"])
    rank = _rank()
    metrics = train(cfg, spec, out)
    if rank != 0:
        return metrics

    model_json = out / "model.json"
    write_json_atomic(model_json, {**dataclasses.asdict(cfg.model),
                                   "vocab_size": metrics["vocab_size"],
                                   "padded_vocab_size": metrics["padded_vocab_size"],
                                   "seq_length": cfg.batch.seq_length})
    from fullchain.pretrain.metrics import plot_loss

    plot_loss(out / "metrics.jsonl", out / "loss.png", title=f"pretrain {cfg.model.name}")
    if cfg.export_hf:
        export_hf(out, spec.tokenizer_dir, metrics["vocab_size"], cfg.batch.seq_length)
        metrics["hf_dir"] = "hf"
    return metrics


def export_hf(out: Path, tokenizer_dir: Path, vocab_size: int, seq_length: int) -> Path:
    """Run `python -m fullchain.pretrain.hf export` on the latest checkpoint into `out/hf`."""
    from fullchain.pretrain.checkpoint import latest_checkpoint

    latest = latest_checkpoint(out / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"{out / 'checkpoints'}: no complete checkpoint to export")
    hf_dir = out / "hf"
    if hf_dir.exists():  # leftover of an interrupted export
        shutil.rmtree(hf_dir)
    env = _single_process_env()
    cmd = [sys.executable, "-m", "fullchain.pretrain.hf", "export", "--checkpoint", str(latest[1]),
           "--model-config", str(out / "model.json"), "--vocab-size", str(vocab_size),
           "--seq-length", str(seq_length), "--tokenizer", str(tokenizer_dir), "--out", str(hf_dir)]
    logger.info("exporting to Hugging Face: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"HF export failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return hf_dir
