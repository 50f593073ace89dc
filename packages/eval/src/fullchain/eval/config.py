"""Config schema of the eval stage (OpenCompass). The stage itself is planned (issue to come)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class BenchmarkConfig:
    name: str
    """OpenCompass dataset family, e.g. gsm8k, mmlu, ceval, cmmlu, arc, hellaswag."""
    path: str = field(metadata={"hash": "content"})
    """Local copy of the benchmark (../shared/data/...); hashed by content."""
    max_items: int | None = None
    """Evaluate only the first N items (None: all)."""
    mode: Literal["gen", "ppl"] = "gen"
    """Generation scoring or perplexity-ranked multiple choice."""


@dataclass
class EvalConfig:
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    """What to score the model on."""
    engine: Literal["hf", "api"] = "hf"
    """Score a HF checkpoint in-process, or a served model over its OpenAI API."""
    max_new_tokens: int = 256
    """Generation budget per item."""
    batch_size: int = field(default=8, metadata={"hash": False})
    """Items per forward pass."""
    debug: bool = field(default=True, metadata={"hash": False})
    """OpenCompass --debug: tasks in-process (8-28 s vs ~2.5 min per tiny run, FINDINGS.md)."""
