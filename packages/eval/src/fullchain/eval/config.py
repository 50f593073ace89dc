"""Config schema of the eval stage (OpenCompass). The stage itself is planned (issue to come)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage
from fullchain.core.schema import BenchmarkConfig, check_benchmark_names


@dataclass
class EvalConfig:
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    """What to score the model on: the spec's `benchmarks` group, the same list the data stage
    decontaminates against."""
    max_items: int | None = None
    """Score only the first N items of each benchmark (None: all); decontamination still covers
    every item, so a subset scored is never a subset checked."""
    engine: Literal["hf", "api"] = "hf"
    """Score a HF checkpoint in-process, or a served model over its OpenAI API."""
    max_new_tokens: int = 256
    """Generation budget per item."""
    batch_size: int = field(default=8, metadata={"hash": False})
    """Items per forward pass."""
    debug: bool = field(default=True, metadata={"hash": False})
    """OpenCompass --debug: tasks in-process (8-28 s vs ~2.5 min per tiny run)."""

    def __post_init__(self) -> None:
        check_benchmark_names(self.benchmarks)
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items: {self.max_items} must be >= 1 or null")


# Eval scores several models in one run (the base and the tuned ones), optionally a served
# endpoint, and shows contamination from the corpus beside the scores.
STAGE = Stage(kind="eval", module="fullchain.eval", config=EvalConfig,
              inputs={"models": Role("hf_model", many=True, optional=True,
                                     doc="models to score side by side"),
                      "endpoint": Role("deployment", optional=True, serve=True,
                                       doc="a deployment the runner serves for the eval"),
                      "corpus": Role("tokenizer", optional=True,
                                     doc="the data artifact, for contamination beside scores")},
              outputs={"eval_results": "."})
