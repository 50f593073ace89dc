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
import sys
import time
import traceback
import warnings
from pathlib import Path

from fullchain.core.artifact import Artifact, write_json_atomic
from fullchain.core.config import to_dataclass
from fullchain.core.envs import describe_current

REQUEST = "request.json"
RESULT = "result.json"
CONTROL_DIR = ".fullchain"


def main(stage: str | None = None, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit(f"usage: python -m fullchain.{stage or '<stage>'} <{CONTROL_DIR}/{REQUEST}>\n"
                 "(started by `fullchain run`; not meant to be called by hand)")
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
        inputs = {name: Artifact.load(path) for name, path in request["inputs"].items()}
        out = Path(request["out"])
        started = time.time()
        metrics = module.run(cfg, inputs, out)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)
    if metrics is not None and not isinstance(metrics, dict):
        sys.exit(f"{request['module']}.run returned {type(metrics).__name__}, expected a dict of metrics")
    if rank == 0:
        result = {"metrics": metrics or {}, "environment": describe_current(),
                  "run_seconds": round(time.time() - started, 3)}
        json.dumps(result)  # fail here, loudly, on non-JSON metrics
        write_json_atomic(out / CONTROL_DIR / RESULT, result)
