from dataclasses import dataclass


@dataclass
class LaterConfig:
    steps: int = 1
    """Anything: the stage is only planned."""
