"""Toy stage for spine tests: reads the count artifact, writes a derived number."""
import json
import subprocess
import sys
import time
from pathlib import Path

from toy_stages.square.config import SquareConfig

__all__ = ["run", "SquareConfig"]


def run(cfg: SquareConfig, inputs, out: Path) -> dict:
    counts = json.loads((inputs["counts"].path / "counts.json").read_text())
    (out / "partial.txt").write_text(f"started {time.time()}\n")
    if cfg.grandchild:
        _start_grandchild(out)
    if cfg.sleep_s:
        time.sleep(cfg.sleep_s)
    if cfg.fail:
        raise RuntimeError("toy failure requested by config")
    value = cfg.lr * sum(v * v for v in counts.values())
    (out / "value.json").write_text(json.dumps({"value": value}))
    return {"value": value}


_TICK = """
import os, sys, time
with open(sys.argv[1], "a") as log:
    while True:
        log.write(f"{os.getpid()} {time.time()}\\n")
        log.flush()
        time.sleep(0.1)
"""


def _start_grandchild(out: Path) -> None:
    # its own session, like torchrun's ranks: a kill of the stage's process group misses it
    child = subprocess.Popen([sys.executable, "-c", _TICK, str(out / "grandchild.log")],
                             start_new_session=True)
    (out / "grandchild.pid").write_text(str(child.pid))
