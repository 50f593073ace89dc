"""Config schema of the agent stage: Lagent agents with sandboxed tools on a served model, scored
on tool-use task sets with and without tools (stdlib only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage

_NOT_HASHED = {"hash": False}

TOOLS = ("calculator", "python", "search")
"""Tools the agent can offer (`search`: BM25 over the `corpus` input's documents)."""
TASK_SETS = ("heldout", "gsm8k", "bfcl_simple", "bfcl_multiple", "file")
"""heldout: chat_data's held-out tool-use tasks (the `tasks` input; exact answer); gsm8k: GSM8K
test (numeric answer); bfcl_simple / bfcl_multiple: BFCL v4 simple (Python) and multiple (AST
match of the call); file: `tasks=<file.jsonl>` (numeric or exact match)."""


@dataclass
class SandboxConfig:
    timeout_s: float = 10.0
    """Wall-clock limit per tool call."""
    cpu_seconds: int = 5
    """CPU-time limit per tool call (RLIMIT_CPU)."""
    memory_mb: int = 512
    """Address-space limit of the tool process (RLIMIT_AS)."""
    max_processes: int = 16
    """Processes the code may start (RLIMIT_NPROC, on top of what its user already runs)."""
    output_bytes: int = 16384
    """What the code prints beyond this is cut off and the call fails."""
    pool_size: int = field(default=1, metadata=_NOT_HASHED)
    """Workers started ahead (each serves one call, then is replaced)."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.cpu_seconds < 1 or self.memory_mb < 64:
            raise ValueError("sandbox: timeout_s > 0, cpu_seconds >= 1 and memory_mb >= 64 required")
        if self.max_processes < 1 or self.output_bytes < 1 or self.pool_size < 0:
            raise ValueError("sandbox: max_processes >= 1, output_bytes >= 1, pool_size >= 0 required")


@dataclass
class AgentConfig:
    framework: Literal["lagent"] = "lagent"
    """Agent library."""
    protocol: Literal["react", "function_calling"] = "react"
    """react: Lagent's ReAct text protocol (Thought / Action / Action Input / Final Answer);
    function_calling: OpenAI `tools` in, `tool_calls` out (the Hermes <tool_call> format the chat
    template renders and the tuned model was trained on)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL (`http://127.0.0.1:8000/v1`) instead of the `endpoint` input
    (hashed as text: a different model behind the same URL needs `force=[agent]`)."""
    model: str | None = None
    """Model name in requests (default: the deployment's, or the server's first /v1/models)."""
    tools: list[str] = field(default_factory=lambda: ["calculator", "python"])
    """Tools offered on gsm8k and task files (heldout offers the tools its conversations were
    trained with; BFCL its own functions). One of: calculator, python, search."""
    max_turns: int = 5
    """Model replies per task with tools (the held-out tasks need at most 4: three calls and the
    answer); a task not answered by then is a scored failure. Without tools: one reply."""
    max_tokens: int = 96
    """Tokens per model reply (a calculator call is ~50 tokens with digits split one by one)."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy)."""
    task_sets: dict[str, int] = field(default_factory=lambda: {
        "heldout": 8, "gsm8k": 1, "bfcl_simple": 1, "bfcl_multiple": 1})
    """Task sets to score and how many items of each (the first N; 0: all)."""
    tasks: str | None = field(default=None, metadata={"hash": "content"})
    """A JSONL task file (`question`, `answer`) scored as the `file` set; hashed by content."""
    data_dir: str | None = field(default=None, metadata=_NOT_HASHED)
    """Where gsm8k/ and bfcl-v4/ are (../shared/data, read in place)."""
    retrieval_documents: int = 2000
    """Documents of the `corpus` input indexed for the `search` tool."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Limits of the Python tool."""
    concurrency: int = field(default=1, metadata=_NOT_HASHED)
    """Tasks run at once. 1: on the CPU server 4 at a time was slower (0.22 vs 0.36 tasks/s,
    benchmarks/agent_tasks.py); raise it for a server that batches (LMDeploy, vLLM on a GPU)."""
    request_timeout_s: float = field(default=120.0, metadata=_NOT_HASHED)
    """Seconds one model request may take."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tools) - set(TOOLS))
        if unknown:
            raise ValueError(f"tools: unknown {unknown}; known: {list(TOOLS)}")
        unknown = sorted(set(self.task_sets) - set(TASK_SETS))
        if unknown:
            raise ValueError(f"task_sets: unknown {unknown}; known: {list(TASK_SETS)}")
        if any(not isinstance(n, int) or n < 0 for n in self.task_sets.values()):
            raise ValueError(f"task_sets: counts must be integers >= 0, got {dict(self.task_sets)}")
        if "file" in self.task_sets and not self.tasks:
            raise ValueError("task_sets.file: set agent.tasks=<file.jsonl> (question, answer) for it")
        if self.max_turns < 1 or self.max_tokens < 1 or self.concurrency < 1:
            raise ValueError("max_turns, max_tokens and concurrency must be >= 1")


# The agent talks to a served model and is scored on task sets.
STAGE = Stage(kind="agent", module="fullchain.agent", config=AgentConfig,
              inputs={"endpoint": Role("deployment", serve=True, optional=True,
                                       doc="the served model (or agent.endpoint=URL)"),
                      "tasks": Role("tool_tasks", optional=True,
                                    doc="tool-use tasks with exact answers (chat_data's held-out split)"),
                      "corpus": Role("packed_corpus", optional=True,
                                     doc="documents for the search tool (the data stage's corpus)")},
              outputs={})
