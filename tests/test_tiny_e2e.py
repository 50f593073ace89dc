"""The tiny end-to-end run through the real CLI, as the README's demo does it: corpus (the
Python standard library) -> data -> pretrain, then a second run that reuses every step."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def fullchain(*args, env, check=True):
    result = subprocess.run([sys.executable, "-m", "fullchain.core.cli", *args], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=1800)
    if check and result.returncode != 0:
        raise AssertionError(f"fullchain {args} exited {result.returncode}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, FULLCHAIN_STORE=str(root / "artifacts"), FULLCHAIN_RUNS=str(root / "runs"),
               FULLCHAIN_CACHE=str(root / "cache"))
    # env=current: the stages run with this interpreter (the test's own environment)
    first = fullchain("run", "experiment=tiny", "env=current", env=env)
    return root, env, first


def test_first_run_makes_every_artifact(tiny_run):
    root, _, first = tiny_run
    assert "2 step(s) ran, 0 reused" in first.stderr
    (data,) = (root / "artifacts" / "data").glob("*/manifest.json")
    (pretrain,) = (root / "artifacts" / "pretrain").glob("*/manifest.json")
    data_m, pre_m = json.loads(data.read_text()), json.loads(pretrain.read_text())
    assert pre_m["inputs"]["data"]["step_id"] == data_m["step_id"]
    assert (data.parent / "dataset.json").is_file() and (data.parent / "tokenizer").is_dir()
    assert (pretrain.parent / "hf" / "config.json").is_file()
    assert data_m["environment"]["packages"]["megatron-core"]


def test_second_run_reuses_everything_and_plan_agrees(tiny_run):
    root, env, _ = tiny_run
    again = fullchain("run", "experiment=tiny", "env=current", env=env)
    assert "0 step(s) ran, 2 reused — every step was reused" in again.stderr
    plan = fullchain("plan", "experiment=tiny", "env=current", env=env).stdout
    assert "0 to run, 2 cached" in plan


def test_show_traces_the_model_back_to_the_corpus(tiny_run):
    root, env, _ = tiny_run
    (pretrain,) = (root / "artifacts" / "pretrain").glob("*/manifest.json")
    out = fullchain("show", str(pretrain.parent), env=env).stdout
    assert out.splitlines()[1].startswith("stage      pretrain")
    assert "    data " in out  # the data step, one level down the lineage
