"""Fixtures live in tune_testing.py (a uniquely named module: several packages' test folders are
collected in one pytest run, and `conftest` is not a unique import name)."""
from tune_testing import *  # noqa: F401,F403
