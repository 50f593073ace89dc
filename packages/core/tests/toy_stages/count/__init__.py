"""Toy stage for spine tests: count the words of a file."""
import collections
import json
from pathlib import Path

from toy_stages.count.config import CountConfig

__all__ = ["run", "CountConfig"]


def run(cfg: CountConfig, inputs, out: Path) -> dict:
    text = Path(cfg.corpus).read_text()
    if cfg.lowercase:
        text = text.lower()
    counts = collections.Counter(text.split())
    (out / "counts.json").write_text(json.dumps(counts, sort_keys=True))
    return {"words": sum(counts.values()), "distinct": len(counts)}
