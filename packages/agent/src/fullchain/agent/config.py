"""Config schema of the agent stage (Lagent). The stage itself is planned (issue to come)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
