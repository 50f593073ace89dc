"""Spine overhead: `fullchain plan` and a fully cached `fullchain run`, against the first
(uncached) run of the same spec — same machine, same spec, one process driving all three.

    python benchmarks/spine_cache.py [overrides...]      # default: experiment=tiny env=current
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fullchain.core.cli", *args], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    overrides = sys.argv[1:] or ["experiment=tiny", "env=current"]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, FULLCHAIN_STORE=f"{tmp}/artifacts", FULLCHAIN_RUNS=f"{tmp}/runs",
                   FULLCHAIN_CACHE=f"{tmp}/cache")
        plan_cold = timed(["plan", *overrides], env)
        first = timed(["run", *overrides], env)
        cached = min(timed(["run", *overrides], env) for _ in range(3))
        plan_warm = min(timed(["plan", *overrides], env) for _ in range(3))
    print(f"spec: {' '.join(overrides)}")
    print(f"first run (baseline)     {first:8.2f} s")
    print(f"fully cached run         {cached:8.2f} s   ratio cached/first = {cached / first:.3f}")
    print(f"plan (empty store)       {plan_cold:8.2f} s")
    print(f"plan (all cached)        {plan_warm:8.2f} s   ratio plan/first = {plan_warm / first:.3f}")


if __name__ == "__main__":
    main()
