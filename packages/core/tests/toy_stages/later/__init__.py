"""Toy planned stage: a config schema, no run() yet (like tune/eval/deploy/agent today)."""
from toy_stages.later.config import LaterConfig

__all__ = ["LaterConfig"]
