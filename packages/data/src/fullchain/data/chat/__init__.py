"""fullchain.data.chat (stage kind `data.chat`): chat files + a synthetic tool-use task -> conversations.

One validated, deduplicated, decontaminated conversation set (SFT or preference) with a card, and
the tool-use tasks the agent is scored on.

`run(cfg, inputs, out)` is the stage; `ChatDataConfig` its config. Importing this module imports
only the stdlib config classes: transformers and the decontamination index load inside `run`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fullchain.data.chat.config import ChatDataConfig, ChatSourceConfig, ToolUseConfig

__all__ = ["ChatDataConfig", "ChatSourceConfig", "ToolUseConfig", "run"]


def run(cfg: ChatDataConfig, inputs: dict, out: Path) -> dict[str, Any]:
    """Build the conversation set into the artifact directory `out`; returns the metrics."""
    from fullchain.data.chat.stage import run as run_stage

    return run_stage(cfg, inputs, out)
