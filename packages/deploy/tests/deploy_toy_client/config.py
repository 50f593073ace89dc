from dataclasses import dataclass

from fullchain.core.contracts import Role, Stage


@dataclass
class DeployClientConfig:
    fail: bool = False
    """Raise after one chat completion (the test of a failing dependent)."""


STAGE = Stage(kind="deploy_client", module="deploy_toy_client", config=DeployClientConfig,
              inputs={"endpoint": Role("deployment", serve=True)})
