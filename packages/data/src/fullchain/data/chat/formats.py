"""Chat files in their common formats -> the canonical record (core's `conversations` contract).

Canonical SFT record (OpenAI chat shape, what HF chat templates and trl consume):

    {"id": "<source>/<file>:<line>", "source": "<source>",
     "messages": [{"role": "system" | "user" | "assistant" | "tool", "content": str,
                   "tool_calls": [{"type": "function",
                                   "function": {"name": str, "arguments": {...}}}]}],   # assistant only
     "tools": [{"type": "function", "function": {"name", "description", "parameters"}}]}  # optional

Canonical preference record: `prompt` (messages ending with a user turn), `chosen` and
`rejected` (one assistant message each), optional `tools` (trl's conversational format).

Tool-call arguments are always a decoded JSON object; a string that is not JSON is an error.
Every problem is a `ChatRecordError` naming `file:line` and the field (`conversations[3].value`).
Reasoning parts (LLaMA-Factory's typed content `{"type": "reasoning"}`) are dropped and counted:
the ChatML template has no place for them.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "call", "observation": "tool", "tool": "tool",
                  "function": "tool"}
OPENAI_ROLES = ("system", "user", "assistant", "tool")


class ChatRecordError(ValueError):
    """A record that cannot be read; the message names file:line and the field. `reason` is the
    short label the card counts skips under (on_error: skip)."""

    def __init__(self, message: str, reason: str = "invalid_record"):
        super().__init__(message)
        self.reason = reason


class FieldError(ValueError):
    """Raised by a converter: `field` and problem; the reader adds file:line."""

    def __init__(self, field: str, problem: str, reason: str = "invalid_record"):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.reason = field, problem, reason


# ---------------------------------------------------------------------------- files


def _line_of(text: str, offset: int, cache: list[int]) -> int:
    """1-based line of `offset`, counting newlines incrementally from the previous call."""
    last_offset, last_line = cache
    cache[1] = last_line + text.count("\n", last_offset, offset)
    cache[0] = offset
    return cache[1]


def iter_json_records(file: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line, record, error) of a .jsonl file (one record a line) or a .json file (an array:
    the line where each element starts; an object: one record). A JSONL line that does not
    parse yields (line, None, message) so that the caller may skip it; a malformed .json array
    raises (nothing after the error can be located)."""
    raw = Path(file).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ChatRecordError(f"{file}:{line}: invalid UTF-8 at byte {exc.start}", "invalid_utf8") from None
    if not text.strip():
        raise ChatRecordError(f"{file}: file is empty", "empty_file")
    if file.name.endswith(".jsonl"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield number, None, f"{file}:{number}: not valid JSON ({exc.msg} at column {exc.colno})"
        return
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if text[start] != "[":
        try:
            yield 1 + text.count("\n", 0, start), json.loads(text), None
        except json.JSONDecodeError as exc:
            raise ChatRecordError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg} at column "
                                  f"{exc.colno})", "invalid_json") from None
        return
    cache = [0, 1]
    position = start + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position < len(text) and text[position] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ChatRecordError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                                  "invalid_json") from None
        yield _line_of(text, position, cache), record, None
        position = end
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position < len(text) and text[position] == ",":
            position += 1
        elif position >= len(text) or text[position] != "]":
            line = 1 + text.count("\n", 0, min(position, len(text)))
            raise ChatRecordError(f"{file}:{line}: not valid JSON (expected ',' or ']' after an element)",
                                  "invalid_json")


# ---------------------------------------------------------------------------- pieces


def _string(record: dict, key: str, field: str | None = None, required: bool = True) -> str | None:
    field = field or key
    if key not in record or record[key] is None:
        if required:
            raise FieldError(field, "missing", "missing_field")
        return None
    value = record[key]
    if not isinstance(value, str):
        raise FieldError(field, f"expected a string, got {type(value).__name__}", "wrong_type")
    return value


def _decode(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError(field, f"not valid JSON ({exc.msg} at column {exc.colno})",
                             "invalid_tool_call") from None
    return value


def tool_call(value: Any, field: str) -> dict:
    """One call, flat {name, arguments} or OpenAI {type, function: {...}}, as OpenAI's shape
    with the arguments decoded into a JSON object."""
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        value, field = value["function"], f"{field}.function"
    if not isinstance(value, dict):
        raise FieldError(field, f"a tool call must be a JSON object, got {type(value).__name__}",
                         "invalid_tool_call")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise FieldError(f"{field}.name", "missing" if name is None else f"expected a name, got {name!r}",
                         "invalid_tool_call")
    arguments = _decode(value.get("arguments", {}), f"{field}.arguments")
    if not isinstance(arguments, dict):
        raise FieldError(f"{field}.arguments", f"must be a JSON object, got {type(arguments).__name__}",
                         "invalid_tool_call")
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def tool_calls(value: Any, field: str) -> list[dict]:
    """A function_call turn's value: one call or a list of them (parallel calls), JSON-encoded."""
    decoded = _decode(value, field)
    calls = decoded if isinstance(decoded, list) else [decoded]
    if not calls:
        raise FieldError(field, "an empty list of tool calls", "invalid_tool_call")
    suffix = (lambda i: f"[{i}]") if isinstance(decoded, list) else (lambda i: "")
    return [tool_call(call, f"{field}{suffix(i)}") for i, call in enumerate(calls)]


def tool_schemas(record: dict) -> list[dict] | None:
    """`tools` (a list, or a JSON string of one) as OpenAI function schemas; None when absent."""
    if record.get("tools") in (None, "", "[]", []):
        return None
    tools = _decode(record["tools"], "tools")
    if not isinstance(tools, list):
        raise FieldError("tools", f"expected a list of tool schemas, got {type(tools).__name__}",
                         "invalid_tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and "function" in tool else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise FieldError(f"tools[{i}]", "a tool schema needs a name", "invalid_tools")
        out.append({"type": "function", "function": function})
    return out


def _add_call(messages: list[dict], calls: list[dict]) -> None:
    """An assistant's call: joins the assistant's text just before it (one turn), else a new turn."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
        last["tool_calls"] = calls
    elif last is not None and last["role"] == "assistant":
        last["tool_calls"].extend(calls)
    else:
        messages.append({"role": "assistant", "content": "", "tool_calls": calls})


def _finish_sft(messages: list[dict], field: str) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise FieldError(field, "no assistant turn", "no_assistant_turn")
    if messages[-1]["role"] != "assistant":
        raise FieldError(field, f"ends with a {messages[-1]['role']} turn, not an assistant turn",
                         "no_final_assistant_turn")
    return messages


# ---------------------------------------------------------------------------- formats


def sharegpt_turns(turns: Any, field: str, system: str | None) -> list[dict]:
    """ShareGPT `conversations` [{from, value}] as canonical messages (no final-turn check)."""
    if not isinstance(turns, list) or not turns:
        raise FieldError(field, "missing" if turns is None else "expected a non-empty list of turns",
                         "missing_field")
    messages = [{"role": "system", "content": system}] if system else []
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise FieldError(where, "expected a {from, value} object", "wrong_type")
        speaker = _string(turn, "from", f"{where}.from")
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise FieldError(f"{where}.from", f"unknown role {speaker!r} (expected one of "
                             f"{sorted(SHAREGPT_ROLES)})", "unknown_role")
        value = _string(turn, "value", f"{where}.value")
        if role == "call":
            _add_call(messages, tool_calls(value, f"{where}.value"))
        elif role == "system" and messages:
            raise FieldError(f"{where}.from", "a system turn after the first turn", "unknown_role")
        else:
            messages.append({"role": role, "content": value})
    return messages


def from_alpaca(record: dict, notes: Counter) -> dict:
    instruction = _string(record, "instruction")
    if not instruction.strip():
        raise FieldError("instruction", "empty", "empty_text")
    extra = _string(record, "input", required=False)
    output = _string(record, "output")
    if not output.strip():
        raise FieldError("output", "empty", "empty_text")
    system = _string(record, "system", required=False)
    messages = [{"role": "system", "content": system}] if system else []
    history = record.get("history") or []
    if not isinstance(history, list):
        raise FieldError("history", "expected a list of [question, answer] pairs", "wrong_type")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise FieldError(f"history[{i}]", "expected a [question, answer] pair of strings", "wrong_type")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def from_sharegpt(record: dict, notes: Counter) -> dict:
    system = _string(record, "system", required=False)
    messages = _finish_sft(sharegpt_turns(record.get("conversations"), "conversations", system),
                           "conversations")
    out = {"messages": messages}
    tools = tool_schemas(record)
    if tools:
        out["tools"] = tools
    return out


def _openai_content(content: Any, field: str, notes: Counter) -> tuple[str, list[dict]]:
    """(text, calls) of a message's content: a string, null, or typed parts (OpenAI's
    {"type": "text", "text"} or LLaMA-Factory's {"type": "text" | "reasoning" | "tool_call", "value"})."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise FieldError(field, f"expected a string or a list of parts, got {type(content).__name__}",
                         "wrong_type")
    texts, calls = [], []
    for j, part in enumerate(content):
        where = f"{field}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("text", part.get("value")) if isinstance(part, dict) else None
        if kind == "text" and isinstance(value, str):
            texts.append(value)
        elif kind == "reasoning":
            notes["reasoning_parts_dropped"] += 1
        elif kind == "tool_call":
            calls += tool_calls(value, f"{where}.value")
        else:
            raise FieldError(f"{where}.type", f"unsupported content part {kind!r} (text, reasoning, "
                             "tool_call)", "unsupported_content")
    return "".join(texts), calls


def openai_messages(value: Any, field: str, notes: Counter) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise FieldError(field, "missing" if value is None else "expected a non-empty list of messages",
                         "missing_field")
    messages: list[dict] = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise FieldError(where, "expected a {role, content} object", "wrong_type")
        role = message.get("role")
        if role not in OPENAI_ROLES:
            raise FieldError(f"{where}.role", f"unknown role {role!r} (expected one of {list(OPENAI_ROLES)})",
                             "unknown_role")
        text, calls = _openai_content(message.get("content"), f"{where}.content", notes)
        for j, call in enumerate(message.get("tool_calls") or []):
            calls.append(tool_call(call, f"{where}.tool_calls[{j}]"))
        if calls and role != "assistant":
            raise FieldError(f"{where}.tool_calls", f"only an assistant turn calls tools (role is {role!r})",
                             "invalid_tool_call")
        if role == "assistant" and calls:
            if text:
                messages.append({"role": "assistant", "content": text})
            _add_call(messages, calls)
        elif role == "assistant" and not text.strip():
            raise FieldError(f"{where}.content", "an assistant turn with neither text nor tool calls",
                             "empty_text")
        else:
            messages.append({"role": role, "content": text})
    return messages


def from_openai(record: dict, notes: Counter) -> dict:
    out = {"messages": _finish_sft(openai_messages(record.get("messages"), "messages", notes), "messages")}
    tools = tool_schemas(record)
    if tools:
        out["tools"] = tools
    return out


def _answer(record: dict, key: str) -> list[dict]:
    value = record.get(key)
    if isinstance(value, dict):
        speaker = value.get("from", "gpt")
        if SHAREGPT_ROLES.get(speaker) != "assistant":
            raise FieldError(f"{key}.from", f"expected an assistant turn (gpt), got {speaker!r}", "unknown_role")
        value = _string(value, "value", f"{key}.value")
    elif value is None:
        raise FieldError(key, "missing", "missing_field")
    elif not isinstance(value, str):
        raise FieldError(key, f"expected a {{from, value}} turn or a string, got {type(value).__name__}",
                         "wrong_type")
    if not value.strip():
        raise FieldError(key, "empty", "empty_text")
    return [{"role": "assistant", "content": value}]


def from_dpo_pairs(record: dict, notes: Counter) -> dict:
    system = _string(record, "system", required=False)
    prompt = sharegpt_turns(record.get("conversations"), "conversations", system)
    if prompt[-1]["role"] != "user":
        raise FieldError("conversations", f"a prompt must end with a user turn, not {prompt[-1]['role']}",
                         "no_final_user_turn")
    out = {"prompt": prompt, "chosen": _answer(record, "chosen"), "rejected": _answer(record, "rejected")}
    tools = tool_schemas(record)
    if tools:
        out["tools"] = tools
    return out


CONVERTERS: dict[str, Callable[[dict, Counter], dict]] = {
    "alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai, "dpo_pairs": from_dpo_pairs,
}


def convert(fmt: str, record: Any, where: str, notes: Counter) -> dict:
    """The canonical record of one input record; ChatRecordError naming `where` (file:line) and
    the field when it cannot be."""
    if not isinstance(record, dict):
        raise ChatRecordError(f"{where}: expected a JSON object, got {type(record).__name__}", "wrong_type")
    try:
        return CONVERTERS[fmt](record, notes)
    except FieldError as exc:
        raise ChatRecordError(f"{where}: {exc.field}: {exc.problem} ({fmt} record)", exc.reason) from None
