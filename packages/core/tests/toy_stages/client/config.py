from dataclasses import dataclass, field

from fullchain.core.contracts import Role, Stage


@dataclass
class ClientConfig:
    sleep_s: float = field(default=0.0, metadata={"hash": False})
    """Seconds to wait after the first request (lets tests kill the runner meanwhile)."""
    fail: bool = field(default=False, metadata={"hash": False})
    """Raise after talking to the server (tests of a failing dependent)."""


STAGE = Stage(kind="client", module="toy_stages.client", config=ClientConfig,
              inputs={"endpoint": Role("deployment", serve=True)})
