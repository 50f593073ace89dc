from dataclasses import dataclass, field

from fullchain.core.contracts import Role, Stage


@dataclass
class SquareConfig:
    lr: float = 0.1
    """Scales the result (a stand-in for a downstream hyper-parameter)."""
    sleep_s: float = field(default=0.0, metadata={"hash": False})
    """Seconds to sleep half-way (lets tests kill the step mid-run)."""
    fail: bool = field(default=False, metadata={"hash": False})
    """Raise after writing a partial file (tests of failed steps)."""
    grandchild: bool = field(default=False, metadata={"hash": False})
    """Start a helper that leaves the session (setsid) and ticks into grandchild.log until
    killed (tests that a step's processes die with it)."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


STAGE = Stage(kind="square", module="toy_stages.square", config=SquareConfig,
              inputs={"counts": Role("word_counts")}, outputs={"number": "value.json"})
