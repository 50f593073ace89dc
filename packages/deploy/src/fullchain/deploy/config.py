"""Config schema of the deploy stage. The stage itself is planned (issue to come)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from fullchain.core.contracts import Role, Stage


@dataclass
class DeployConfig:
    engine: Literal["cpu", "lmdeploy", "vllm"] = "cpu"
    """Serving engine: a CPU engine here, LMDeploy (TurboMind/PyTorch) or vLLM on GPUs."""
    host: str = field(default="127.0.0.1", metadata={"hash": False})
    """Bind address (loopback unless you mean to expose it)."""
    port: int = field(default=8000, metadata={"hash": False})
    """OpenAI-compatible API port."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Weights dtype (auto: fp32 on CPU, bf16 on GPU)."""
    tensor_parallel_size: int = 1
    """GPUs per served model."""
    max_batch_size: int = 8
    """Concurrent sequences."""
    quantization: Literal["none", "awq"] = "none"
    """Weight quantization (LMDeploy lite auto_awq)."""


# Deploy turns a HF model into a deployment: a service the runner can start for dependents.
STAGE = Stage(kind="deploy", module="fullchain.deploy", config=DeployConfig,
              inputs={"model": Role("hf_model", doc="the model to serve")},
              outputs={"deployment": "."})
