"""fullchain.tune: fine-tune a Hugging Face model on conversations (full SFT, LoRA, QLoRA, DPO)
with transformers, peft and trl; writes a merged `hf/` model that eval and deploy load."""
from fullchain.tune.config import TuneConfig


def run(cfg, inputs, out):
    """`fullchain.tune.stage.run` (imported on call: this package imports nothing heavy)."""
    from fullchain.tune.stage import run as _run

    return _run(cfg, inputs, out)


__all__ = ["TuneConfig", "run"]
