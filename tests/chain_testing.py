"""Shared fixtures of the cross-package tests (a uniquely named module: several test folders are
collected in one pytest run). `tiny_run` is the README's demo through the real CLI, once per
session and shortened for CI (TINY: a short tune and load test; `bash tools/demo.sh` is the full
length), then run again: every step reused. The end-to-end, contract and report tests read the
artifacts and run records it wrote."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# experiment=tiny shortened: 60 pretrain steps (of 200), the tune step on the first 160 training
# conversations for one pass (~20 packed steps), a 2-second load test per concurrency level;
# data, chat_data and deploy are the demo's own; eval and agent are left out (OpenCompass alone
# takes minutes; their own tests cover them). env=current: the stages run with this interpreter.
TINY = ("experiment=tiny", "env=current", "stages=[data,chat_data,pretrain,tune,deploy]",
        "pretrain.schedule.train_iters=60",
        "pretrain.schedule.warmup_iters=6", "++tune.max_train_records=160", "tune.schedule.epochs=1",
        "tune.schedule.warmup_iters=2", "deploy.bench.duration_s=2")


def fullchain(*args, env, check=True, timeout=1800):
    result = subprocess.run([sys.executable, "-m", "fullchain.core.cli", *args], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"fullchain {args} exited {result.returncode}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """(root, env, first run, second run) of the shortened demo in a fresh store under root."""
    root = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, FULLCHAIN_STORE=str(root / "artifacts"), FULLCHAIN_RUNS=str(root / "runs"),
               FULLCHAIN_CACHE=str(root / "cache"))
    first = fullchain("run", *TINY, env=env)
    second = fullchain("run", *TINY, env=env)
    return root, env, first, second


@pytest.fixture(scope="session")
def tiny_run(tiny_runs):
    """(root, env, first run): the store and run records the report's test reads too (the second,
    all-reused run gives it the reuse ratio)."""
    return tiny_runs[:3]


def artifact_dir(root: Path, stage: str) -> Path:
    (manifest,) = (root / "artifacts" / stage).glob("*/manifest.json")
    return manifest.parent
