"""What `transformers serve` lacks, in front of it in the same process: an API key, request
limits and a concurrency cap, answered with OpenAI-shaped 4xx/429 errors before a request
reaches the model. Measured on transformers serve 5.24: a `max_tokens` of 10^9, a 200k-word
prompt or a malformed `tools` entry stalled the server for every caller, and `messages` as a
string or a negative `max_tokens` gave 500s — so they are refused here.

A plain ASGI middleware (Starlette's protocol, which FastAPI and uvicorn speak): it reads the
body once, checks it, and hands the (possibly completed) body on to the engine's app.
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

# Only the endpoints of our API are exposed: transformers serve also mounts /reset (unloads the
# model), /load_model, /v1/responses, /v1/systemone and audio routes.
GENERATE_PATHS = ("/v1/chat/completions", "/v1/completions")
OPEN_PATHS = ("/health",)
EXPOSED = ("/v1/models", "/health", *GENERATE_PATHS)


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int
    max_tokens: int
    """The largest `max_tokens` a request may ask for."""
    default_max_tokens: int
    """`max_tokens` of a request that gives none."""
    context_length: int
    """Prompt plus output may not exceed the model's context."""
    max_concurrent_requests: int
    """Generating requests at once; one more is answered 429 at once (clients retry)."""
    max_request_bytes: int


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> bytes:
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(self.status,
                                                                           "invalid_request_error")
        return json.dumps({"error": {"message": self.message, "type": kind, "param": self.param,
                                     "code": self.code}}).encode()


class Gateway:
    """ASGI middleware: auth, limits and the concurrency cap around the engine's `app`.

    `count_prompt_tokens(path, body)` returns the prompt's length in tokens as the engine will
    build it (the chat template with the tools), raising ValueError for a body it cannot render."""

    def __init__(self, app, limits: Limits, count_prompt_tokens: Callable[[str, dict], int],
                 api_key: str | None = None):
        self.app, self.limits, self.count = app, limits, count_prompt_tokens
        self.api_key = api_key or None
        self.active = 0  # one event loop: no lock needed
        self.refused = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        try:
            if path not in EXPOSED:
                raise RequestError(404, f"{path}: not an endpoint of this server; it serves "
                                   f"{', '.join(EXPOSED)}", code="not_found")
            if path not in OPEN_PATHS:
                self._authorize(scope)
            if path not in GENERATE_PATHS or scope["method"] != "POST":
                return await self.app(scope, receive, send)
            if self.active >= self.limits.max_concurrent_requests:
                self.refused += 1
                raise RequestError(429, f"server busy: {self.active} requests are being generated "
                                   f"(max_concurrent_requests={self.limits.max_concurrent_requests});"
                                   " retry shortly", code="too_many_requests",
                                   headers={"retry-after": "1"})
        except RequestError as error:
            return await _answer(send, error)
        self.active += 1
        try:
            try:
                body = self._checked(path, await _read_body(receive, self.limits.max_request_bytes))
            except RequestError as error:
                return await _answer(send, error)
            payload = json.dumps(body).encode()
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(payload)).encode()))
            sent = False

            async def replay():
                nonlocal sent
                if sent:  # the body is consumed: from now on, wait for the client to leave
                    return await receive()
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}

            await self.app({**scope, "headers": headers}, replay, send)
        finally:
            self.active -= 1

    def _authorize(self, scope) -> None:
        if self.api_key is None:
            return
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send `Authorization: Bearer <key>`)",
                               code="invalid_api_key", headers={"www-authenticate": "Bearer"})

    def _checked(self, path: str, raw: bytes) -> dict:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        if "generation_config" in body:  # transformers' extension: would bypass every limit here
            raise RequestError(400, "generation_config: not accepted by this server; use the "
                               "OpenAI fields (max_tokens, temperature, top_p, stop, seed)",
                               param="generation_config")
        if path == "/v1/chat/completions":
            _check_messages(body)
        elif not isinstance(body.get("prompt"), str):
            raise RequestError(400, "prompt: must be a string", param="prompt")
        limits = self.limits
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if max_tokens is None:
            max_tokens = limits.default_max_tokens
        elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise RequestError(400, f"{param}: must be a positive integer, got {max_tokens!r}",
                               param=param)
        elif max_tokens > limits.max_tokens:
            raise RequestError(400, f"{param}: {max_tokens} exceeds this server's limit of "
                               f"{limits.max_tokens} (max_tokens)", param=param,
                               code="max_tokens_exceeded")
        body.pop("max_completion_tokens", None)
        body["max_tokens"] = max_tokens
        try:
            prompt_tokens = self.count(path, body)
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError(400, f"the messages/tools cannot be rendered with the model's chat "
                               f"template: {exc}") from exc
        if prompt_tokens > limits.max_prompt_tokens:
            raise RequestError(400, f"the prompt has {prompt_tokens} tokens; this server's limit "
                               f"is {limits.max_prompt_tokens} (max_prompt_tokens)",
                               param="messages", code="prompt_too_long")
        if prompt_tokens + max_tokens > limits.context_length:
            raise RequestError(400, f"the prompt ({prompt_tokens} tokens) plus max_tokens "
                               f"({max_tokens}) exceeds the model's context of "
                               f"{limits.context_length} tokens (context_length)", param=param,
                               code="context_length_exceeded")
        return body


def _check_messages(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: must be a non-empty list of {role, content} objects",
                           param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "user", "assistant", "tool", "developer"):
            raise RequestError(400, f"messages[{i}]: needs a role of system, user, assistant or "
                               "tool", param=f"messages[{i}]")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise RequestError(400, f"messages[{i}].content: must be a string or a list of parts",
                               param=f"messages[{i}].content")
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise RequestError(400, "tools: must be a list", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type") != "function"
                or not isinstance(function, dict) or not isinstance(function.get("name"), str)
                or not isinstance(function.get("parameters", {}), dict)):
            raise RequestError(400, f"tools[{i}]: expected {{type: function, function: {{name, "
                               "parameters}}}}", param=f"tools[{i}]")


async def _read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request body exceeds {limit} bytes (max_request_bytes)",
                               code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send, error: RequestError) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
