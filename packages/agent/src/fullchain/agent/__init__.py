"""fullchain.agent: Lagent agents (ReAct, function calling) with sandboxed tools on a served
model, and an agent benchmark that scores them with and without tools."""
from fullchain.agent.config import AgentConfig


def run(cfg, inputs, out):
    """`fullchain.agent.stage.run` (imported on call: this package imports nothing heavy)."""
    from fullchain.agent.stage import run as _run

    return _run(cfg, inputs, out)


__all__ = ["AgentConfig", "run"]
