"""fullchain.data: raw corpora -> cleaned, deduplicated, decontaminated, tokenized, packed data.

`run(cfg, inputs, out)` is the stage; `DataConfig` its config. Importing this module imports
only the stdlib config classes: datatrove, langid, tokenizers and friends load inside `run`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fullchain.data.config import DataConfig, SourceConfig

__all__ = ["DataConfig", "SourceConfig", "run"]


def run(cfg: DataConfig, inputs: dict, out: Path) -> dict[str, Any]:
    """Run the data stage into the artifact directory `out`; returns the metrics."""
    from fullchain.data.stage import run as run_stage

    return run_stage(cfg, inputs, out)
