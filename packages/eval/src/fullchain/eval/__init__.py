"""fullchain.eval: planned stage. Its config schema (`EvalConfig`) is part of the spec tree
now; the stage's `run` lands with its own issue, so `stages=[eval]` is refused with a clear
error until then."""
from fullchain.eval.config import EvalConfig

__all__ = ["EvalConfig"]
