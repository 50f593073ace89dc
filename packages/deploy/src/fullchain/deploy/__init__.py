"""fullchain.deploy: planned stage. Its config schema (`DeployConfig`) is part of the spec tree
now; the stage's `run` lands with its own issue, so `stages=[deploy]` is refused with a clear
error until then."""
from fullchain.deploy.config import DeployConfig

__all__ = ["DeployConfig"]
