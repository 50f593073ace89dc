"""fullchain.agent: planned stage. Its config schema (`AgentConfig`) is part of the spec tree
now; the stage's `run` lands with its own issue, so `stages=[agent]` is refused with a clear
error until then."""
from fullchain.agent.config import AgentConfig

__all__ = ["AgentConfig"]
