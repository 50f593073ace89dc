"""Toy stage for spine tests: reads the count artifact, writes a derived number."""
import json
import time
from pathlib import Path

from toy_stages.square.config import SquareConfig

__all__ = ["run", "SquareConfig"]


def run(cfg: SquareConfig, inputs, out: Path) -> dict:
    counts = json.loads((inputs["count"].path / "counts.json").read_text())
    (out / "partial.txt").write_text("started\n")
    if cfg.sleep_s:
        time.sleep(cfg.sleep_s)
    if cfg.fail:
        raise RuntimeError("toy failure requested by config")
    value = cfg.lr * sum(v * v for v in counts.values())
    (out / "value.json").write_text(json.dumps({"value": value}))
    return {"value": value}
