"""Overhead of `launcher=slurm` against `launcher=local` on the same step: the tiny data step
(experiment=tiny stages=[data]), run alternately under each launcher in a fresh store, on a
one-node SLURM cluster on this machine (tools/local_slurm.sh; needs root). Same machine, same
spec, one process driving both. Reports the medians of `fullchain run` wall time, the ratio, and
where the SLURM seconds go (submission to the job's python starting; the job's end to the runner's).

    python benchmarks/slurm_overhead.py [--rounds N] [overrides...]
        # default overrides: experiment=tiny env=current stages=[data]
        # uses the cluster of $SLURM_CONF if set, else starts one and stops it afterwards
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "local_slurm.sh"
SLURM = ["launcher=slurm", "launcher.slurm.cpus_per_task=2", "launcher.poll_seconds=2"]


def run(overrides: list[str], env: dict) -> tuple[float, dict, Path]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(env, FULLCHAIN_STORE=f"{tmp}/artifacts", FULLCHAIN_RUNS=f"{tmp}/runs",
                   FULLCHAIN_CACHE=f"{tmp}/cache")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fullchain.core.cli", "run", *overrides], env=env,
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        (manifest_file,) = Path(tmp, "artifacts").glob("data/*/manifest.json")
        manifest = json.loads(manifest_file.read_text())
        return wall, manifest, _slurm_latency(manifest_file.parent, manifest)


def _slurm_latency(out: Path, manifest: dict) -> dict:
    """Seconds from the runner's submission to the job's python starting (scheduling, srun,
    interpreter start), and from the job's result file to the manifest."""
    job_id = manifest["launcher"].get("slurm_job_id")
    if not job_id:
        return {}
    header = (out / "logs" / "stderr.log").read_text().split("\n", 2)[1]
    submitted = datetime.fromisoformat(header.split()[1])
    job_log = (out / ".fullchain" / "slurm" / f"{job_id}_0_log.out").read_text()
    started = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\) - Starting", job_log).group(1)
    started = datetime.strptime(started, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=submitted.tzinfo)
    result = out / ".fullchain" / "slurm" / f"{job_id}_0_result.pkl"
    ended = datetime.fromisoformat(manifest["ended_at"])
    return {"submit_to_start": (started - submitted).total_seconds(),
            "result_to_manifest": ended.timestamp() - result.stat().st_mtime}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = args.overrides or ["experiment=tiny", "env=current", "stages=[data]"]
    started_here = None
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        done = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                              check=True)
        env["SLURM_CONF"] = done.stdout.strip().split("=", 1)[1]
        started_here = Path(env["SLURM_CONF"]).parent
    try:
        local, slurm, latency = [], [], []
        for _ in range(args.rounds):  # alternate, so a change in the machine's load hits both
            local.append(run([*overrides, "launcher=local"], env)[0])
            wall, manifest, lat = run([*overrides, *SLURM], env)
            slurm.append(wall)
            latency.append(lat)
    finally:
        if started_here is not None:
            subprocess.run(["bash", str(SCRIPT), "stop", str(started_here)], check=True,
                           capture_output=True)
    lo, sl = statistics.median(local), statistics.median(slurm)
    print(f"spec: {' '.join(overrides)}   ({args.rounds} rounds, medians; load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"launcher=local (baseline)  {lo:8.2f} s   runs: {' '.join(f'{x:.1f}' for x in local)}")
    print(f"launcher=slurm             {sl:8.2f} s   runs: {' '.join(f'{x:.1f}' for x in slurm)}")
    print(f"overhead                   {sl - lo:8.2f} s   ratio slurm/local = {sl / lo:.3f}")
    s2s = statistics.median(x["submit_to_start"] for x in latency)
    r2m = statistics.median(x["result_to_manifest"] for x in latency)
    print(f"  of which: submission -> job's python started {s2s:.2f} s (median); "
          f"job's result -> manifest {r2m:.2f} s")


if __name__ == "__main__":
    main()
