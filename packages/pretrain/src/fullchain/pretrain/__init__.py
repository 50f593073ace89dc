"""fullchain.pretrain: megatron-core GPT pretraining with TP/PP/DP, resumable dist checkpoints and
a Hugging Face export. Importing this package imports no torch; `run` loads it on call."""

from fullchain.pretrain.config import ParallelConfig, PretrainConfig
from fullchain.pretrain.model_config import ModelConfig


def run(cfg, inputs, out):
    """The stage entry point: see `fullchain.pretrain.stage.run`."""
    from fullchain.pretrain.stage import run as _run

    return _run(cfg, inputs, out)


__all__ = ["run", "PretrainConfig", "ParallelConfig", "ModelConfig"]
