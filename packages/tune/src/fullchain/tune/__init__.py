"""fullchain.tune: planned stage. Its config schema (`TuneConfig`) is part of the spec tree
now; the stage's `run` lands with its own issue, so `stages=[tune]` is refused with a clear
error until then."""
from fullchain.tune.config import TuneConfig

__all__ = ["TuneConfig"]
