"""Toy planned stage: a config schema, no run() yet (a stage package before its run() lands)."""
from toy_stages.later.config import LaterConfig

__all__ = ["LaterConfig"]
