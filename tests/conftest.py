"""Fixtures for these tests live in chain_testing.py (a uniquely named module; see there)."""
from chain_testing import *  # noqa: F401,F403
