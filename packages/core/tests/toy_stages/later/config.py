from dataclasses import dataclass

from fullchain.core.contracts import Role, Stage


@dataclass
class LaterConfig:
    steps: int = 1
    """Anything: the stage is only planned."""


# Planned: it would read a number and many word counts (a many-role, for graph tests).
STAGE = Stage(kind="later", module="toy_stages.later", config=LaterConfig,
              inputs={"number": Role("number"), "counts": Role("word_counts", many=True, optional=True)})
