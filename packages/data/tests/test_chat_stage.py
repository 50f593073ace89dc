"""The conversation-data stage end to end in-process (`run` on a real tokenizer): the artifact's
two typed outputs read back through core's readers, determinism, the planted GSM8K question,
dedup, over-length records, weights, a preference set from the shared data, and the card."""
from __future__ import annotations

import json

import pytest
from chat_data_testing import GSM8K_LINE, chat_tokenizer, tool_conversation, write_lines  # noqa: F401 (fixture)
from fullchain.core.contracts import read_conversations, read_tool_tasks
from fullchain.core.schema import BenchmarkConfig
from fullchain.data.chat import run
from fullchain.data.chat.config import ChatDataConfig, ChatSourceConfig, ToolUseConfig
from fullchain.data.config import DecontaminationConfig

SMALL_TASKS = ToolUseConfig(train_tasks=60, heldout_tasks=20)


def build(tmp_path, chat_tokenizer, name="out", **overrides):
    cfg = ChatDataConfig(**{"tool_use": SMALL_TASKS, "seq_length": 1024, **overrides})
    out = tmp_path / name
    metrics = run(cfg, {"tokenizer": chat_tokenizer}, out)
    return out, metrics, json.loads((out / "chat_card.json").read_text())


def test_synthetic_set_reads_back_as_conversations_and_tool_tasks(tmp_path, chat_tokenizer):
    out, metrics, card = build(tmp_path, chat_tokenizer)
    conversations = read_conversations(out / "conversations")
    tasks = read_tool_tasks(out / "tasks")
    assert conversations.format == "messages"
    assert conversations.num_records == metrics["records"] == card["records"]
    assert sum(conversations.num_records[s] for s in ("train", "valid")) == 60
    assert conversations.num_records["heldout"] == 20 and tasks.num_tasks == {"train": 60, "heldout": 20}
    heldout = list(conversations.records("heldout"))
    assert [r["id"] for r in heldout] == [t["id"] for t in tasks.tasks("heldout")]
    for record, task in zip(heldout, tasks.tasks("heldout")):
        assert record["messages"][1]["content"] == task["question"]
        assert record["messages"][-1]["content"] == f"The answer is {task['answer']}."
    assert tasks.tools == [heldout[0]["tools"][0]] and tasks.tools[0]["function"]["name"] == "calculator"
    assert card["tool_use"]["heldout_unseen_wordings"] == 10
    assert card["sources"]["tool_use"]["splits"]["heldout"] == 20
    tokens = card["tokens"]["train"]
    assert tokens["records"] == conversations.num_records["train"] and 100 < tokens["p50"] <= tokens["max"] <= 1024
    assert "| tool_use | synthetic |" in (out / "chat_card.md").read_text()
    # the same config gives the same bytes
    again, _, _ = build(tmp_path, chat_tokenizer, name="again")
    for rel in ("conversations/train.jsonl", "conversations/valid.jsonl", "conversations/heldout.jsonl",
                "tasks/heldout.jsonl", "tasks/train.jsonl"):
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_lengths_are_those_of_the_chat_template_through_transformers(tmp_path, chat_tokenizer):
    from fullchain.data.chat.stage import Lengths
    from transformers import AutoTokenizer

    out, _, _ = build(tmp_path, chat_tokenizer, tool_use=ToolUseConfig(train_tasks=20, heldout_tasks=2))
    records = list(read_conversations(out / "conversations").records("train"))
    reference = AutoTokenizer.from_pretrained(str(chat_tokenizer))
    expected = [len(reference.apply_chat_template(r["messages"], tools=r["tools"], tokenize=True,
                                                  return_dict=True)["input_ids"]) for r in records]
    from fullchain.core.contracts import read_tokenizer

    tokenizer = read_tokenizer(chat_tokenizer)
    assert Lengths(tokenizer.path, tokenizer.chat_template).of(records) == expected


def test_a_planted_gsm8k_question_is_caught(tmp_path, chat_tokenizer, shared_data):
    gsm8k = shared_data / "gsm8k" / "test.jsonl"
    question = json.loads(gsm8k.read_text(encoding="utf-8").splitlines()[GSM8K_LINE - 1])["question"]
    sft = write_lines(tmp_path / "sft.jsonl", [
        {"instruction": "Tell me a fact about rivers.", "output": "Rivers carry sediment to the sea."},
        {"instruction": "Write a word problem.", "output": f"Here is one: {question}"},
        {"instruction": "Name a colour.", "output": "Blue."}])
    benchmarks = [BenchmarkConfig(name="gsm8k", path=str(gsm8k), text_fields=["question", "answer"])]
    sources = [ChatSourceConfig(name="sft", path=str(sft), format="alpaca")]
    out, metrics, card = build(tmp_path, chat_tokenizer, sources=sources, tool_use=None, valid_fraction=0.0,
                               decontamination=DecontaminationConfig(benchmarks=benchmarks))
    assert metrics["contaminated"] == 1 and card["sources"]["sft"]["contaminated"] == 1
    report = json.loads((out / "decontamination.json").read_text())
    assert report["benchmarks"]["gsm8k"]["documents_per_item"] == {f"test.jsonl:{GSM8K_LINE}": ["sft/sft.jsonl:2"]}
    kept = list(read_conversations(out / "conversations").records("train"))
    assert [r["id"] for r in kept] == ["sft/sft.jsonl:1", "sft/sft.jsonl:3"]
    # action: flag keeps it, marked
    out, _, _ = build(tmp_path, chat_tokenizer, name="flag", sources=sources, tool_use=None, valid_fraction=0.0,
                      decontamination=DecontaminationConfig(benchmarks=benchmarks, action="flag"))
    flagged = {r["id"]: r.get("contaminated") for r in read_conversations(out / "conversations").records("train")}
    assert flagged == {"sft/sft.jsonl:1": None, "sft/sft.jsonl:2": True, "sft/sft.jsonl:3": None}


def test_duplicates_over_length_records_and_weights_are_counted(tmp_path, chat_tokenizer):
    long_answer = " ".join(["The river carries sand and clay down to the sea."] * 80)
    records = [
        tool_conversation(),
        {"messages": [{"role": "user", "content": "what is 17 * 23?"}] + tool_conversation()["messages"][1:]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "Tell me about rivers."},
                      {"role": "assistant", "content": long_answer}]},
        {"messages": [{"role": "user", "content": "Tell me more."}, {"role": "assistant", "content": long_answer}]},
        {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]},
    ]
    path = write_lines(tmp_path / "chat.jsonl", records)
    sources = [ChatSourceConfig(name="chat", path=str(path), format="openai", weight=2.0)]
    out, metrics, card = build(tmp_path, chat_tokenizer, sources=sources, tool_use=None, valid_fraction=0.0,
                               seq_length=200)
    source = card["sources"]["chat"]
    assert source["deduplicated"] == 1  # record 2 differs from record 1 only in case
    assert source["truncated"] == 1 and source["dropped_over_length"] == 1
    assert source["kept"] == 3 and source["train_after_weight"] == 6
    assert metrics["records"]["train"] == card["records"]["train"] == 6 and card["tokens"]["train"]["records"] == 3
    train = list(read_conversations(out / "conversations").records("train"))
    cut = next(r for r in train if r["id"] == "chat/chat.jsonl:3")
    assert [m["content"] for m in cut["messages"]] == ["Hi", "Hello!"]
    assert card["tokens_before"]["train"]["over_seq_length"] == 2 and card["tokens"]["train"]["max"] <= 200
    out, _, card = build(tmp_path, chat_tokenizer, name="drop", sources=sources, tool_use=None,
                         valid_fraction=0.0, seq_length=200, over_length="drop")
    assert card["sources"]["chat"]["dropped_over_length"] == 2 and card["sources"]["chat"]["truncated"] == 0
    half = [ChatSourceConfig(name="chat", path=str(path), format="openai", weight=0.5, max_records=3)]
    _, _, card = build(tmp_path, chat_tokenizer, name="half", sources=half, tool_use=None, valid_fraction=0.0)
    assert card["sources"]["chat"]["read"] == 3 and card["sources"]["chat"]["kept"] == 2
    assert card["sources"]["chat"]["train_after_weight"] == 1


def test_a_preference_set_and_a_mixture_from_the_shared_data(tmp_path, chat_tokenizer, shared_data):
    dpo = [ChatSourceConfig(name="dpo_en", format="dpo_pairs", max_records=30,
                            path=str(shared_data / "llamafactory-dpo-demo" / "dpo_en_demo.json"))]
    out, metrics, card = build(tmp_path, chat_tokenizer, format="preference", sources=dpo, tool_use=None,
                               seq_length=16384)  # the 512-token vocabulary makes long pairs
    pairs = read_conversations(out / "conversations")
    assert pairs.format == "preference" and sum(pairs.num_records.values()) == 30
    assert not (out / "tasks").exists() and set(pairs.splits) == {"train", "valid"}
    first = next(pairs.records("train"))
    assert first["chosen"][0]["role"] == "assistant" and first["prompt"][-1]["role"] == "user"
    toolcall = shared_data / "llamafactory-toolcall-demo"
    mixture = [ChatSourceConfig(name="alpaca_zh", format="alpaca", max_records=40,
                                path=str(shared_data / "llamafactory-sft-demo" / "alpaca_zh_demo.json")),
               ChatSourceConfig(name="glaive", format="sharegpt", max_records=40,
                                path=str(toolcall / "glaive_toolcall_en_demo.json")),
               ChatSourceConfig(name="reason", format="openai", max_records=20,
                                path=str(toolcall / "reason_tool_use_demo_50.jsonl"))]
    out, metrics, card = build(tmp_path, chat_tokenizer, name="mix", sources=mixture)
    assert set(metrics["sources"]) == {"alpaca_zh", "glaive", "reason", "tool_use"}
    assert card["sources"]["reason"]["notes"]["reasoning_parts_dropped"] > 0
    train = list(read_conversations(out / "conversations").records("train"))
    assert {r["source"] for r in train} == {"alpaca_zh", "glaive", "reason", "tool_use"}
    assert any(m.get("tool_calls") for r in train if r["source"] == "glaive" for m in r["messages"])


def test_config_rules_name_the_field():
    with pytest.raises(ValueError, match=r"sources\[0\].format: 'dpo_pairs' gives preference records"):
        ChatDataConfig(sources=[ChatSourceConfig(name="d", path="x.json", format="dpo_pairs")])
    with pytest.raises(ValueError, match=r"tool_use: the synthetic task makes SFT conversations"):
        ChatDataConfig(format="preference", sources=[ChatSourceConfig(name="d", path="x.json", format="dpo_pairs")])
    with pytest.raises(ValueError, match=r"sources: names must be unique .* \['tool_use'\]"):
        ChatDataConfig(sources=[ChatSourceConfig(name="tool_use", path="x.json")])
    with pytest.raises(ValueError, match=r"heldout_wordings: 0 must be >= 1"):
        ToolUseConfig(heldout_wordings=0)
