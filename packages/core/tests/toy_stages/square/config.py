from dataclasses import dataclass, field


@dataclass
class SquareConfig:
    lr: float = 0.1
    """Scales the result (a stand-in for a downstream hyper-parameter)."""
    sleep_s: float = field(default=0.0, metadata={"hash": False})
    """Seconds to sleep half-way (lets tests kill the step mid-run)."""
    fail: bool = field(default=False, metadata={"hash": False})
    """Raise after writing a partial file (tests of failed steps)."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
