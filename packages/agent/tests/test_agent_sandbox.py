"""The Python sandbox: each hostile program is stopped with a clear tool error, the agent run goes
on, and no process of it is left (checked by pid)."""
from __future__ import annotations

import os
import re
import socket
import time

from agent_testing import ScriptedServer, reply
from fullchain.agent.agents import make_agent
from fullchain.agent.llm import OpenAIChat
from fullchain.agent.sandbox import Sandbox
from fullchain.agent.tools import SandboxedPython

FORK_LOOP = """
import os, sys, time
for i in range(64):          # bounded: 64 children, each sleeping, far over the limit of 8
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    print("child", pid, flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int], seconds: float = 5.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_hostile_programs_are_tool_errors_and_the_agent_run_goes_on(tmp_path):
    outside = tmp_path / "outside.txt"
    with socket.socket() as listener:  # a real local port the code must not reach
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        programs = [
            ("while True:\n    pass", r"^(CPU limit|timeout)"),
            ("x = bytearray(2 << 30)", r"^memory limit"),
            (f"open({str(outside)!r}, 'w').write('escaped')", r"PermissionError"),
            (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
             r"OSError: \[Errno 101\] Network is unreachable"),
            (FORK_LOOP, r"^process limit"),
        ]

        def script(body):
            done = sum(m["role"] == "tool" for m in body["messages"])
            if done < len(programs):
                return reply("", [("python", {"code": programs[done][0]})])
            return reply("The answer is 42.")

        with ScriptedServer(script) as server, \
                Sandbox(timeout_s=4, cpu_seconds=1, memory_mb=256, max_processes=8) as box:
            agent = make_agent("function_calling", OpenAIChat(server.url, "scripted"),
                               [SandboxedPython(box)], max_turns=len(programs) + 1)
            episode = agent.chat("run these")
            assert box.network_isolation in ("netns", "userns+netns", "landlock-tcp")

    assert episode.status == "answered" and episode.answer == "The answer is 42."
    calls = episode.calls
    assert len(calls) == len(programs)
    for call, (_, pattern) in zip(calls, programs):
        assert call.result is None and call.valid
        assert re.search(pattern, call.error, re.M), (pattern, call.error)
    # every error went back to the model as a tool message
    tool_messages = [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "tool"]
    assert all(m.startswith("error: ") for m in tool_messages)
    assert not outside.exists()
    children = [int(p) for p in re.findall(r"child (\d+)", calls[-1].error)]
    assert children, calls[-1].error  # it did fork some before hitting the limit
    assert _gone(children), [p for p in children if _alive(p)]


def test_calls_share_nothing_and_see_only_their_own_directory(sandbox):
    first = sandbox.run("import os\nopen('note.txt', 'w').write('x')\nsecret = 1\nprint(os.getcwd())")
    second = sandbox.run("import os\nprint(os.getcwd(), os.listdir('.'), 'secret' in globals())")
    assert first.ok and second.ok, (first, second)
    first_dir = first.output.strip()
    assert first_dir not in second.output and "note.txt" not in second.output
    assert second.output.strip().endswith("[] False")
    assert not os.path.exists(first_dir)  # removed after the call
    for path in ("/etc/passwd", os.getcwd(), os.path.expanduser("~")):
        result = sandbox.run(f"import os\nprint(os.listdir({path!r}) if os.path.isdir({path!r}) "
                             f"else open({path!r}).read())")
        assert not result.ok and "PermissionError" in result.error, (path, result)


def test_output_is_capped_and_exact_results_come_back(sandbox):
    assert sandbox.run("print(2 ** 100)").output == f"{2 ** 100}\n"
    flood = sandbox.run("print('y' * 10 ** 6)")
    assert not flood.ok and flood.error.startswith("output limit")
    assert len(flood.output) <= sandbox.output_bytes
