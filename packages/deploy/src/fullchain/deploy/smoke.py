"""The smoke test a deploy step runs against its own server: one chat completion and one
completion with a tool offered, through the official `openai` client; both must parse as
OpenAI objects. A tool call, when the model makes one, must carry JSON arguments."""
from __future__ import annotations

import json
import time

SMOKE_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def smoke_test(url: str, model: str, api_key: str | None = None, max_tokens: int = 16) -> dict:
    """Returns latencies and what came back; raises on any malformed answer."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=api_key or "none", max_retries=0, timeout=300)
    started = time.perf_counter()
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=max_tokens)
    chat_latency = time.perf_counter() - started
    if chat.choices[0].message.role != "assistant" or chat.usage is None:
        raise RuntimeError(f"smoke test: malformed chat completion {chat!r}")
    from openai import BadRequestError

    for budget in (64, max_tokens):  # room for a whole call; a short context takes what fits
        started = time.perf_counter()
        try:
            tool = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[SMOKE_TOOL], max_tokens=budget)
            break
        except BadRequestError as exc:
            if exc.code != "context_length_exceeded" or budget == max_tokens:
                raise
    tool_latency = time.perf_counter() - started
    calls = tool.choices[0].message.tool_calls or []
    for call in calls:
        json.loads(call.function.arguments)  # the parser must hand over JSON arguments
    return {"smoke_chat_latency_s": round(chat_latency, 3),
            "smoke_chat_completion_tokens": chat.usage.completion_tokens,
            "smoke_tool_latency_s": round(tool_latency, 3),
            "smoke_tool_calls": len(calls),
            "smoke_tool_finish_reason": tool.choices[0].finish_reason}
