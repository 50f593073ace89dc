"""Test helpers of the agent package: a real OpenAI-shaped HTTP server on 127.0.0.1 whose replies
a test scripts (a function of the request), recording every request it got."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def reply(content: str = "", calls: list[tuple[str, Any]] | None = None, status: int = 200,
          error: str | None = None) -> dict[str, Any]:
    """A scripted chat completion: text, and/or tool calls (name, arguments: dict or raw text)."""
    return {"content": content, "calls": calls or [], "status": status, "error": error}


class ScriptedServer:
    """`/v1/models` and `/v1/chat/completions`; `script(body) -> reply(...)` decides each answer."""

    def __init__(self, script: Callable[[dict[str, Any]], dict[str, Any]]):
        self.script, self.requests = script, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                answer = server.script(body)
                if answer["status"] != 200:
                    self._send(answer["status"], {"error": {"message": answer["error"],
                                                            "type": "invalid_request_error",
                                                            "code": "context_length_exceeded"}})
                    return
                calls = [{"id": f"call_{i}", "type": "function",
                          "function": {"name": name, "arguments": args if isinstance(args, str)
                                       else json.dumps(args)}}
                         for i, (name, args) in enumerate(answer["calls"])]
                message = {"role": "assistant", "content": answer["content"] or None}
                if calls:
                    message["tool_calls"] = calls
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "message": message,
                                              "finish_reason": "tool_calls" if calls else "stop"}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def last_tool_result(body: dict[str, Any]) -> str | None:
    tools = [m for m in body["messages"] if m["role"] == "tool"]
    return tools[-1]["content"] if tools else None


@pytest.fixture(scope="session")
def sandbox():
    from fullchain.agent.sandbox import Sandbox

    with Sandbox(timeout_s=5, cpu_seconds=2, memory_mb=256, max_processes=8) as box:
        yield box
