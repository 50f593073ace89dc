"""`fullchain chat` in a pseudo-terminal (pexpect): tool calls and results show as they happen."""
from __future__ import annotations

import sys
from pathlib import Path

import pexpect
from agent_testing import ScriptedServer, reply

FULLCHAIN = str(Path(sys.executable).with_name("fullchain"))


def test_chat_shows_tool_calls_and_results_as_they_happen():
    def script(body):
        if body["messages"][-1]["role"] == "user":
            if "broken" in body["messages"][-1]["content"]:
                return reply("", [("calculator", {"expr": "1"})])
            return reply("", [("calculator", {"expression": "37 * 48"})])
        result = body["messages"][-1]["content"]
        return reply(f"The answer is {result}." if not result.startswith("error") else "Sorry.")

    with ScriptedServer(script) as server:
        child = pexpect.spawn(FULLCHAIN, ["chat", server.url, "--tools", "calculator"],
                              encoding="utf-8", timeout=60)
        try:
            child.expect("you> ")
            child.sendline("what is 37 times 48?")
            child.expect_exact('-> calculator {"expression": "37 * 48"}')
            child.expect_exact("<- 1776")
            child.expect_exact("assistant> The answer is 1776.")
            child.expect("you> ")
            child.sendline("a broken call")
            child.expect_exact("<- error: arguments: missing required argument(s) expression")
            child.expect_exact("assistant> Sorry.")
            child.expect("you> ")
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close()
    assert child.exitstatus == 0
    # the second question carried the first turn's conversation (system, user, call, result, answer)
    roles = [m["role"] for m in server.requests[2]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
