from dataclasses import dataclass

from fullchain.core.contracts import Stage


@dataclass
class ServeConfig:
    model_name: str = "toy"
    """What the toy server says it serves."""
    ignore_sigterm: bool = False
    """The server ignores SIGTERM (tests of stopping a server that will not go quietly)."""


STAGE = Stage(kind="serve", module="toy_stages.serve", config=ServeConfig,
              outputs={"deployment": "."})
