"""Test helper: run the pretrain stage as one rank of a torchrun world or as a plain process.

    _parallel_worker.py CONFIG_JSON DATA_DIR OUT_DIR [KILL_AT_ITERATION]
        one stage run; every rank writes OUT_DIR/result_rank{RANK}.json. With KILL_AT_ITERATION
        the process SIGKILLs itself when the loop logs that iteration: a real crash mid-run
        (after any checkpoint before it), not a simulated one.
    _parallel_worker.py --plan PLAN_JSON
        several jobs in ONE launch (each torchrun launch costs ~15 s of imports on every rank):
        PLAN_JSON is a list of {"call": "module:function", "args": [...]}, run in order in one
        process group; `module` is found next to this file (the test modules).
"""

import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path


class _KillAt(logging.Handler):
    def __init__(self, iteration: int) -> None:
        super().__init__()
        self.marker = f"iter {iteration}/"

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.marker):
            os.kill(os.getpid(), signal.SIGKILL)


def run_stage(config_json: str, data_dir: str, out_dir: str) -> None:
    """One stage run; every rank writes OUT_DIR/result_rank{RANK}.json."""
    from fullchain.core.artifact import Artifact
    from fullchain.core.config import to_dataclass
    from fullchain.pretrain import PretrainConfig, run

    cfg = to_dataclass(PretrainConfig, json.loads(Path(config_json).read_text()), "pretrain")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = run(cfg, {"corpus": Artifact.load(data_dir)}, out)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"result_rank{rank}.json").write_text(json.dumps(metrics))


def run_plan(plan_json: str) -> None:
    import torch.distributed as dist

    # One process group for every job: the stage and the test helpers reuse an existing one
    # (distributed.initialize) and leave it alive (distributed.destroy tears down only its own).
    dist.init_process_group("gloo")
    try:
        for job in json.loads(Path(plan_json).read_text()):
            module, function = job["call"].split(":")
            logging.getLogger(__name__).info("job %s", job["call"])
            getattr(importlib.import_module(module), function)(*job["args"])
    finally:
        dist.destroy_process_group()


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    if sys.argv[1] == "--plan":
        run_plan(sys.argv[2])
        return
    config_json, data_dir, out_dir = sys.argv[1:4]
    if len(sys.argv) > 4:
        logging.getLogger("fullchain.pretrain.train").addHandler(_KillAt(int(sys.argv[4])))
    run_stage(config_json, data_dir, out_dir)


if __name__ == "__main__":
    main()
