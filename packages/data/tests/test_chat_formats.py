"""Every chat format read from the real files in ../shared/data into the canonical schema,
checked field by field on a few records; every bad record names file:line and the field."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from chat_data_testing import chat_tokenizer, tool_conversation, write_array, write_lines  # noqa: F401 (fixture)
from fullchain.core.contracts import (
    ContractError,
    check_conversation,
    read_conversations,
    write_conversations,
)
from fullchain.data.chat.config import ChatSourceConfig
from fullchain.data.chat.formats import ChatRecordError
from fullchain.data.chat.stage import read_source


def read(name, path, fmt, on_error="raise", max_records=None):
    stats = {"read": 0, "skipped": Counter(), "notes": Counter()}
    source = ChatSourceConfig(name=name, path=str(path), format=fmt, max_records=max_records)
    return read_source(source, on_error, stats), stats


def line_of(path, line: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[line - 1]


def test_alpaca_records_from_the_sft_demo(shared_data):
    file = shared_data / "llamafactory-sft-demo" / "alpaca_en_demo.json"
    records, stats = read("alpaca_en", file, "alpaca", max_records=40)
    raw = json.loads(file.read_text(encoding="utf-8"))[:40]
    assert stats["read"] == len(records) == 40
    assert records[0]["messages"] == [{"role": "user", "content": "Describe a process of making crepes."},
                                      {"role": "assistant", "content": raw[0]["output"]}]
    with_input = next(i for i, r in enumerate(raw) if r["input"])
    assert records[with_input]["messages"][0]["content"] == f"{raw[with_input]['instruction']}\n\n{raw[with_input]['input']}"
    # the id names the line where the record starts in the file
    first_line = int(records[1]["id"].rsplit(":", 1)[1])
    assert records[1]["id"].startswith("alpaca_en/alpaca_en_demo.json:")
    assert line_of(file, first_line).strip() == "{"
    assert json.dumps(raw[1]["instruction"], ensure_ascii=False)[:30] in line_of(file, first_line + 1)


def test_sharegpt_tool_calls_from_the_glaive_demo(shared_data):
    file = shared_data / "llamafactory-toolcall-demo" / "glaive_toolcall_en_demo.json"
    records, _ = read("glaive", file, "sharegpt", max_records=30)
    first = records[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant", "tool",
                                                       "assistant", "user", "assistant"]
    assert first["messages"][3] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "search_recipes",
                                          "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}}]}
    assert first["messages"][4]["content"].startswith('{"recipes": [{"name": "Chicken and Bell Pepper')
    assert first["tools"][0]["type"] == "function"
    assert first["tools"][0]["function"]["name"] == "search_recipes"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["ingredients"]
    for record in records:  # core's canonical check accepts every record
        check_conversation(record, "messages", record["id"])


def test_openai_messages_with_typed_parts_from_the_reasoning_demo(shared_data):
    file = shared_data / "llamafactory-toolcall-demo" / "reason_tool_use_demo_50.jsonl"
    records, stats = read("reason", file, "openai")
    assert len(records) == 50 and stats["notes"]["reasoning_parts_dropped"] > 0
    record = next(r for r in records if "Inception" in r["messages"][1]["content"])
    assert record["id"] == f"reason/reason_tool_use_demo_50.jsonl:{_line_with(file, 'Inception')}"
    assert record["messages"][0]["role"] == "system"
    call = next(m for m in record["messages"] if m.get("tool_calls"))
    assert call["tool_calls"] == [{"type": "function", "function": {"name": "get_movie_details",
                                                                    "arguments": {"title": "Inception"}}}]
    result = record["messages"][record["messages"].index(call) + 1]
    assert result["role"] == "tool" and '"director": "Christopher Nolan"' in result["content"]
    assert record["tools"][0]["function"]["name"] == "get_movie_details"
    assert not any("reasoning" in json.dumps(m) and m["role"] == "assistant" and "Alright," in (m["content"] or "")
                   for m in record["messages"])  # the reasoning text itself is gone


def _line_with(file, text: str) -> int:
    return next(i for i, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1) if text in line)


def test_dpo_pairs_from_the_dpo_demo(shared_data, tmp_path):
    file = shared_data / "llamafactory-dpo-demo" / "dpo_en_demo.json"
    records, _ = read("dpo_en", file, "dpo_pairs", max_records=120)
    raw = json.loads(file.read_text(encoding="utf-8"))[:120]
    assert records[0]["prompt"] == [{"role": "user", "content": raw[0]["conversations"][0]["value"]}]
    assert records[0]["chosen"] == [{"role": "assistant", "content": raw[0]["chosen"]["value"]}]
    assert records[0]["rejected"] == [{"role": "assistant", "content": raw[0]["rejected"]["value"]}]
    with_system = next(i for i, r in enumerate(raw) if r["conversations"][0]["from"] == "system")
    assert [m["role"] for m in records[with_system]["prompt"]] == ["system", "user"]
    multi = next(i for i, r in enumerate(raw) if len(r["conversations"]) == 5)
    assert [m["role"] for m in records[multi]["prompt"]] == ["user", "assistant", "user", "assistant", "user"]
    write_conversations(tmp_path, "preference", {"train": records})
    assert read_conversations(tmp_path).num_records == {"train": 120}


def test_canonical_records_render_with_the_chat_template(shared_data, chat_tokenizer):
    from fullchain.core.contracts import read_tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(chat_tokenizer))
    template = read_tokenizer(chat_tokenizer).chat_template
    glaive, _ = read("glaive", shared_data / "llamafactory-toolcall-demo" / "glaive_toolcall_en_demo.json",
                     "sharegpt", max_records=1)
    text = tokenizer.apply_chat_template(glaive[0]["messages"], tools=glaive[0]["tools"],
                                         chat_template=template, tokenize=False)
    assert ('<tool_call>\n{"name": "search_recipes", "arguments": {"ingredients": ["chicken", '
            '"bell peppers", "rice"]}}\n</tool_call>') in text
    assert '<tools>\n{"type": "function", "function": {"name": "search_recipes"' in text
    assert '<tool_response>\n{"recipes"' in text


BAD = [
    ("alpaca", {"instruction": "Say hi."}, "output: missing"),
    ("alpaca", {"instruction": "Say hi.", "output": 3}, "output: expected a string, got int"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}]}, "conversations: no assistant turn"),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
     "conversations[0].from: unknown role 'robot'"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "17*23?"},
                                    {"from": "function_call", "value": '{"name": "calc", "arguments": "{17*23"}'},
                                    {"from": "observation", "value": "391"}, {"from": "gpt", "value": "391"}]},
     "conversations[1].value.arguments: not valid JSON"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "17*23?"},
                                    {"from": "function_call", "value": "calc(17*23)"},
                                    {"from": "observation", "value": "391"}, {"from": "gpt", "value": "391"}]},
     "conversations[1].value: not valid JSON"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
                  "tools": "[{\"name\": \"calc\""}, "tools: not valid JSON"),
    ("openai", {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]},
     "messages[1].role: unknown role 'bot'"),
    ("openai", {"messages": [{"role": "user", "content": "17*23?"},
                             {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                                 "name": "calc", "arguments": "{'expression': 17*23}"}}]},
                             {"role": "tool", "content": "391"}, {"role": "assistant", "content": "391"}]},
     "messages[1].tool_calls[0].function.arguments: not valid JSON"),
    ("openai", {"messages": [{"role": "user", "content": "hi"}]}, "messages: no assistant turn"),
    ("dpo_pairs", {"conversations": [{"from": "human", "value": "hi"}], "rejected": {"from": "gpt", "value": "x"}},
     "chosen: missing"),
]


@pytest.mark.parametrize("fmt, record, message", BAD, ids=[m.split(":")[0] + "-" + f for f, _, m in BAD])
def test_a_bad_record_names_file_line_and_field(fmt, record, message, tmp_path):
    good = {"alpaca": {"instruction": "Say hi.", "output": "Hi!"},
            "sharegpt": {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            "openai": tool_conversation(),
            "dpo_pairs": {"conversations": [{"from": "human", "value": "hi"}],
                          "chosen": {"from": "gpt", "value": "hello"}, "rejected": {"from": "gpt", "value": "go"}}}[fmt]
    file = write_lines(tmp_path / "bad.jsonl", [good, good, record, good])
    with pytest.raises(ChatRecordError) as caught:
        read("src", file, fmt)
    assert str(caught.value).startswith(f"{file}:3: {message}")
    # on_error: skip keeps the good records and counts the bad one under its reason
    records, stats = read("src", file, fmt, on_error="skip")
    assert len(records) == 3 and sum(stats["skipped"].values()) == 1 and stats["read"] == 4


def test_malformed_json_names_the_line_in_jsonl_and_in_an_array(tmp_path):
    good = {"instruction": "Say hi.", "output": "Hi!"}
    jsonl = write_lines(tmp_path / "broken.jsonl", [good, '{"instruction": "x", "output": ', good])
    with pytest.raises(ChatRecordError, match=rf"^{jsonl}:2: not valid JSON"):
        read("src", jsonl, "alpaca")
    records, stats = read("src", jsonl, "alpaca", on_error="skip")
    assert len(records) == 2 and stats["skipped"] == {"invalid_json": 1}
    array = write_array(tmp_path / "records.json", [good, good, {"instruction": "Say hi."}, good])
    with pytest.raises(ChatRecordError, match=rf"^{array}:10: output: missing"):  # element 3 starts on line 10
        read("src", array, "alpaca")
    assert line_of(array, 10).strip() == "{" and "Say hi." in line_of(array, 11)
    array.write_text(array.read_text().replace('"Hi!"\n },', '"Hi!"\n } oops', 1))
    with pytest.raises(ChatRecordError, match=rf"^{array}:5: not valid JSON"):
        read("src", array, "alpaca")
    (tmp_path / "empty.jsonl").write_text("  \n")
    with pytest.raises(ChatRecordError, match=r"empty.jsonl: file is empty"):
        read("src", tmp_path / "empty.jsonl", "alpaca")


def test_core_refuses_a_canonical_record_with_bad_tool_calls(tmp_path):
    record = tool_conversation()
    record["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    with pytest.raises(ContractError, match=r"train.jsonl:1: messages\[1\].tool_calls\[0\].function.arguments "
                                            r"is not valid JSON"):
        write_conversations(tmp_path, "messages", {"train": [record]})
    record = tool_conversation()
    record["messages"][2]["tool_calls"] = record["messages"][1]["tool_calls"]
    with pytest.raises(ContractError, match=r"messages\[2\].tool_calls: only an assistant turn calls tools"):
        write_conversations(tmp_path, "messages", {"train": [record]})
    with pytest.raises(ContractError, match=r"tools\[0\] must be"):
        write_conversations(tmp_path, "messages", {"train": [{**tool_conversation(), "tools": [{"name": 3}]}]})
