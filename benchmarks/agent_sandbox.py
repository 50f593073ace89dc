"""The Python tool's sandbox: cost per call vs a bare `subprocess.run([python, "-c", "pass"])`.

Both sides run the same trivial program, alternating in A B B A rounds in one process. The sandbox
side is `Sandbox.run("pass")` with its warm pool (one-shot workers started ahead, each already
isolated: network namespace, rlimits, uid 65534, Landlock), measured two ways:

- `paced`: a pause between calls (`--gap`, default 0.3 s, about one tiny-model reply on 2 cores)
  lets the replacement worker start in the background, as it does in an agent run, where a
  model reply always sits between two tool calls;
- `back-to-back`: no pause: each call also waits for its worker's start-up, so this is the
  whole cost of isolation (process start + isolation setup).

The CPU time of the whole process tree (children included) per call is printed beside the wall
time: the pool moves start-up off the call's path, it does not make it free.

    .venv/bin/python benchmarks/agent_sandbox.py [--calls 20] [--gap 0.3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from fullchain.agent.sandbox import Sandbox


def _cpu() -> float:
    own, children = os.times()[:2], os.times()[2:4]
    return sum(own) + sum(children)


def bare(gap: float) -> tuple[float, float]:
    time.sleep(gap)
    cpu, started = _cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started, _cpu() - cpu


def sandboxed(box: Sandbox, gap: float) -> tuple[float, float]:
    time.sleep(gap)
    cpu, started = _cpu(), time.perf_counter()
    result = box.run("pass")
    seconds = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"sandbox call failed: {result.error}")
    return seconds, _cpu() - cpu


def measure(calls: int, gap: float) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "sandbox": []}
    with Sandbox(pool_size=1) as box:
        box.run("pass")  # the first call starts the pool
        for i in range(calls):
            order = ("bare", "sandbox") if i % 2 == 0 else ("sandbox", "bare")  # A B B A
            for side in order:
                times[side].append(bare(gap) if side == "bare" else sandboxed(box, gap))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for label, gap in (("paced", args.gap), ("back-to-back", 0.0)):
        times = measure(args.calls, gap)
        wall = {k: statistics.median(t for t, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        print(f"{label:>12}: bare subprocess.run {wall['bare'] * 1e3:7.1f} ms wall "
              f"({cpu['bare'] * 1e3:5.1f} ms CPU) | sandbox {wall['sandbox'] * 1e3:7.1f} ms wall "
              f"({cpu['sandbox'] * 1e3:5.1f} ms CPU) | ratio sandbox/bare {wall['sandbox'] / wall['bare']:.2f}x "
              f"wall, {cpu['sandbox'] / max(cpu['bare'], 1e-9):.2f}x CPU  (medians of {args.calls})")


if __name__ == "__main__":
    main()
