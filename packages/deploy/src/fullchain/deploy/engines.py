"""One function per engine: the serve command (with `{host}`, `{port}`, `{artifact}`
placeholders) and its settings, as the `deployment` contract records them.

The command starts with the interpreter of the deploy step's own environment, so the runner and
`fullchain serve` start the engine where it is installed (LMDeploy: its GPU environment)."""
from __future__ import annotations

import sys

from fullchain.core.contracts import Deployment
from fullchain.deploy.config import DeployConfig

QUANTIZATION_LABELS = {"int8": "int8-weight-only (torchao)",
                       "int8_dynamic": "int8-dynamic (PyTorch, applied at load)"}
"""What `deployment.json` records as `quantization` for the transformers engine's options."""

MODEL_DIR = "model"
"""The servable model inside the deploy artifact."""


def transformers_deployment(cfg: DeployConfig, python: str = sys.executable) -> Deployment:
    # PyTorch's dynamic quantization takes fp32 linear layers, whatever dtype the model is stored in
    dtype = "fp32" if cfg.quantization == "int8_dynamic" else cfg.dtype
    command = [python, "-m", "fullchain.deploy.server", "--model", "{artifact}/" + MODEL_DIR,
               "--served-model-name", cfg.served_model_name, "--host", "{host}", "--port", "{port}",
               "--dtype", {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, "auto"),
               "--api-key-env", cfg.api_key_env,
               "--max-prompt-tokens", str(cfg.max_prompt_tokens), "--max-tokens", str(cfg.max_tokens),
               "--default-max-tokens", str(cfg.default_max_tokens),
               "--max-concurrent-requests", str(cfg.max_concurrent_requests),
               "--max-request-bytes", str(cfg.max_request_bytes), "--threads", str(cfg.threads)]
    if cfg.continuous_batching:
        command.append("--continuous-batching")
    if cfg.quantization == "int8_dynamic":
        command += ["--quantize", "int8_dynamic"]
    return Deployment(engine="transformers", model_name=cfg.served_model_name, command=command,
                      env={"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
                      health_path="/health", api_base="/v1",
                      startup_timeout_s=cfg.startup_timeout_s, api_key_env=cfg.api_key_env,
                      quantization=QUANTIZATION_LABELS.get(cfg.quantization, "none"))


def lmdeploy_deployment(cfg: DeployConfig, python: str = sys.executable) -> Deployment:
    """`lmdeploy serve api_server` (TurboMind, or its PyTorch engine where TurboMind's CUDA
    libraries are missing), through `fullchain.deploy.lmdeploy_launch`, which adds the API key
    from the environment (LMDeploy takes keys only on its command line)."""
    command = [python, "-m", "fullchain.deploy.lmdeploy_launch", "--api-key-env", cfg.api_key_env,
               "--", "{artifact}/" + MODEL_DIR, "--server-name", "{host}", "--server-port", "{port}",
               "--model-name", cfg.served_model_name, "--tp", str(cfg.tensor_parallel_size),
               "--max-batch-size", str(cfg.max_batch_size),
               "--cache-max-entry-count", str(cfg.cache_max_entry_count),
               # our chat template's tool calls are Hermes/Qwen `<tool_call>` JSON
               "--tool-call-parser", "qwen", "--chat-template", "{artifact}/chat_template.json"]
    if cfg.dtype in ("bf16", "fp16"):
        command += ["--dtype", {"bf16": "bfloat16", "fp16": "float16"}[cfg.dtype]]
    if cfg.quantization == "awq":
        command += ["--model-format", "awq"]
    if cfg.kv_cache_int8:
        command += ["--quant-policy", "8"]
    return Deployment(engine="lmdeploy", model_name=cfg.served_model_name, command=command,
                      env={}, health_path="/v1/models", api_base="/v1",
                      startup_timeout_s=cfg.startup_timeout_s, api_key_env=cfg.api_key_env,
                      quantization="awq-w4a16" if cfg.quantization == "awq" else "none")


def deployment_for(cfg: DeployConfig, python: str = sys.executable) -> Deployment:
    return {"transformers": transformers_deployment,
            "lmdeploy": lmdeploy_deployment}[cfg.engine](cfg, python)
