"""The model behind the agents: a Lagent LLM class (`BaseAPIModel`, its extension point) over any
OpenAI-compatible server, with the official `openai` client.

Lagent's own `GPTAPI` returns only text; the agents here also need `tool_calls` (function
calling), token usage and latency per request, and the server's errors as values (a prompt over
the model's context is a failed task, not a crash).
"""
from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from lagent.llms.base_api import BaseAPIModel


@dataclass
class Reply:
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """OpenAI-shaped calls the server parsed: {"id", "type", "function": {"name", "arguments"}}
    (arguments as the JSON text the model wrote)."""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    """The server refused the request (e.g. context_length_exceeded): the text of its error."""


def first_model(base_url: str, api_key: str | None = None, timeout: float = 30.0) -> str:
    """The first model the server lists at /v1/models."""
    request = urllib.request.Request(base_url.rstrip("/") + "/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our server
        models = json.load(response).get("data") or []
    if not models:
        raise RuntimeError(f"{base_url}/models lists no model")
    return models[0]["id"]


class OpenAIChat(BaseAPIModel):
    """Chat completions against `base_url`; `chat()` is what Lagent's agents call (text in the
    ReAct protocol), `complete()` the full reply with tool calls."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 max_new_tokens: int = 64, temperature: float = 0.0, timeout: float = 120.0):
        import openai

        # model_type only labels it for Lagent; query_per_second: Lagent's token bucket is not used.
        super().__init__(model_type=model, query_per_second=1000, retry=0,
                         max_new_tokens=max_new_tokens, temperature=temperature)
        self.base_url, self.model = base_url.rstrip("/"), model
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none",
                                    timeout=timeout, max_retries=2)
        self.replies: list[Reply] = []
        """Every reply of this client, in order (the agents read usage and latency here)."""

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                 max_tokens: int | None = None) -> Reply:
        import openai

        started = time.perf_counter()
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "max_tokens": max_tokens or self.gen_params["max_new_tokens"],
                                  "temperature": self.gen_params["temperature"]}
        if tools:
            kwargs["tools"] = tools
        try:
            response = self.client.chat.completions.create(**kwargs)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            reply = Reply(content="", error=f"{exc.status_code}: {_error_text(exc)}",
                          seconds=time.perf_counter() - started)
            self.replies.append(reply)
            return reply
        choice = response.choices[0]
        calls = [{"id": c.id, "type": "function",
                  "function": {"name": c.function.name, "arguments": c.function.arguments}}
                 for c in (choice.message.tool_calls or [])]
        usage = response.usage
        reply = Reply(content=choice.message.content or "", tool_calls=calls,
                      finish_reason=choice.finish_reason,
                      prompt_tokens=usage.prompt_tokens if usage else 0,
                      completion_tokens=usage.completion_tokens if usage else 0,
                      seconds=time.perf_counter() - started)
        self.replies.append(reply)
        return reply

    def chat(self, inputs: list[dict[str, Any]], **gen_params) -> str:
        """Lagent's LLM interface: messages in, the reply's text out (a refused request ends the
        agent's run with the error as its text)."""
        reply = self.complete([{"role": m["role"], "content": m["content"]} for m in inputs],
                              max_tokens=gen_params.get("max_new_tokens"))
        if reply.error:
            raise ServerRefused(reply.error)
        return reply.content


class ServerRefused(RuntimeError):
    """The server answered a request with an error (the task fails with it)."""


def _error_text(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(exc)
