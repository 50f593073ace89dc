"""Config schema of the deploy stage (stdlib only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage

_NOT_HASHED = {"hash": False}


@dataclass
class BenchConfig:
    """A load test against the served model (`fullchain deploy bench`, or in the step)."""

    concurrency: list[int] = field(default_factory=list)
    """Concurrent clients, one level after another (e.g. [1, 8, 32]); empty: no load test in
    the step."""
    duration_s: float = 30.0
    """Seconds of load per concurrency level."""
    max_requests: int = 2000
    """At most this many requests per level (bounded traffic, even on a fast server)."""
    max_tokens: int = 64
    """Output tokens asked per request."""
    prompts: list[str] = field(default_factory=list)
    """Prompts drawn round-robin; empty: a built-in set of short questions."""

    def __post_init__(self) -> None:
        if any(not isinstance(c, int) or c < 1 for c in self.concurrency):
            raise ValueError(f"concurrency: {self.concurrency!r} must be positive integers")
        if self.duration_s <= 0 or self.max_requests < 1 or self.max_tokens < 1:
            raise ValueError("duration_s, max_requests and max_tokens must be positive")


@dataclass
class DeployConfig:
    engine: Literal["transformers", "lmdeploy"] = "transformers"
    """Serving engine: `transformers` (transformers' OpenAI server; CPU, also GPU) or `lmdeploy`
    (TurboMind / PyTorch engine; NVIDIA GPUs only, in its own environment)."""
    model_path: str | None = field(default=None, metadata={"hash": "content"})
    """A local Hugging Face model directory to serve instead of the `model` input (hashed by
    content); unwire the input then (`~graph.deploy.inputs.model`)."""
    served_model_name: str = "fullchain"
    """The model's name in the API (`model` of requests, /v1/models)."""
    host: str = field(default="127.0.0.1", metadata=_NOT_HASHED)
    """Bind address for `fullchain serve` (loopback unless you mean to expose it)."""
    port: int = field(default=8000, metadata=_NOT_HASHED)
    """Port for `fullchain serve` (0: a free one). The runner always takes a free port."""
    api_key_env: str = field(default="FULLCHAIN_API_KEY", metadata=_NOT_HASHED)
    """Environment variable holding the API key; when it is set (non-empty) where the server
    starts, requests without `Authorization: Bearer <key>` get 401. The key itself is never
    written to the artifact."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Weights dtype (auto: as stored on CPU; bf16 for LMDeploy)."""
    continuous_batching: bool = True
    """transformers engine: continuous batching with paged attention, its KV cache sized for
    `max_concurrent_requests` full contexts (off: one generate() per request, one after another;
    measured 6.8x vs 1.4x plain HF generate's tokens/s at 8 concurrent clients)."""
    threads: int = field(default=0, metadata=_NOT_HASHED)
    """CPU threads of the engine (0: torch's default). On 2 cores, 1 is faster with continuous
    batching (its generation thread's OpenMP team; docs/deploy.md), most with int8_dynamic."""
    max_prompt_tokens: int = 0
    """Longest accepted prompt in tokens after the chat template (0: the model's context)."""
    max_tokens: int = 512
    """Largest `max_tokens` a request may ask for."""
    default_max_tokens: int = 128
    """`max_tokens` of a request that gives none."""
    max_concurrent_requests: int = 16
    """Requests generating at once; more are answered 429 (with Retry-After) at once."""
    max_request_bytes: int = 1 << 20
    """Largest request body (413 beyond)."""
    tensor_parallel_size: int = 1
    """LMDeploy: GPUs per served model."""
    max_batch_size: int = 64
    """LMDeploy: concurrent sequences in the engine."""
    cache_max_entry_count: float = 0.8
    """LMDeploy: fraction of free GPU memory for the KV cache."""
    quantization: Literal["none", "int8", "int8_dynamic", "awq"] = "none"
    """Weight quantization: `int8` = int8 weight-only linear layers (per-channel scales,
    activations in float) through torchao's `Int8WeightOnlyConfig` as transformers'
    `TorchAoConfig`, saved in the artifact (transformers engine, CPU or GPU; smaller on disk,
    slower than fp32 on CPU); `int8_dynamic` = PyTorch's dynamic quantization (`quantize_dynamic`
    with `per_channel_dynamic_qconfig`: int8 linear weights, activations quantized per batch, its
    fbgemm/x86 int8 kernels) applied by the server as it loads the model (transformers engine,
    fp32 on CPU; the fastest CPU option, docs/deploy.md); `awq` = W4A16 through `lmdeploy lite
    auto_awq` (lmdeploy engine, GPU only). The full-precision model stays the lineage link
    (`source_model`)."""
    kv_cache_int8: bool = False
    """LMDeploy: KV cache in int8 (its quant_policy 8)."""
    startup_timeout_s: float = field(default=600.0, metadata=_NOT_HASHED)
    """How long a start may take before it counts as failed."""
    smoke_test: bool = True
    """Start the server once in the step: a chat and a tool-call completion must parse."""
    bench: BenchConfig = field(default_factory=BenchConfig)
    """Load test run in the step after the smoke test (off unless `bench.concurrency` is set)."""

    def __post_init__(self) -> None:
        for name in ("max_tokens", "default_max_tokens", "max_concurrent_requests",
                     "max_request_bytes", "tensor_parallel_size", "max_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r} must be a positive integer")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens: {self.default_max_tokens} exceeds max_tokens "
                             f"({self.max_tokens})")
        if self.max_prompt_tokens < 0 or not 0 <= self.port < 65536:
            raise ValueError("max_prompt_tokens must be >= 0 and port 0..65535")
        if not self.served_model_name or any(c.isspace() for c in self.served_model_name):
            raise ValueError(f"served_model_name: {self.served_model_name!r} must be non-empty "
                             "without spaces")
        if self.engine == "transformers" and (self.quantization == "awq" or self.kv_cache_int8
                                              or self.tensor_parallel_size != 1):
            raise ValueError("quantization: awq, kv_cache_int8 and tensor_parallel_size > 1 need "
                             "engine=lmdeploy (GPU); the transformers engine quantizes with "
                             "quantization=int8 or int8_dynamic")
        if self.engine == "lmdeploy" and self.quantization in ("int8", "int8_dynamic"):
            raise ValueError(f"quantization: {self.quantization} is the transformers engine's; "
                             "LMDeploy quantizes with awq (W4A16) and kv_cache_int8")
        if self.quantization == "int8_dynamic" and self.dtype not in ("auto", "fp32"):
            raise ValueError(f"dtype: {self.dtype} with quantization=int8_dynamic; PyTorch's "
                             "dynamic quantization takes fp32 linear layers (dtype: fp32 or auto)")

    def resolve(self, placement) -> None:
        """LMDeploy needs a GPU; `auto` dtype becomes bf16 there (fp32 stays the CPU's)."""
        if self.engine == "lmdeploy" and placement.accelerator != "cuda":
            raise ValueError("engine: lmdeploy serves on NVIDIA GPUs only (its device_type takes "
                             "no cpu); use engine=transformers on this machine, or give deploy a "
                             "GPU environment (env.stage_env.deploy)")
        if self.dtype == "auto" and self.engine == "lmdeploy":
            self.dtype = "bf16"


# Deploy turns a HF model into a deployment: a service the runner can start for dependents.
STAGE = Stage(kind="deploy", module="fullchain.deploy", config=DeployConfig,
              inputs={"model": Role("hf_model", optional=True,
                                    doc="the model to serve (or deploy.model_path)")},
              outputs={"deployment": "."})
