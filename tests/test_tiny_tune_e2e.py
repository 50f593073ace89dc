"""experiment=tiny_tune through the real CLI, on the tiny demo's store (data, chat_data and
pretrain reused from `tiny_run`): the tune step fine-tunes pretrain's HF export on chat_data's
synthetic tool-use conversations, records both as its lineage, and the tuned model emits a
parseable <tool_call> on held-out prompts more often than the model it started from."""
import json
import re

import pytest
from chain_testing import fullchain

pytestmark = pytest.mark.e2e

HELDOUT_PROMPTS = 16
TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def parseable_tool_calls(model_dir, prompts, tools) -> int:
    """How many greedy replies (48 new tokens) hold a <tool_call> whose body is JSON with a name
    and arguments."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    found = 0
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=48, do_sample=False)
        reply = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=False)
        for body in TOOL_CALL.findall(reply):
            try:
                call = json.loads(body)
            except json.JSONDecodeError:
                continue
            if isinstance(call, dict) and "name" in call and "arguments" in call:
                found += 1
                break
    return found


def test_tune_step_makes_the_tiny_model_call_tools(tiny_run):
    from fullchain.core.artifact import Artifact
    from fullchain.core.contracts import read_conversations, read_hf_model

    root, env, _ = tiny_run
    result = fullchain("run", "experiment=tiny_tune", "env=current", env=env)
    assert "1 step(s) ran, 3 reused" in result.stderr, result.stderr[-3000:]
    (tune,) = (root / "artifacts" / "tune").glob("*/manifest.json")
    (pretrain,) = (root / "artifacts" / "pretrain").glob("*/manifest.json")
    (chat,) = (root / "artifacts" / "data.chat").glob("*/manifest.json")
    manifest = json.loads(tune.read_text())
    assert manifest["inputs"]["model"]["step_id"] == json.loads(pretrain.read_text())["step_id"]
    assert manifest["inputs"]["conversations"]["step_id"] == json.loads(chat.read_text())["step_id"]
    metrics = manifest["metrics"]
    assert metrics["last_loss"] < metrics["first_loss"] and metrics["train_dropped"] == 0
    assert metrics["eval_loss"] < metrics["first_loss"]
    tuned = read_hf_model(Artifact.load(tune.parent))

    conversations = read_conversations(Artifact.load(chat.parent))
    prompts, tools = [], None
    for record in list(conversations.records("heldout"))[:HELDOUT_PROMPTS]:
        first_answer = next(i for i, m in enumerate(record["messages"]) if m["role"] == "assistant")
        prompts.append(record["messages"][:first_answer])
        tools = record.get("tools")
    before = parseable_tool_calls(pretrain.parent / "hf", prompts, tools)
    after = parseable_tool_calls(tuned.path, prompts, tools)
    assert after > before and after >= HELDOUT_PROMPTS // 2, (before, after)
