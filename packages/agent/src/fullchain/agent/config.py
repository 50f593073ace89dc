"""Config schema of the agent stage (Lagent). The stage itself is planned (issue to come)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage


@dataclass
class SandboxConfig:
    timeout_s: float = 10.0
    """Wall-clock limit per tool call."""
    memory_mb: int = 512
    """Address-space limit of the tool process."""
    network: bool = False
    """Tools get no network unless enabled."""


@dataclass
class AgentConfig:
    framework: Literal["lagent"] = "lagent"
    """Agent library."""
    protocol: Literal["react"] = "react"
    """Reasoning/acting loop."""
    tools: list[str] = field(default_factory=lambda: ["python_interpreter"])
    """Tools offered to the model."""
    max_turns: int = 6
    """Tool calls before the agent must answer."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Limits of tool execution."""
    eval_set: str | None = field(default=None, metadata={"hash": "content"})
    """Tool-use benchmark to score the agent on (e.g. BFCL subset); hashed by content."""


# The agent talks to a served model and is scored on a task set.
STAGE = Stage(kind="agent", module="fullchain.agent", config=AgentConfig,
              inputs={"endpoint": Role("deployment", serve=True, doc="the served model"),
                      "tasks": Role("tool_tasks", optional=True,
                                    doc="tool-use tasks with exact answers (chat_data's held-out split)")},
              outputs={})
