"""The tiny end-to-end run through the real CLI, as the README's demo does it: corpus (the
Python standard library) -> data -> pretrain, and the synthetic tool-use conversations
(chat_data) with the data step's tokenizer; then a second run that reuses every step."""
import json

import pytest
from chain_testing import fullchain

pytestmark = pytest.mark.e2e


def test_first_run_makes_every_artifact(tiny_run):
    root, _, first = tiny_run
    assert "3 step(s) ran, 0 reused" in first.stderr
    (data,) = (root / "artifacts" / "data").glob("*/manifest.json")
    (pretrain,) = (root / "artifacts" / "pretrain").glob("*/manifest.json")
    data_m, pre_m = json.loads(data.read_text()), json.loads(pretrain.read_text())
    assert pre_m["inputs"]["corpus"]["step_id"] == data_m["step_id"]
    assert pre_m["inputs"]["corpus"]["node"] == "data"
    assert set(pre_m["contracts"]) == {"megatron_checkpoint", "hf_model"}
    assert pre_m["placement"] == {"world_size": 1, "accelerator": "cpu", "device_count": 0,
                                  "transformer_engine": False}
    assert pre_m["config"]["precision"] == "fp32" and pre_m["config"]["transformer_impl"] == "local"
    assert (data.parent / "dataset.json").is_file() and (data.parent / "tokenizer").is_dir()
    assert (pretrain.parent / "hf" / "config.json").is_file()
    assert data_m["environment"]["packages"]["megatron-core"]


def test_second_run_reuses_everything_and_plan_agrees(tiny_run):
    root, env, _ = tiny_run
    again = fullchain("run", "experiment=tiny", "env=current", env=env)
    assert "0 step(s) ran, 3 reused — every step was reused" in again.stderr
    plan = fullchain("plan", "experiment=tiny", "env=current", env=env).stdout
    assert "0 to run, 3 cached" in plan


def test_show_traces_the_model_back_to_the_corpus(tiny_run):
    root, env, _ = tiny_run
    (pretrain,) = (root / "artifacts" / "pretrain").glob("*/manifest.json")
    out = fullchain("show", str(pretrain.parent), env=env).stdout
    assert out.splitlines()[1].startswith("stage      pretrain")
    assert "    data " in out  # the data step, one level down the lineage


def test_chat_data_makes_the_tool_use_conversations_and_tasks(tiny_run):
    from fullchain.core.artifact import Artifact
    from fullchain.core.contracts import read_conversations, read_tool_tasks

    root, _, _ = tiny_run
    (manifest,) = (root / "artifacts" / "data.chat").glob("*/manifest.json")
    (data,) = (root / "artifacts" / "data").glob("*/manifest.json")
    chat_m = json.loads(manifest.read_text())
    assert chat_m["node"] == "chat_data" and chat_m["stage"] == "data.chat"
    assert chat_m["inputs"]["tokenizer"]["step_id"] == json.loads(data.read_text())["step_id"]
    assert set(chat_m["contracts"]) == {"conversations", "tool_tasks"}
    artifact = Artifact.load(manifest.parent)
    conversations, tasks = read_conversations(artifact), read_tool_tasks(artifact)
    assert conversations.format == "messages"
    assert conversations.num_records["train"] + conversations.num_records["valid"] == 400
    assert conversations.num_records["heldout"] == 100 and tasks.num_tasks == {"train": 400, "heldout": 100}
    assert sum(not t["wording_seen"] for t in tasks.tasks("heldout")) == 50
    card = json.loads((manifest.parent / "chat_card.json").read_text())
    assert card["tokens"]["train"]["max"] <= card["seq_length"] and card["totals"]["dropped_over_length"] == 0
    assert chat_m["metrics"]["records"] == conversations.num_records
