"""Shared fixtures of the cross-package tests (a uniquely named module: several test folders are
collected in one pytest run). `tiny_run` is the README's demo through the real CLI, once per
session: the end-to-end test and the contract tests read the artifacts it wrote."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fullchain(*args, env, check=True, timeout=1800):
    result = subprocess.run([sys.executable, "-m", "fullchain.core.cli", *args], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"fullchain {args} exited {result.returncode}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, FULLCHAIN_STORE=str(root / "artifacts"), FULLCHAIN_RUNS=str(root / "runs"),
               FULLCHAIN_CACHE=str(root / "cache"))
    # env=current: the stages run with this interpreter (the test's own environment)
    first = fullchain("run", "experiment=tiny", "env=current", env=env)
    return root, env, first


def artifact_dir(root: Path, stage: str) -> Path:
    (manifest,) = (root / "artifacts" / stage).glob("*/manifest.json")
    return manifest.parent
