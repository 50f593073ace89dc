"""`launcher=slurm` against a real one-node SLURM cluster on this machine (tools/local_slurm.sh;
skipped with the reason where apt or root is missing). The toy stages for the runner's behaviour
(a job that cannot start, a failing job, SIGTERM, a sweep), the real data and pretrain stages
(experiment=tiny, made smaller) for what the issue asked of real steps."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fullchain.core import procs
from slurm_cluster_testing import REPO, slurm, slurm_cluster  # noqa: F401 (fixtures)
from spine_testing import CONF, fullchain, wait_for

pytestmark = pytest.mark.slurm

RUNNER = [sys.executable, "-m", "fullchain.core.cli", "run"]
# what changes between this 2-CPU, GPU-less node and the launcher's defaults (64 CPUs, 8 GPUs)
FITS = ["launcher=slurm", "launcher.slurm.cpus_per_task=1", "launcher.poll_seconds=2"]
# experiment=tiny, smaller: 12 stdlib files, a 1k vocabulary, one datatrove task per pipeline and
# 2 MinHash buckets (5 datatrove tasks in all, not 19) keep the data step short
TINY = ["experiment=tiny", "env=current", "data.sources=[{name: stdlib, format: stdlib, max_documents: 12}]",
        "tokenizer.vocab_size=1024", "++data.tasks=1", "++data.dedup.num_buckets=2"]


def start_runner(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    log = cwd / f"runner-{time.time_ns()}.log"
    with open(log, "w") as handle:
        runner = subprocess.Popen([*RUNNER, *args], stdout=handle, stderr=handle, cwd=cwd,
                                  env=env, start_new_session=True)
    runner.log = log
    return runner


def job_state(cluster, job_id: str) -> str:
    return cluster.run("squeue", "-h", "-j", job_id, "--states=all", "-o", "%T").stdout.strip()


def one_manifest(root: Path, stage: str) -> dict:
    (manifest,) = root.glob(f"{stage}/*/manifest.json")
    return json.loads(manifest.read_text())


# --- the real stages --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, slurm_cluster):
    root = tmp_path_factory.mktemp("slurm-tiny")
    env = slurm_cluster.env(FULLCHAIN_STORE=str(root / "artifacts"), FULLCHAIN_RUNS=str(root / "runs"),
                            FULLCHAIN_CACHE=str(root / "cache"))
    return root, env


def run_repo(env: dict, *overrides: str, check: bool = True, timeout: float = 600):
    result = subprocess.run([*RUNNER, *overrides], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"fullchain run {overrides} exited {result.returncode}\n"
                             f"{result.stderr[-5000:]}")
    return result


@pytest.mark.slow
def test_data_step_runs_as_a_slurm_job_with_its_logs_in_the_artifact(slurm, tiny_store):
    root, env = tiny_store
    result = run_repo(env, *TINY, "stages=[data]", "launcher=slurm",
                      "launcher.slurm.cpus_per_task=2", "launcher.poll_seconds=2")
    manifest = one_manifest(root / "artifacts", "data")
    job_id = manifest["launcher"]["slurm_job_id"]
    assert manifest["launcher"]["name"] == "slurm" and job_id.isdigit()
    assert f"submitted SLURM job {job_id}" in result.stderr
    out = root / "artifacts" / "data" / manifest["step_id"]
    assert procs.read_pid_file(out / ".fullchain" / "pids.json")["slurm_job_id"] == job_id
    # the stage's own output is in the artifact's logs/, as under the local launcher
    stderr = (out / "logs" / "stderr.log").read_text()
    assert "SLURM job of:" in stderr and "fullchain.data.stage: data:" in stderr
    assert (out / "logs" / "stdout.log").is_file()
    # no accounting storage here: submitit's sacct fallback warns at most once, not per poll
    assert result.stderr.count("sacct") <= 1, result.stderr
    # the runner goes on once the job's result file exists; the job ends a moment later
    wait_for(lambda: job_state(slurm, job_id) in ("COMPLETED", ""), 30, f"job {job_id} to complete")


@pytest.mark.slow
def test_two_rank_pretrain_runs_in_one_slurm_job(slurm, tiny_store):
    """experiment=tiny_tp2 under SLURM: torchrun with 2 ranks (TP=2) inside one job; the data
    step made by the test above is reused."""
    root, env = tiny_store
    result = run_repo(env, *TINY, "experiment=tiny_tp2", "launcher=slurm",
                      "launcher.nproc_per_node=2", "launcher.slurm.cpus_per_task=2",
                      "launcher.slurm.gpus_per_node=0", "launcher.poll_seconds=2",
                      "pretrain.schedule.train_iters=4", "pretrain.schedule.warmup_iters=1",
                      "pretrain.logging.log_interval=2", "pretrain.checkpoint.save_interval=4")
    manifest = one_manifest(root / "artifacts", "pretrain")
    assert manifest["launcher"]["distributed"] is True
    assert "--nproc_per_node=2" in manifest["launcher"]["command"]
    assert manifest["launcher"]["slurm_job_id"].isdigit()
    assert manifest["metrics"]["world_size"] == 2 and manifest["metrics"]["iteration"] == 4
    assert "data      " in result.stderr and "reused" in result.stderr
    stderr = (root / "artifacts" / "pretrain" / manifest["step_id"] / "logs" / "stderr.log").read_text()
    assert "iter 4/4 loss" in stderr


@pytest.mark.slow
def test_datatrove_slurm_executor_makes_the_same_bytes(slurm, tiny_store, tmp_path):
    """data.executor.kind=slurm: datatrove submits each pipeline as an array job (afterok chain)
    to the cluster; the packed corpus is byte for byte the one the local executor made."""
    pytest.importorskip("fullchain.data")
    root, env = tiny_store
    if not list((root / "artifacts").glob("data/*/manifest.json")):  # this test alone: make it
        run_repo(env, *TINY, "stages=[data]")
    local = one_manifest(root / "artifacts", "data")  # made by the first test of this module
    env = dict(env, FULLCHAIN_STORE=str(tmp_path / "artifacts"), FULLCHAIN_RUNS=str(tmp_path / "runs"),
               FULLCHAIN_CACHE=str(tmp_path / "cache"))
    before = set(slurm.run("squeue", "-h", "--states=all", "-o", "%j").stdout.split())
    run_repo(env, *TINY, "stages=[data]",
             "+data.executor={kind: slurm, poll_seconds: 1, slurm: {partition: local, cpus_per_task: 1, "
             f"venv_path: {Path(sys.executable).parent / 'activate'}}}}}")
    names = set(slurm.run("squeue", "-h", "--states=all", "-o", "%j").stdout.split()) - before
    assert {"fullchain-data-final"} <= names and len(names) >= 3, names
    made = one_manifest(tmp_path / "artifacts", "data")
    assert made["step_id"] == local["step_id"]  # the executor is not part of the step's id

    def packed(artifacts: Path) -> dict:
        base = artifacts / "data" / local["step_id"] / "packed"
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    assert packed(tmp_path / "artifacts") == packed(root / "artifacts")


# --- the runner's behaviour, on the toy stages -------------------------------------------------

def test_a_job_that_can_never_start_is_cancelled_with_slurms_reason(slurm, project):
    """The launcher's defaults ask for 64 CPUs: SLURM queues the job PENDING (PartitionConfig)
    on this node for ever; the runner says so, cancels it and exits 2."""
    result = fullchain("run", "--conf", str(CONF), "launcher=slurm", "launcher.poll_seconds=2",
                       "stages=[count]", check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "PENDING (PartitionConfig)" in result.stderr  # the progress line's state and reason
    assert "can never start" in result.stderr and "cpus_per_task=64" in result.stderr
    assert "2 CPUs" in result.stderr or "CPUs" in result.stderr
    assert "The job was cancelled" in result.stderr


def test_gpus_the_cluster_does_not_have_are_refused_with_sbatchs_message(slurm, project):
    result = fullchain("run", "--conf", str(CONF), *FITS, "launcher.distributed_stages=[count]",
                       "launcher.slurm.gpus_per_node=8", "stages=[count]", check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "sbatch refused the job" in result.stderr
    assert "Invalid generic resource" in result.stderr and "gpus_per_node=8" in result.stderr


def test_a_pending_job_shows_state_and_reason_then_runs(slurm, project):
    """The node is busy (a job holds both CPUs): the step's job pends on Resources, the runner
    says so, and it runs once the node is free."""
    blocker = slurm.run("sbatch", "--parsable", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 120")
    blocker_id = blocker.stdout.strip().split(";")[0]
    assert blocker.returncode == 0, blocker.stderr
    try:
        wait_for(lambda: job_state(slurm, blocker_id) == "RUNNING", 30, "the blocking job")
        runner = start_runner(project, "--conf", str(CONF), *FITS, "stages=[count]")
        wait_for(lambda: "PENDING (Resources)" in runner.log.read_text() or runner.poll() is not None,
                 30, "the pending state in the runner's output")
        assert runner.poll() is None, runner.log.read_text()
    finally:
        slurm.run("scancel", blocker_id)
    assert runner.wait(timeout=60) == 0, runner.log.read_text()
    assert " ran " in runner.log.read_text()


def test_a_failing_stage_is_reported_with_its_message_and_the_jobs_log(slurm, project):
    result = fullchain("run", "--conf", str(CONF), *FITS, "square.fail=true", check=False,
                       timeout=180)
    assert result.returncode == 1, result.stderr
    message = result.stderr[result.stderr.index("fullchain: step failed:"):]
    assert "stage 'square'" in message and "exited 1: RuntimeError: toy failure requested by config" in message
    job_log = message.split("the job's own log: ")[1].split()[0]
    assert job_log.endswith("_0_log.err") and Path(job_log).is_file()
    assert "SLURM job" in message and "logs/stderr.log" in message


def test_sigterm_of_the_runner_cancels_its_job(slurm, project):
    runner = start_runner(project, "--conf", str(CONF), *FITS, "stages=[count,square]",
                          "square.sleep_s=120", "square.grandchild=true")
    out = wait_for(lambda: next((p for p in (project / "artifacts").glob("square/*")
                                 if (p / "grandchild.pid").is_file()), None), 120,
                   "the square step's job to run")
    record = procs.read_pid_file(out / ".fullchain" / "pids.json")
    job_id = record["slurm_job_id"]
    assert job_state(slurm, job_id) == "RUNNING"
    grandchild = int((out / "grandchild.pid").read_text())
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=60) == 128 + signal.SIGTERM, runner.log.read_text()
    assert f"cancelled SLURM job {job_id} (scancel {job_id})" in runner.log.read_text()
    wait_for(lambda: slurm.queued() == [], 30, "squeue to be empty")
    assert job_state(slurm, job_id) == "CANCELLED"
    # the job's processes (here on this node) are gone with it, the setsid grandchild too
    wait_for(lambda: not procs.alive(grandchild), 15, "the job's grandchild to exit")
    assert procs.read_pid_file(out / ".fullchain" / "pids.json")["state"] == "ended"
    assert not (out / "manifest.json").exists()


def test_sweep_drivers_run_as_slurm_jobs_with_hydra_submitit(slurm, project):
    """hydra/launcher=submitit_slurm: each job of the sweep (its own driver) is a SLURM job,
    running its steps locally inside it; `count` runs once, `square` twice."""
    result = fullchain("run", "--conf", str(CONF), "-m", "square.lr=0.5,2.0",
                       "hydra/launcher=submitit_slurm", "hydra.launcher.partition=local",
                       "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5",
                       timeout=300)
    squares = sorted(json.loads(p.read_text())["config"]["lr"]
                     for p in (project / "artifacts").glob("square/*/manifest.json"))
    assert squares == [0.5, 2.0], result.stderr
    assert len(list((project / "artifacts").glob("count/*/manifest.json"))) == 1
    # one array job, a task per sweep job: .submitit/<array id>_<task>/
    tasks = sorted(p.name for p in (project / "runs" / "multirun").glob("*/.submitit/[0-9]*_*"))
    assert len(tasks) == 2 and all(t.replace("_", "").isdigit() for t in tasks), tasks
    for manifest in (project / "artifacts").glob("*/*/manifest.json"):
        assert json.loads(manifest.read_text())["launcher"]["name"] == "local"
    # Hydra's launcher polls through submitit's sacct, which has no accounting storage here:
    # its warning comes once (each through submitit's two handlers and Hydra's), not per poll
    calls = set(re.findall(r"Call #(\d+) - Bypassing sacct error", result.stdout + result.stderr))
    assert len(calls) <= 1, calls


def test_a_sweep_whose_slurm_jobs_fail_exits_non_zero(slurm, project):
    """The jobs run in other processes (SLURM array tasks): their failures reach the driver
    through the shared store, not through memory."""
    result = fullchain("run", "--conf", str(CONF), "-m", "square.lr=3.0,4.0", "square.fail=true",
                       "hydra/launcher=submitit_slurm", "hydra.launcher.partition=local",
                       "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5",
                       check=False, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "2 job(s) of the sweep failed" in result.stderr
    assert not list((project / "runs").glob(".sweep-failures-*"))
