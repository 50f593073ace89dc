"""Toy service stage: writes a deployment whose serve command is a stdlib HTTP server (a stand-in
for a model server, for the runner's service-step tests only)."""
import sys
from pathlib import Path

from fullchain.core.contracts import Deployment, write_deployment

from toy_stages.serve.config import ServeConfig

__all__ = ["run", "ServeConfig"]


def run(cfg: ServeConfig, inputs, out: Path) -> dict:
    command = [sys.executable, "-m", "toy_stages.serve.server", "--host", "{host}", "--port", "{port}",
               "--model", cfg.model_name] + (["--ignore-sigterm"] if cfg.ignore_sigterm else [])
    write_deployment(out, Deployment(engine="toy-http", model_name=cfg.model_name, command=command,
                                     startup_timeout_s=30))
    return {"engine": "toy-http"}
