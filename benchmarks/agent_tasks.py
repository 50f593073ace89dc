"""The agent benchmark's throughput on a served model: tasks/s and per-task latency with tasks run
one at a time vs `agent.concurrency` at a time (the server batches concurrent requests).

Serves a deploy artifact on a free port (or uses --endpoint), then runs the agent stage's
`run()` on the same held-out tool-use tasks (function calling, with and without tools) at
concurrency 1 and N, alternating 1 N N 1, and prints tasks/s for each and the ratio.

    .venv/bin/python benchmarks/agent_tasks.py --deploy artifacts/deploy/<id> \\
        --tasks artifacts/data.chat/<id> [--count 6] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from fullchain.agent.config import AgentConfig
from fullchain.agent.stage import run
from fullchain.core import services
from fullchain.core.artifact import Artifact


def one_run(url: str, tasks: Path, count: int, concurrency: int) -> dict:
    cfg = AgentConfig(protocol="function_calling", endpoint=url, task_sets={"heldout": count},
                      concurrency=concurrency)
    with tempfile.TemporaryDirectory() as out:
        return run(cfg, {"tasks": Artifact.load(tasks)}, Path(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploy", help="deploy artifact directory (served here on a free port)")
    parser.add_argument("--endpoint", help="a running server's base URL instead")
    parser.add_argument("--tasks", required=True, help="chat_data artifact (its tool tasks)")
    parser.add_argument("--count", type=int, default=6, help="held-out tasks per run")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    running = None
    if args.endpoint:
        url = args.endpoint
    else:
        deploy = Path(args.deploy).resolve()
        running = services.start("deploy", deploy, Path(tempfile.mkdtemp()), dict(os.environ), port=0)
        url = running.url
    try:
        rates: dict[int, list[float]] = {1: [], args.concurrency: []}
        latency: dict[int, list[float]] = {1: [], args.concurrency: []}
        for level in (1, args.concurrency, args.concurrency, 1):
            metrics = one_run(url, Path(args.tasks).resolve(), args.count, level)
            rates[level].append(metrics["tasks_per_second"])
            latency[level].append(metrics["seconds_per_task"])
            print(f"concurrency {level}: {metrics['tasks_per_second']:.3f} tasks/s, "
                  f"{metrics['seconds_per_task']:.2f} s per task", flush=True)
    finally:
        if running is not None:
            services.stop(running)
    one, many = statistics.fmean(rates[1]), statistics.fmean(rates[args.concurrency])
    print(f"tasks/s: concurrency {args.concurrency} {many:.3f} vs 1 {one:.3f} -> ratio {many / one:.2f}x; "
          f"per-task latency {statistics.fmean(latency[args.concurrency]):.2f} s vs "
          f"{statistics.fmean(latency[1]):.2f} s (means of 2 runs each, {2 * args.count} task runs per run)")


if __name__ == "__main__":
    main()
