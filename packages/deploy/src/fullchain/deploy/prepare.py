"""The model in the form the engine serves: a copy of the HF directory inside the deploy
artifact (hard links where the file system allows: an 8B model is not copied twice), with the
two things a chat server needs and an export may lack:

- a `response_template` in tokenizer_config.json, so the engine parses the model's Hermes
  `<tool_call>{json}</tool_call>` output into OpenAI `tool_calls`. transformers serve only has a
  built-in one for Qwen model types; our exports are Llama-shaped (raw text otherwise).
- `<|im_end|>` among generation_config's `eos_token_id`: the ChatML template ends every turn with
  it, while an export from pretraining stops only at `<|endoftext|>`, so a reply would run on to
  `max_tokens`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fullchain.core.contracts import HFModel

END_OF_TURN = "<|im_end|>"

# The response grammar of our ChatML + Hermes tool-call template (data's CHATML_TOOLS_TEMPLATE):
# free text, then zero or more `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
# up to `<|im_end|>`. The same format as transformers' built-in Qwen2 template.
HERMES_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            # \s* swallows the newline between content and a call, or between two calls
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {
            "close_pattern": r"\s*(?:<\|im_end\|>|<\|endoftext\|>)",
            "content": "text",
        },
    },
}


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)
    return dst


def _rewrite_json(path: Path, update) -> dict:
    """Replace `path` by a new file (never write through a hard link into the source model)."""
    doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    doc = update(doc)
    path.unlink(missing_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


def stage_model(model: HFModel, target: Path) -> dict:
    """Put the servable copy of `model` at `target`; returns what was changed (for metrics)."""
    if target.exists():
        shutil.rmtree(target)  # an interrupted attempt: start over, the source is unchanged
    shutil.copytree(model.path, target, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(".fullchain", "logs", "manifest.json"))
    changes = {}

    def with_template(doc: dict) -> dict:
        if "response_template" not in doc:
            doc["response_template"] = HERMES_RESPONSE_TEMPLATE
            changes["response_template"] = "hermes"
        return doc

    _rewrite_json(target / "tokenizer_config.json", with_template)
    end_of_turn = _token_id(target, END_OF_TURN)

    def with_end_of_turn(doc: dict) -> dict:
        eos = doc.get("eos_token_id")
        eos = [] if eos is None else (list(eos) if isinstance(eos, list) else [eos])
        if end_of_turn is not None and end_of_turn not in eos:
            eos.append(end_of_turn)
            changes["eos_token_id"] = eos
        doc["eos_token_id"] = eos
        return doc

    _rewrite_json(target / "generation_config.json", with_end_of_turn)
    return changes


def _token_id(model_dir: Path, token: str) -> int | None:
    """The id of an added special token, read from tokenizer.json (no tokenizer library)."""
    file = model_dir / "tokenizer.json"
    if not file.is_file():
        return None
    doc = json.loads(file.read_text(encoding="utf-8"))
    for added in doc.get("added_tokens") or []:
        if added.get("content") == token:
            return int(added["id"])
    return (doc.get("model") or {}).get("vocab", {}).get(token)
