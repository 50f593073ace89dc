"""Service steps: the runner serves a `deployment` artifact for the steps that talk to it.

A role declared `Role("deployment", serve=True)` does not get a directory to read but a running
server: before the first step that needs it, the runner starts the deployment's serve command
(`{host}`/`{port}`/`{artifact}` filled in, on 127.0.0.1 and a free port unless the deployment
names one), waits until its health path answers, passes `http://HOST:PORT<api_base>` to the
step as `inputs[role].url`, and stops it after the last step of the run that needs it — also
when a step fails, on Ctrl-C or SIGTERM (the `finally` of the run), and when the runner is
killed outright (the kernel's parent-death signal, `procs.die_with_parent`). Every process of
the server carries its own token; a pid file `<deployment>/.fullchain/service-<runner pid>.json`
names it, and a later run stops whatever a dead runner left (`clean_stale`).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from fullchain.core import procs
from fullchain.core.contracts import read_deployment
from fullchain.core.worker import CONTROL_DIR

log = logging.getLogger("fullchain")

STALE_GRACE_SECONDS = 3.0
"""A server left by a dead runner gets this long after SIGTERM before SIGKILL."""


@dataclass
class Running:
    node: str
    url: str
    service: procs.Service
    started_s: float


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel has free now (bound and released; the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def clean_stale(artifact: Path) -> list[int]:
    """Stop servers of this deployment that a dead runner left (their pid files name them)."""
    stopped = []
    for pid_file in sorted((Path(artifact) / CONTROL_DIR).glob("service-*.json")):
        try:
            stopped += procs.clean_stale(pid_file, grace=STALE_GRACE_SECONDS)
        except RuntimeError:
            continue  # its runner is alive: another run's server, not ours to stop
    return stopped


def start(node: str, artifact: Path, log_dir: Path, env: dict[str, str],
          host: str | None = None, port: int | None = None) -> Running:
    """Start the deployment in `artifact` and wait until it is healthy. `host`/`port` override
    the deployment's (`fullchain serve`; port 0: a free one)."""
    deployment = read_deployment(artifact)
    stale = clean_stale(artifact)
    if stale:
        log.warning("%-9s stopped %d server process(es) a dead run left (pids %s)", node,
                    len(stale), " ".join(map(str, stale)))
    host = host or deployment.host
    port = (deployment.port if port is None else port) or free_port(host)
    argv = deployment.argv(host, port)
    token = procs.step_token(f"{artifact}#service#{os.getpid()}")
    pid_file = Path(artifact) / CONTROL_DIR / f"service-{os.getpid()}.json"
    started = time.time()
    service = procs.start_service(argv, {**env, **deployment.env}, cwd=artifact, log_dir=log_dir,
                                  token=token, pid_file=pid_file)
    root = f"http://{host}:{port}"
    try:
        procs.wait_healthy(root + deployment.health_path, deployment.startup_timeout_s, service)
    except BaseException:
        procs.stop(service)
        raise
    url = root + deployment.api_base
    log.info("%-9s serving %s (%s, pid %d, ready in %.1fs); logs: %s", node, url,
             deployment.engine, service.pid, time.time() - started, log_dir)
    return Running(node=node, url=url, service=service, started_s=time.time() - started)


def stop(running: Running) -> None:
    pids = procs.stop(running.service)
    log.info("%-9s server stopped (%d process(es))", running.node, len(pids) or 1)
