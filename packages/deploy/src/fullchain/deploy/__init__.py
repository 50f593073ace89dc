"""fullchain.deploy: a HF model -> a deployment (an OpenAI-compatible server the chain can
start): transformers' server with limits and an API key on CPU, LMDeploy on NVIDIA GPUs."""
from fullchain.deploy.config import DeployConfig


def run(cfg, inputs, out):
    from fullchain.deploy.stage import run as _run

    return _run(cfg, inputs, out)


__all__ = ["DeployConfig", "run"]
