"""Spine tests run the real runner on two toy stages (tests/toy_stages) with their own small
config tree (tests/conf): word counts of a corpus file -> a number derived from them."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CONF = HERE / "conf"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project dir with a corpus; env vars point the toy tree's paths at it."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat saw the dog\nThe end\n")
    monkeypatch.setenv("FULLCHAIN_ROOT", str(tmp_path))
    monkeypatch.setenv("TOY_CORPUS", str(corpus))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for var in ("FULLCHAIN_STORE", "FULLCHAIN_RUNS", "FULLCHAIN_CACHE", "FULLCHAIN_CONF"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fullchain(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI entry point in a subprocess."""
    command = [sys.executable, "-m", "fullchain.core.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def spec_for(*overrides: str) -> dict:
    from fullchain.core import spec

    return spec.to_spec(spec.compose(CONF, list(overrides)))


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    """`predicate()`'s first truthy value, polled every `every` s; fails after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` has exited (or is a zombie) within `within` seconds."""
    from fullchain.core import procs

    deadline = time.time() + within
    while procs.alive(pid):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True
