"""Service steps: the runner serves a deployment for the steps that talk to it, and no server
outlives the run — after success, after a failing dependent, on SIGTERM/SIGINT, and when the
runner is SIGKILLed (then the kernel's parent-death signal, or the next run, stops it).
The server is a real stdlib HTTP server on 127.0.0.1 (toy_stages/serve/server.py)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fullchain.core import procs
from spine_testing import CONF, fullchain, gone


def client_record(store: Path) -> dict:
    (record,) = store.glob("client/*/server.json")
    return json.loads(record.read_text())


def test_runner_serves_the_deployment_to_its_dependent_then_stops_it(project):
    result = fullchain("run", "--conf", str(CONF), "stages=[serve,client]")
    store = project / "artifacts"
    record = client_record(store)
    assert record["url"].startswith("http://127.0.0.1:") and record["url"].endswith("/v1")
    assert record["models"] == {"data": [{"id": "toy"}]}
    assert "serving http://127.0.0.1:" in result.stderr and "server stopped" in result.stderr
    assert gone(record["pid"], within=2), "the server outlived the run"
    (manifest,) = [json.loads(p.read_text()) for p in store.glob("client/*/manifest.json")]
    assert manifest["inputs"]["endpoint"]["node"] == "serve"
    (deploy,) = [p.parent for p in store.glob("serve/*/manifest.json")]
    assert json.loads((deploy / "manifest.json").read_text())["contracts"] == {
        "deployment": {"version": 1, "path": "."}}
    assert not list((deploy / ".fullchain").glob("service-*.json"))  # pid file removed
    # everything cached: nothing needs the service, nothing is started
    again = fullchain("run", "--conf", str(CONF), "stages=[serve,client]")
    assert "every step was reused" in again.stderr and "serving" not in again.stderr


def test_a_failing_dependent_still_stops_the_server(project):
    result = fullchain("run", "--conf", str(CONF), "stages=[serve,client]", "client.fail=true", check=False)
    assert result.returncode == 1 and "toy client failure requested by config" in result.stderr
    assert gone(client_record(project / "artifacts")["pid"], within=2)


def _start_runner_and_wait_for_the_server(project, *overrides):
    command = [sys.executable, "-m", "fullchain.core.cli", "run", "--conf", str(CONF),
               "stages=[serve,client]", "client.sleep_s=60", *overrides]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list((project / "artifacts").glob("client/*/server.json")):
        assert time.time() < deadline and runner.poll() is None, runner.communicate()[1]
        time.sleep(0.1)
    return runner, client_record(project / "artifacts")["pid"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupting_the_runner_stops_the_server(project, sig):
    runner, server = _start_runner_and_wait_for_the_server(project)
    runner.send_signal(sig)
    runner.wait(timeout=60)  # a bound, not a speed check
    assert runner.returncode != 0
    assert gone(server), "the server outlived its interrupted runner"


def test_a_killed_runner_leaves_no_server_and_the_next_run_cleans_a_stubborn_one(project):
    runner, server = _start_runner_and_wait_for_the_server(project)
    runner.kill()  # SIGKILL: no finally runs; the kernel's parent-death signal stops the server
    runner.wait()
    assert gone(server), "the server outlived its SIGKILLed runner"
    # a server that ignores SIGTERM survives its runner's death; the next run must stop it
    for path in (project / "artifacts").glob("client/*/server.json"):
        path.unlink()
    runner, stubborn = _start_runner_and_wait_for_the_server(project, "serve.ignore_sigterm=true")
    runner.kill()
    runner.wait()
    time.sleep(0.5)
    assert procs.alive(stubborn)
    (deploy,) = [p.parent for p in (project / "artifacts").glob("serve/*/manifest.json")
                 if json.loads(p.read_text())["config"]["ignore_sigterm"]]
    assert list((deploy / ".fullchain").glob("service-*.json")), "no pid file names the server"
    for path in (project / "artifacts").glob("client/*/server.json"):
        path.unlink()
    again = fullchain("run", "--conf", str(CONF), "stages=[serve,client]", "serve.ignore_sigterm=true")
    assert "stopped 1 server process(es) a dead run left" in again.stderr
    assert gone(stubborn, within=1)
    assert gone(client_record(project / "artifacts")["pid"], within=5)
