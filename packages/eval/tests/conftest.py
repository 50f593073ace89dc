"""Fixtures live in eval_testing.py (a uniquely named module: several packages' test folders are
collected in one pytest run, and `conftest` is not a unique import name)."""
from eval_testing import *  # noqa: F401,F403
