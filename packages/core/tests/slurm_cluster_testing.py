"""A real one-node SLURM cluster for the tests marked `slurm` (tools/local_slurm.sh).

`slurm_cluster` (session): installs slurm/munge with apt when absent, starts munged, slurmctld and
slurmd with their config in a temporary directory, and stops them at the end of the session (by
pid; nothing left). Skipped, with the reason, where that cannot work: not root, no apt-get, apt
cannot reach its mirror. A cluster that installs but does not come up is a failure, not a skip.

`slurm` (per test): SLURM_CONF points at that cluster for the test (and the runners it starts);
after the test, no job of it may still be queued (any is cancelled, then the test fails).

A uniquely named module (several packages' test folders are collected in one pytest run); the test
modules import the fixtures from here. The cluster is one per process, whichever module asks first.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tools" / "local_slurm.sh"
START_TIMEOUT_S = 600  # apt on a fresh machine (~15 s here), then the daemons (~1 s)


@dataclass
class Cluster:
    dir: Path
    conf: Path
    start_seconds: float

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=self.env())

    def queued(self) -> list[str]:
        """Job ids the controller still has queued or running (`squeue`)."""
        out = self.run("squeue", "-h", "-o", "%i").stdout
        return out.split()

    def stop(self) -> None:
        done = subprocess.run(["bash", str(SCRIPT), "stop", str(self.dir)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"local_slurm.sh stop failed:\n{done.stderr}"


_cluster: Cluster | None = None
_skip: str | None = None


def start_cluster(where: Path) -> Cluster:
    """Start the cluster (once per process); pytest.skip with the script's reason where it
    cannot run here."""
    global _cluster, _skip
    if _cluster is not None:
        return _cluster
    if _skip is not None:
        pytest.skip(_skip)
    if os.geteuid() != 0:
        _skip = "a local SLURM cluster needs root (apt-get, daemons running as SlurmUser=root)"
        pytest.skip(_skip)
    if not (shutil.which("sbatch") or shutil.which("apt-get")):
        _skip = "slurm is not installed and there is no apt-get to install it"
        pytest.skip(_skip)
    started = time.time()
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start", str(where)], capture_output=True,
                              text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPT), "stop", str(where)], capture_output=True, timeout=120)
        _skip = f"tools/local_slurm.sh start took over {START_TIMEOUT_S}s (apt unreachable?)"
        pytest.skip(_skip)
    if done.returncode == 3:  # cannot install or run here: the script says why
        _skip = "local SLURM cluster unavailable: " + done.stderr.strip().splitlines()[-1]
        pytest.skip(_skip)
    if done.returncode != 0:
        pytest.fail(f"tools/local_slurm.sh start exited {done.returncode}:\n{done.stderr}")
    _cluster = Cluster(where, where / "slurm.conf", time.time() - started)
    return _cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    global _cluster
    if _cluster is not None:
        _cluster = None
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    yield slurm_cluster
    # a finished step's job may be COMPLETING for a moment after its runner saw the result
    deadline = time.time() + 15
    while (left := slurm_cluster.queued()) and time.time() < deadline:
        time.sleep(0.2)
    if left:
        slurm_cluster.run("scancel", *left)
        pytest.fail(f"the test left SLURM job(s) {' '.join(left)} queued (now cancelled)")


