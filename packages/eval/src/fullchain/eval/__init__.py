"""fullchain.eval: score HF models and served endpoints with OpenCompass over local benchmarks,
held-out perplexity and the synthetic tool-use task. Imports nothing heavy: the config, result
readers and `compare` work in the main environment, without OpenCompass."""
from fullchain.eval.config import EvalConfig


def run(cfg, inputs, out):
    """`fullchain.eval.stage.run` (imported on call; it needs the eval environment)."""
    from fullchain.eval.stage import run as _run

    return _run(cfg, inputs, out)


__all__ = ["EvalConfig", "run"]
