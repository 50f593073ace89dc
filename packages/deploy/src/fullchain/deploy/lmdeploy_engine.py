"""The LMDeploy (GPU) side of the deploy step: the servable model (AWQ W4A16 through
`lmdeploy lite auto_awq`, or the HF weights as they are) and the chat template file its server
reads. Runs in the deploy environment that holds lmdeploy (its own: it pins torch<=2.12.1)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from fullchain.core.contracts import HFModel
from fullchain.deploy.config import DeployConfig
from fullchain.deploy.engines import MODEL_DIR
from fullchain.deploy.prepare import stage_model

log = logging.getLogger("fullchain.deploy")


def awq_command(source: Path, work_dir: Path, python: str = sys.executable,
                calib_samples: int = 128) -> list[str]:
    """`lmdeploy lite auto_awq` (W4A16, group size 128). Calibration reads `ptb` from the hub
    unless `calib_samples` is 0 (data-free; the only offline mode)."""
    return [python, "-m", "lmdeploy", "lite", "auto_awq", str(source), "--work-dir", str(work_dir),
            "--w-bits", "4", "--w-group-size", "128", "--calib-samples", str(calib_samples)]


def chat_template_config() -> dict:
    """LMDeploy's `--chat-template` JSON: ChatML roles, as our tokenizer's template renders them."""
    return {"model_name": "fullchain-chatml", "system": "<|im_start|>system\n",
            "meta_instruction": "", "eosys": "<|im_end|>\n", "user": "<|im_start|>user\n",
            "eoh": "<|im_end|>\n", "assistant": "<|im_start|>assistant\n", "eoa": "<|im_end|>",
            "separator": "\n", "stop_words": ["<|im_end|>", "<|endoftext|>"]}


def prepare_lmdeploy(cfg: DeployConfig, model: HFModel, out: Path) -> dict:
    changes = stage_model(model, out / MODEL_DIR)
    (out / "chat_template.json").write_text(json.dumps(chat_template_config(), indent=2))
    if cfg.quantization == "awq":
        full = out / MODEL_DIR
        quantized = out / "model-awq"
        log.info("quantizing to AWQ W4A16: %s", " ".join(awq_command(full, quantized, calib_samples=0)))
        subprocess.run(awq_command(full, quantized, calib_samples=0), check=True)
        # the served directory is the quantized one; the full-precision copy is the lineage link
        full.rename(out / "model-full")
        quantized.rename(full)
        changes["quantization"] = "awq-w4a16"
    return changes
