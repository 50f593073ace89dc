"""CPU quantization of the servable model, two ways:

- `int8`: int8 weight-only linear layers through torchao, the quantization library transformers
  itself integrates (`TorchAoConfig`), saved in the artifact, so the engine loads the quantized
  directory with its own `from_pretrained` (the `quantization_config` in config.json tells it
  how) and nothing in the server changes. Smaller on disk; slower than fp32 on CPU (torchao's
  int8 layouts are written for torch.compile; eager, they dequantize).
- `int8_dynamic`: PyTorch's dynamic quantization (int8 weights, activations quantized per batch,
  fbgemm/x86 int8 GEMMs), applied by the server to the loaded model (`dynamic_int8`): PyTorch's
  quantized modules have no HF checkpoint format, so the artifact keeps the full-precision
  weights and the serve command says `--quantize int8_dynamic`."""
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


def dynamic_int8(model):
    """The one translation for `quantization=int8_dynamic`: every `nn.Linear` of `model` (the
    output layer included; embeddings and norms stay float) becomes PyTorch's dynamically
    quantized Linear with per-output-channel int8 weights (`per_channel_dynamic_qconfig`), in
    place. PyTorch marks `torch.ao.quantization` deprecated in favour of torchao, whose eager int8
    configs measured slower than fp32 here (docs/deploy.md); the warning is silenced here only."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("quantization: int8_dynamic needs the model in fp32 (dtype: fp32 or auto)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


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
