"""Test helper: run the pretrain stage once, as one rank of a torchrun world or as a plain process.

usage: _parallel_worker.py CONFIG_JSON DATA_DIR OUT_DIR [KILL_AT_ITERATION]
CONFIG_JSON is a PretrainConfig as JSON. Every rank writes OUT_DIR/result_rank{RANK}.json.
With KILL_AT_ITERATION the process SIGKILLs itself when the loop logs that iteration: a real
crash mid-run (after any checkpoint before it), not a simulated one.
"""

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


def main() -> None:
    from fullchain.core.artifact import Artifact
    from fullchain.pretrain import PretrainConfig, run

    config_json, data_dir, out_dir = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) > 4:
        logging.getLogger("fullchain.pretrain.train").addHandler(_KillAt(int(sys.argv[4])))
    cfg = PretrainConfig(**json.loads(Path(config_json).read_text()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = run(cfg, {"data": Artifact.load(data_dir)}, out)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"result_rank{rank}.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main()
