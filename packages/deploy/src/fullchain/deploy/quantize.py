"""CPU quantization of the servable model: int8 weight-only linear layers through torchao, the
quantization library transformers itself integrates (`TorchAoConfig`), so the engine loads the
quantized directory with its own `from_pretrained` (the `quantization_config` in config.json
tells it how) and nothing in the server changes."""
from __future__ import annotations

import logging
from pathlib import Path

from fullchain.deploy.config import DeployConfig
from fullchain.deploy.engines import QUANTIZATION_LABELS as LABELS

log = logging.getLogger("fullchain.deploy")


def torchao_config(cfg: DeployConfig):
    """The one translation from our config to the library's: `quantization=int8` is torchao's
    `Int8WeightOnlyConfig` (per-channel int8 weights with float scales, float activations) wrapped in
    transformers' `TorchAoConfig`."""
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    if cfg.quantization != "int8":
        raise ValueError(f"quantization: {cfg.quantization!r} has no torchao translation (int8 only)")
    return TorchAoConfig(Int8WeightOnlyConfig())


def quantize_in_place(cfg: DeployConfig, model_dir: Path) -> dict:
    """Replace the weights (and config.json) of the staged model in `model_dir` by their
    quantized form. The staged files may be hard links into the source model: they are
    unlinked before anything is written, so the source is never touched."""
    import torch
    from transformers import AutoModelForCausalLM

    before = _weights_bytes(model_dir)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.dtype, "auto")
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=torchao_config(cfg),
                                                 dtype=dtype)
    for stale in [model_dir / "config.json", *model_dir.glob("model*.safetensors"),
                  *model_dir.glob("model.safetensors.index.json"), *model_dir.glob("pytorch_model*.bin")]:
        stale.unlink()
    model.save_pretrained(model_dir)
    after = _weights_bytes(model_dir)
    log.info("quantized to %s: weights %.1f MB -> %.1f MB", LABELS[cfg.quantization], before / 1e6,
             after / 1e6)
    return {"quantization": LABELS[cfg.quantization], "weights_bytes_full": before,
            "weights_bytes_quantized": after}


def _weights_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
