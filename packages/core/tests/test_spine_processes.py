"""The runner owns its processes: killed or interrupted, it leaves none of its step running;
`force` recomputes from an empty directory; a corrupt manifest is fixed by what the error says.
Real runners, real stage processes, real signals (toy stages from tests/toy_stages)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fullchain.core import procs
from fullchain.core.launchers import cancel_slurm
from spine_testing import CONF, fullchain, wait_for

RUNNER = [sys.executable, "-m", "fullchain.core.cli", "run", "--conf", str(CONF)]


def start_runner(project: Path, *overrides: str) -> subprocess.Popen:
    log = project / f"runner-{time.time_ns()}.log"
    with open(log, "w") as handle:
        runner = subprocess.Popen([*RUNNER, *overrides], stdout=handle, stderr=handle,
                                  start_new_session=True)
    runner.log = log
    return runner


def runner_output(runner: subprocess.Popen) -> str:
    return runner.log.read_text()


def step_dirs(project: Path, stage: str) -> list[Path]:
    return [p for p in (project / "artifacts" / stage).glob("*") if p.is_dir()]


def square_dir(project: Path) -> Path:
    return wait_for(lambda: next((p for p in (project / "artifacts").glob("square/*")
                                  if p.is_dir()), None), 60, "the square step's directory")


def running_step(project: Path, runner: subprocess.Popen) -> tuple[Path, int, int]:
    """Wait until the square stage and its setsid grandchild run: (dir, worker pid, grandchild pid)."""
    out = square_dir(project)
    grandchild = int(wait_for(lambda: (out / "grandchild.pid").is_file()
                              and (out / "grandchild.pid").read_text(), 60, "the grandchild"))
    record = procs.read_pid_file(out / ".fullchain" / "pids.json")
    assert record["state"] == "running" and record["owner"]["pid"] == runner.pid
    assert procs.alive(record["pid"]) and procs.alive(grandchild)
    return out, record["pid"], grandchild


def assert_all_gone(out: Path, pids: list[int], within: float = 5.0) -> None:
    wait_for(lambda: not any(procs.alive(p) for p in pids), within,
             f"processes {pids} to exit")
    assert procs.find(procs.step_token(out)) == []


def square_runs(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("[fullchain] square") and " ran " in line)


def test_sigkill_of_the_runner_stops_the_step_and_its_setsid_grandchild(project):
    runner = start_runner(project, "square.sleep_s=60", "square.grandchild=true")
    out, worker, grandchild = running_step(project, runner)
    os.kill(runner.pid, signal.SIGKILL)  # nothing runs in the runner after this
    runner.wait()
    assert_all_gone(out, [worker, grandchild])
    assert "stopping this step's processes" in (out / "logs" / "stderr.log").read_text()
    assert not (out / "manifest.json").exists() and not (out / ".fullchain" / "result.json").exists()
    rerun = fullchain("run", "--conf", str(CONF))
    assert "1 step(s) ran, 1 reused" in rerun.stderr and square_runs(rerun.stderr) == 1
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_the_step_before_the_runner_exits(project, signum):
    runner = start_runner(project, "square.sleep_s=60", "square.grandchild=true")
    out, worker, grandchild = running_step(project, runner)
    os.kill(runner.pid, signum)
    assert runner.wait(timeout=45) == 128 + signum  # a bound, not a speed check (10 s grace + a loaded CI)
    # stopped before the runner exited, not some time after
    assert not procs.alive(worker) and not procs.alive(grandchild)
    assert procs.find(procs.step_token(out)) == []
    said = runner_output(runner)
    assert f"interrupted by {signal.Signals(signum).name}" in said and "left incomplete" in said
    assert "square" in said and "stopped" in said
    assert not (out / "manifest.json").exists() and not (out / ".fullchain" / "result.json").exists()
    assert procs.read_pid_file(out / ".fullchain" / "pids.json")["state"] == "ended"
    rerun = fullchain("run", "--conf", str(CONF))
    assert "1 step(s) ran, 1 reused" in rerun.stderr and square_runs(rerun.stderr) == 1


def test_a_new_run_stops_an_orphan_of_the_step_before_starting_it(project):
    runner = start_runner(project, "square.sleep_s=60", "square.grandchild=true")
    out, worker, grandchild = running_step(project, runner)
    # Runner and stage killed at once (an OOM kill): nobody is left to stop the grandchild.
    os.kill(worker, signal.SIGKILL)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(1.0)
    assert procs.alive(grandchild), "the setsid grandchild should have outlived both"
    rerun = fullchain("run", "--conf", str(CONF))
    assert (f"stopped 1 process(es) of an earlier run of this step that outlived their runner "
            f"(pids {grandchild})") in rerun.stderr
    assert not procs.alive(grandchild)
    assert "1 step(s) ran, 1 reused" in rerun.stderr and square_runs(rerun.stderr) == 1
    # never side by side: the orphan's last tick came before the new attempt started
    started = float((out / "partial.txt").read_text().split()[1])
    ticks = [float(t) for p, t in (line.split() for line in (out / "grandchild.log").read_text().splitlines())
             if int(p) == grandchild]
    assert ticks and max(ticks) < started


def test_a_process_the_stage_leaves_behind_is_stopped_when_it_exits(project):
    result = fullchain("run", "--conf", str(CONF), "square.grandchild=true")
    (out,) = step_dirs(project, "square")
    grandchild = int((out / "grandchild.pid").read_text())
    assert f"stopped 1 process(es) the stage left running (pids {grandchild})" in result.stderr
    assert not procs.alive(grandchild)
    assert (out / "manifest.json").is_file()


# --- SLURM: cancelled on SIGTERM, tested with stand-ins for sbatch/sacct/scancel on PATH --------

FAKE_SLURM = {
    "sbatch": 'echo "sbatch $*" >> "$FAKE_SLURM_LOG"; echo "Submitted batch job 4242"',
    "sacct": 'echo "JobID|State|NodeList"; echo "4242|RUNNING|node1"',
    "scancel": 'echo "scancel $*" >> "$FAKE_SLURM_LOG"',
    "srun": "exit 1",  # submitit only checks that it exists
}


def test_sigterm_cancels_the_slurm_job_the_runner_submitted(project, monkeypatch):
    bin_dir, calls = project / "fake-slurm", project / "slurm-calls.log"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(calls))
    runner = start_runner(project, "launcher=slurm", "launcher.poll_seconds=0.1", "stages=[count]")
    wait_for(lambda: "submitted SLURM job 4242" in runner_output(runner) or runner.poll(), 60,
             "the submission")
    assert runner.poll() is None, runner_output(runner)
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=45) == 128 + signal.SIGTERM
    assert "scancel 4242" in calls.read_text().splitlines()
    assert "cancelled SLURM job 4242 (scancel 4242)" in runner_output(runner)
    (out,) = step_dirs(project, "count")
    assert procs.read_pid_file(out / ".fullchain" / "pids.json")["slurm_job_id"] == "4242"


def test_cancel_slurm_runs_the_given_command_with_the_job_ids(tmp_path):
    record = tmp_path / "argv.json"
    recorder = (sys.executable, "-c",
                f"import json, sys; json.dump(sys.argv[1:], open({str(record)!r}, 'w'))")
    assert cancel_slurm(["77", "78"], command=recorder) == [*recorder, "77", "78"]
    assert json.loads(record.read_text()) == ["77", "78"]
    with pytest.raises(RuntimeError, match="exited 3"):
        cancel_slurm(["77"], command=(sys.executable, "-c", "raise SystemExit(3)"))


# --- force and partial state --------------------------------------------------------------------

def test_force_recomputes_in_an_empty_directory(project):
    fullchain("run", "--conf", str(CONF))
    (out,) = step_dirs(project, "square")
    before = json.loads((out / "manifest.json").read_text())
    (out / "checkpoint-from-before").write_text("a stage that resumes would find this")
    forced = fullchain("run", "--conf", str(CONF), "force=[square]")
    assert square_runs(forced.stderr) == 1
    assert not (out / "checkpoint-from-before").exists()
    after = json.loads((out / "manifest.json").read_text())
    assert after["step_id"] == before["step_id"] and after["started_at"] > before["ended_at"]
    assert sorted(p.name for p in out.parent.iterdir() if p.is_dir()) == [out.name]  # set-aside deleted


def test_failed_forced_run_puts_the_complete_artifact_back(project):
    fullchain("run", "--conf", str(CONF))
    (out,) = step_dirs(project, "square")
    before = (out / "manifest.json").read_text()
    failed = fullchain("run", "--conf", str(CONF), "force=[square]", "square.fail=true", check=False)
    assert failed.returncode == 1
    assert "toy failure requested by config" in failed.stderr
    assert f"the earlier complete artifact is back in place at {out}" in failed.stderr
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir() if p.is_dir()) == [out.name]
    (attempt,) = (project / "runs").glob(f"*/failed/square-{out.name}")
    assert "toy failure" in (attempt / "logs" / "stderr.log").read_text()
    assert "every step was reused" in fullchain("run", "--conf", str(CONF)).stderr


def test_killed_forced_run_loses_nothing_complete(project):
    fullchain("run", "--conf", str(CONF))
    (out,) = step_dirs(project, "square")
    before = (out / "manifest.json").read_text()
    runner = start_runner(project, "force=[square]", "square.sleep_s=60")
    wait_for(lambda: (out / "partial.txt").is_file() and list(out.parent.glob("*.old-*")), 60,
             "the forced attempt")
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    rerun = fullchain("run", "--conf", str(CONF))
    assert "restored the complete artifact set aside by an interrupted forced run" in rerun.stderr
    assert "0 step(s) ran" in rerun.stderr
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir() if p.is_dir()) == [out.name]


def test_incomplete_attempt_is_resumed_only_for_the_same_request(project):
    fullchain("run", "--conf", str(CONF), "square.fail=true", check=False)
    (out,) = step_dirs(project, "square")
    (out / "checkpoint").write_text("partial state")
    # fail is not hashed (same step id, same code, same inputs): resume, saying what changed
    resumed = fullchain("run", "--conf", str(CONF), "square.fail=true", "square.sleep_s=0.01",
                        check=False)
    assert f"resuming the incomplete attempt in {out} (changed fields that do not affect the " \
           "output: sleep_s)" in resumed.stderr
    assert (out / "checkpoint").is_file()
    # an attempt made by other code (its request says so) is not resumed
    request_file = out / ".fullchain" / "request.json"
    request = json.loads(request_file.read_text())
    request["code_version"] = "0" * 16
    request_file.write_text(json.dumps(request))
    clean = fullchain("run", "--conf", str(CONF))
    assert "starting clean: the incomplete directory was made by another request (different " \
           "code_version)" in clean.stderr
    assert not (out / "checkpoint").exists() and (out / "manifest.json").is_file()


def test_corrupt_manifest_is_fixed_by_the_command_the_error_suggests(project):
    fullchain("run", "--conf", str(CONF))
    (manifest,) = (project / "artifacts").glob("count/*/manifest.json")
    manifest.write_text(manifest.read_text()[:40])  # truncated
    for command in ("plan", "run"):
        result = fullchain(command, "--conf", str(CONF), check=False)
        assert result.returncode == 2 and f"corrupt manifest {manifest}" in result.stderr
        assert f"delete the directory {manifest.parent}, or run `fullchain run ... force=[count]`" \
            in result.stderr
    planned = fullchain("plan", "--conf", str(CONF), "force=[count]").stdout
    assert "manifest there is corrupt" in planned
    fixed = fullchain("run", "--conf", str(CONF), "force=[count]")
    assert "1 step(s) ran, 1 reused" in fixed.stderr
    assert json.loads(manifest.read_text())["stage"] == "count"


def test_stage_module_help_says_what_it_is(project):
    result = subprocess.run([sys.executable, "-m", "toy_stages.count", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "python -m toy_stages.count: the process of the 'count' stage" in result.stdout
    assert "fullchain run stages=[<node>], a graph node of stage 'count'" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "toy_stages.count", "nope.json"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no request file nope.json" in bad.stderr
    assert "Traceback" not in bad.stderr


# --- service primitives, on a real HTTP server ----------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_service_starts_answers_and_stops_by_token(tmp_path):
    port, pid_file = free_port(), tmp_path / "service.json"
    service = procs.start_service(http_server(port), dict(os.environ), tmp_path, tmp_path / "logs",
                                  token="svc-test-1", pid_file=pid_file)
    procs.wait_healthy(f"http://127.0.0.1:{port}/", timeout=20, service=service)
    assert procs.read_pid_file(pid_file)["pid"] == service.pid
    assert procs.find("svc-test-1") == [service.pid]
    assert procs.stop(service, grace=5) == [service.pid]
    assert not procs.alive(service.pid) and refuses(port) and not pid_file.exists()


def test_wait_healthy_fails_fast_when_the_service_dies(tmp_path):
    service = procs.start_service([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ),
                                  tmp_path, tmp_path / "logs", "svc-test-2", tmp_path / "svc.json")
    started = time.time()
    with pytest.raises(RuntimeError, match="service exited 3"):
        procs.wait_healthy(f"http://127.0.0.1:{free_port()}/", timeout=20, service=service)
    assert time.time() - started < 5
    with pytest.raises(TimeoutError):
        procs.wait_healthy(f"http://127.0.0.1:{free_port()}/", timeout=0.5)


OWNER = """
import os, sys, time
from fullchain.core import procs
service = procs.start_service(sys.argv[1:], dict(os.environ), ".", "logs", token=os.environ["TOKEN"],
                              pid_file="service.json", die_with_runner=os.environ["DIE"] == "1")
print(service.pid, flush=True)
time.sleep(600)
"""


def start_owner(tmp_path: Path, port: int, token: str, die: bool) -> tuple[subprocess.Popen, int]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, *http_server(port)], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, TOKEN=token, DIE="1" if die else "0"))
    server = int(owner.stdout.readline())
    procs.wait_healthy(f"http://127.0.0.1:{port}/", timeout=20)
    return owner, server


def test_clean_stale_stops_a_server_left_by_a_killed_runner(tmp_path):
    port = free_port()
    owner, server = start_owner(tmp_path, port, "svc-test-3", die=False)
    with pytest.raises(RuntimeError, match="owned by running process"):
        procs.clean_stale(tmp_path / "service.json")  # its runner lives: not ours to stop
    owner.kill()
    owner.wait()
    time.sleep(0.5)
    assert procs.alive(server) and not refuses(port)  # the stale server a later run finds
    assert procs.clean_stale(tmp_path / "service.json", grace=5) == [server]
    assert not procs.alive(server) and refuses(port)
    assert procs.clean_stale(tmp_path / "service.json") == []  # pid file gone: nothing to do


def test_service_dies_with_its_runner_by_default(tmp_path):
    port = free_port()
    owner, server = start_owner(tmp_path, port, "svc-test-4", die=True)
    owner.kill()
    owner.wait()
    wait_for(lambda: not procs.alive(server), 5, "the server to follow its runner")
    assert refuses(port)
