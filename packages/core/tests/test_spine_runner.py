"""The runner end to end on toy stages, through the real CLI where the user would use it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fullchain.core import runner
from fullchain.core.artifact import ArtifactError
from spine_testing import CONF, fullchain, spec_for


def manifests(store: Path, stage: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store / stage).glob("*/manifest.json"))]


def test_second_run_reuses_every_step(project):
    first = fullchain("run", "--conf", str(CONF))
    assert "2 step(s) ran, 0 reused" in first.stderr
    second = fullchain("run", "--conf", str(CONF))
    assert "0 step(s) ran, 2 reused — every step was reused" in second.stderr
    for stage in ("count", "square"):
        (manifest,) = manifests(project / "artifacts", stage)
        assert f"{stage:<9} {manifest['step_id']}  reused" in second.stderr
    square = manifests(project / "artifacts", "square")[0]
    assert square["metrics"]["value"] == pytest.approx(0.1 * (3 * 3 + 1 + 1 + 1 + 1))
    assert square["inputs"]["counts"]["step_id"] == manifests(project / "artifacts", "count")[0]["step_id"]
    assert square["environment"]["packages"]["fullchain-core"]
    assert (project / "artifacts" / "square" / square["step_id"] / "logs" / "stderr.log").is_file()


def test_multirun_runs_shared_upstream_once(project):
    result = fullchain("run", "--conf", str(CONF), "square.lr=0.2,0.3,0.4", "-m")
    assert result.stderr.count("count     ") >= 3
    assert len(manifests(project / "artifacts", "count")) == 1
    assert len(manifests(project / "artifacts", "square")) == 3
    ran_count = [line for line in result.stderr.splitlines() if line.startswith("[fullchain] count") and " ran " in line]
    assert len(ran_count) == 1, result.stderr


def test_resolved_spec_reproduces_the_run(project, tmp_path):
    fullchain("run", "--conf", str(CONF), "experiment=small")
    (spec_file,) = (project / "runs").glob("*/spec.yaml")
    text = spec_file.read_text()
    assert "defaults" not in text and "lr: 0.5" in text and "${paths.root}" not in text.split("paths:")[0]
    again = fullchain("run", "--spec", str(spec_file))
    assert "every step was reused" in again.stderr
    # elsewhere (fresh store, corpus copied to another place): the same step ids are recomputed
    other = tmp_path / "fresh"
    other.mkdir()
    env = dict(os.environ, FULLCHAIN_ROOT=str(other))
    fresh = subprocess.run([sys.executable, "-m", "fullchain.core.cli", "run", "--spec", str(spec_file)],
                           capture_output=True, text=True, env=env, cwd=other, check=True)
    assert "2 step(s) ran" in fresh.stderr
    ids_here = sorted(m["step_id"] for s in ("count", "square") for m in manifests(project / "artifacts", s))
    ids_there = sorted(m["step_id"] for s in ("count", "square") for m in manifests(other / "artifacts", s))
    assert ids_here == ids_there


def test_sigkill_mid_step_leaves_it_incomplete_and_rerun_redoes_only_it(project):
    command = [sys.executable, "-m", "fullchain.core.cli", "run", "--conf", str(CONF), "square.sleep_s=30"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    store = project / "artifacts"
    deadline = time.time() + 60
    while not list(store.glob("square/*/partial.txt")):
        assert time.time() < deadline and proc.poll() is None, "square never started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and the stage process, like an OOM kill
    proc.wait()
    (square_dir,) = [p for p in store.glob("square/*") if p.is_dir()]
    assert not (square_dir / "manifest.json").exists()
    _, steps = runner.plan(spec_for())
    status = {s.name: (s.status, s.reason) for s in steps}
    assert status["count"][0] == "cached"
    assert status["square"] == ("to-run", "incomplete artifact (an earlier attempt failed or was killed)")
    rerun = fullchain("run", "--conf", str(CONF))
    assert "1 step(s) ran, 1 reused" in rerun.stderr
    assert (square_dir / "manifest.json").is_file()


def test_failed_step_exits_nonzero_and_leaves_no_manifest(project):
    result = fullchain("run", "--conf", str(CONF), "square.fail=true", check=False)
    assert result.returncode == 1
    assert "stage 'square'" in result.stderr and "exited 1" in result.stderr
    assert "toy failure requested by config" in result.stderr  # the stage's own error, quoted
    assert manifests(project / "artifacts", "square") == []
    assert len(manifests(project / "artifacts", "count")) == 1


def test_selected_subgraph_and_missing_input(project):
    result = fullchain("run", "--conf", str(CONF), "stages=[square]", check=False)
    assert result.returncode == 2
    assert "stage 'count' is an input of the selected stages but its artifact is not in the store" in result.stderr
    fullchain("run", "--conf", str(CONF), "stages=[count]")
    assert manifests(project / "artifacts", "square") == []
    fullchain("run", "--conf", str(CONF), "stages=[square]")
    assert len(manifests(project / "artifacts", "square")) == 1


def test_corrupt_manifest_is_a_clear_error(project):
    fullchain("run", "--conf", str(CONF))
    (manifest,) = (project / "artifacts").glob("count/*/manifest.json")
    manifest.write_text("{not json")
    result = fullchain("plan", "--conf", str(CONF), check=False)
    assert result.returncode == 2
    assert f"corrupt manifest {manifest}" in result.stderr
    with pytest.raises(ArtifactError):
        runner.plan(spec_for())


def test_missing_environment_interpreter(project):
    result = fullchain("run", "--conf", str(CONF), "env.envs.current.python=/nonexistent/bin/python",
                       check=False)
    assert result.returncode == 2
    assert "environment 'current'" in result.stderr and "/nonexistent/bin/python" in result.stderr
    assert "fullchain env sync current" in result.stderr
    assert not (project / "artifacts" / "count").exists() or manifests(project / "artifacts", "count") == []


def test_unknown_key_fails_before_anything_runs(project):
    result = fullchain("run", "--conf", str(CONF), "+square.lrr=1", check=False)
    assert result.returncode == 2
    assert "square.lrr: unknown key for SquareConfig. Did you mean 'lr'?" in result.stderr
    assert not (project / "artifacts").exists()


def test_concurrent_runs_of_one_step_do_not_collide(project):
    command = [sys.executable, "-m", "fullchain.core.cli", "run", "--conf", str(CONF), "square.sleep_s=2"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stderr = "".join(o[1] for o in outs)
    assert stderr.count(" ran ") + stderr.count("reused") >= 4
    assert len([line for line in stderr.splitlines() if "square" in line and " ran " in line]) == 1
    assert len(manifests(project / "artifacts", "square")) == 1


def test_show_prints_lineage_back_to_the_corpus(project):
    fullchain("run", "--conf", str(CONF))
    (square,) = manifests(project / "artifacts", "square")
    out = fullchain("show", "--conf", str(CONF), square["step_id"][:8]).stdout
    assert f"step id    {square['step_id']}" in out
    assert "count " + square["inputs"]["counts"]["step_id"] in out
    assert f"<- corpus = {project / 'corpus.txt'}" in out
    by_dir = fullchain("show", str(project / "artifacts" / "square" / square["step_id"])).stdout
    assert by_dir.splitlines()[2:] == out.splitlines()[2:]


def test_plan_runs_nothing(project):
    out = fullchain("plan", "--conf", str(CONF)).stdout
    assert "count " in out and "to-run" in out and "never run" in out
    assert not (project / "artifacts").exists()


def test_planned_stage_without_run_is_refused(project):
    result = fullchain("run", "--conf", str(CONF), "stages=[count,square,later]", check=False)
    assert result.returncode == 2
    assert "'later' is a planned stage: toy_stages.later has its config schema but no run()" in result.stderr
    assert not (project / "artifacts").exists()  # refused before anything ran
