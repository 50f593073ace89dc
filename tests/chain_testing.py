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

EVAL_PYTHON = REPO / ".venvs" / "eval" / "bin" / "python"

# experiment=tiny shortened: 60 pretrain steps (of 200), the tune step on the first 160 training
# conversations (~15 packed steps of 2 rows, loss logged every 2), a 2-second load test per concurrency level, eval
# on 8 held-out tool tasks and 1024 held-out tokens, the agent on 4 held-out tasks; data,
# chat_data and the rest are the demo's own. env=current: the stages run with this interpreter,
# except eval, which runs in its own environment (OpenCompass's pins), as in the demo.
TINY = ("experiment=tiny", "env=current", "pretrain.schedule.train_iters=60",
        "pretrain.schedule.warmup_iters=6", "++tune.max_train_records=160", "tune.logging.log_interval=2",
        "tune.schedule.warmup_iters=2", "deploy.bench.duration_s=2",
        f"++env.envs.eval.python={EVAL_PYTHON}", "++env.stage_env.eval=eval",
        "eval.tool_max_items=8", "eval.heldout_max_tokens=1024", "agent.task_sets={heldout: 4}")


def ensure_eval_env() -> None:
    """The eval environment, built when missing (as the demo does), with a progress line."""
    if EVAL_PYTHON.is_file():
        return
    print("building the eval environment (.venvs/eval: OpenCompass and its pins)", flush=True)
    result = subprocess.run([sys.executable, "-m", "fullchain.core.cli", "env", "sync", "eval"],
                            capture_output=True, text=True, cwd=REPO, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"`fullchain env sync eval` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


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
    ensure_eval_env()
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
