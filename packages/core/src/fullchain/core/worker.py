"""The stage side of the runner: `python -m fullchain.<stage> <request.json>`.

Runs inside the stage's own environment (and on every rank under torchrun): reads the request
the runner wrote, converts the config to the stage's dataclass, loads the input artifacts, calls
`run(cfg, inputs, out)`, and (rank 0 only) writes `result.json` with the metrics and this
environment's package versions. The runner writes `manifest.json` after that, last.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

from fullchain.core import procs
from fullchain.core.artifact import Artifact, payload_checksums, write_json_atomic
from fullchain.core.config import to_dataclass
from fullchain.core.contracts import validate_outputs
from fullchain.core.envs import describe_current

REQUEST = "request.json"
RESULT = "result.json"
CONTROL_DIR = ".fullchain"

PARENT_POLL_SECONDS = 1.0
"""How often the worker checks that the process that started it still runs."""

SHUTDOWN_GRACE_SECONDS = 5.0
"""The worker's grace for the step's other processes: under the runner's own 10 s, so the
worker is done before the runner SIGKILLs what is left."""


def _entry_module(stage: str | None) -> str:
    """The module run as `python -m <module>` (a toy stage in tests is not fullchain.<stage>)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return spec.name[: -len(".__main__")]
    return f"fullchain.{stage or '<stage>'}"


def _help(stage: str | None) -> str:
    entry = _entry_module(stage)
    try:
        summary = (importlib.import_module(entry).__doc__ or "").strip().splitlines()[0]
    except (ImportError, IndexError):
        summary = ""
    name = stage or entry.rsplit(".", 1)[-1]
    return (
        f"python -m {entry}: the process of the '{name}' stage"
        + (f" ({summary.rstrip('.')})" if summary else "") + ".\n\n"
        "It is started by `fullchain run`, not by hand: the runner writes the step's request\n"
        "(stage config, input artifacts, output directory), then starts, with the stage\n"
        "environment's interpreter (under torchrun for distributed stages, or in a SLURM job):\n\n"
        f"    python -m {entry} <artifact dir>/{CONTROL_DIR}/{REQUEST}\n\n"
        f"To run it: fullchain run stages=[<node>], a graph node of stage '{name}' "
        "(fullchain plan lists them)\n"
        f"To debug a failed step: python -m {entry} <its artifact dir>/{CONTROL_DIR}/{REQUEST}\n"
    )


def _own_step_processes() -> None:
    """When the runner goes (SIGTERM from it, or it died: the kernel's parent-death signal, or
    our parent pid changing), stop every other process of this step, then exit non-zero
    without a result, so the step is never recorded complete.

    Found by the step token, not by process group: torchrun ranks and library helpers start
    their own sessions. Our ancestors are spared: under torchrun the agent is one, and it
    stops its ranks itself."""
    token = os.environ.get(procs.TOKEN_VAR)
    if not token:
        return  # started by hand: there is no runner to outlive
    me, parent = os.getpid(), os.getppid()
    once = threading.Lock()

    def shutdown(why: str, code: int) -> None:
        if os.getpid() != me:  # a forked child (datatrove, multiprocessing) inherits the handler
            os._exit(code)
        if not once.acquire(blocking=False):
            return  # the other path (signal or watch) is already shutting down
        print(f"[fullchain worker] {why}: stopping this step's processes", file=sys.stderr,
              flush=True)
        procs.terminate(token, grace=SHUTDOWN_GRACE_SECONDS, exclude=procs.ancestors())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)  # no result.json, no atexit work that could outlive the runner

    signal.signal(signal.SIGTERM,
                  lambda signum, frame: shutdown("received SIGTERM", 128 + signal.SIGTERM))
    # Under torchrun our parent is the agent, which did not set this for us.
    procs.set_parent_death_signal(signal.SIGTERM)

    def watch_parent() -> None:
        # Backs up the death signal: it is lost if the parent died before it was set, and a
        # main thread busy in a long C call runs no Python signal handler until it returns.
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        shutdown(f"its parent process {parent} exited", 128 + signal.SIGTERM)

    threading.Thread(target=watch_parent, name="fullchain-parent-watch", daemon=True).start()


def load_input(value: str | dict) -> Artifact:
    """An input artifact; a started service comes as {"path", "url"}."""
    if isinstance(value, dict):
        return Artifact.load(value["path"], url=value.get("url"))
    return Artifact.load(value)


def main(stage: str | None = None, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(_help(stage))
        sys.exit(0)
    entry = _entry_module(stage)
    if len(argv) != 1:
        print(f"usage: python -m {entry} <artifact dir>/{CONTROL_DIR}/{REQUEST}\n"
              f"(started by `fullchain run`; --help says more)", file=sys.stderr)
        sys.exit(2)
    if not Path(argv[0]).is_file():
        print(f"python -m {entry}: no request file {argv[0]} (`fullchain run` writes it; "
              "--help says more)", file=sys.stderr)
        sys.exit(2)
    _own_step_processes()
    request = json.loads(Path(argv[0]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    # This is the process entry point, so logging is configured here (never at import): the
    # stage's log lines land in logs/stderr.log and feed the runner's progress line.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s")
    # torch.distributed repeats the same deprecation warning every step: show it once.
    warnings.filterwarnings("once", category=FutureWarning)
    module = importlib.import_module(request["module"])
    config_module, _, class_name = request["config_class"].partition(":")
    cls = getattr(importlib.import_module(config_module), class_name)
    try:
        cfg = to_dataclass(cls, request["config"], request["stage"])
        inputs = {role: [load_input(p) for p in value] if isinstance(value, list) else load_input(value)
                  for role, value in request["inputs"].items()}
        out = Path(request["out"])
        started = time.time()
        metrics = module.run(cfg, inputs, out)
        # Every declared output must read back through its type's reader before the step can
        # complete (rank 0 writes them; the other ranks have nothing more to check).
        contracts = (validate_outputs(out, request.get("outputs") or {})
                     if rank == 0 else {})
        # After the outputs validate, before the runner's manifest makes the step complete: a
        # sha256 per payload file, what `fullchain verify` compares a re-execution against.
        checksum_started = time.time()
        checksums = payload_checksums(out) if rank == 0 else {}
        checksum_seconds = time.time() - checksum_started
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)
    if metrics is not None and not isinstance(metrics, dict):
        sys.exit(f"{request['module']}.run returned {type(metrics).__name__}, expected a dict of metrics")
    if rank == 0:
        result = {"metrics": metrics or {}, "contracts": contracts, "environment": describe_current(),
                  "run_seconds": round(time.time() - started, 3),
                  "checksums": {"algorithm": "sha256", "files": checksums,
                                "seconds": round(checksum_seconds, 3)}}
        json.dumps(result)  # fail here, loudly, on non-JSON metrics
        write_json_atomic(out / CONTROL_DIR / RESULT, result)
