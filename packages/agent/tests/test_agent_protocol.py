"""The agent protocols against a scripted endpoint (a real HTTP server returning known replies):
the expected trajectory and score, malformed model output as error observations, the turn limit
and a refused request as scored failures, and the BFCL checker."""
from __future__ import annotations

import json

import pytest
from agent_testing import ScriptedServer, last_tool_result, reply
from fullchain.agent.agents import make_agent, parse_hermes
from fullchain.agent.config import AgentConfig
from fullchain.agent.llm import OpenAIChat
from fullchain.agent.stage import run
from fullchain.agent.tasks import bfcl_check, bfcl_tasks, extract_answer
from fullchain.agent.tools import FunctionTool, calculator
from fullchain.core.contracts import write_tool_tasks

CALCULATOR = {"type": "function", "function": {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression of integers with + - * / and parentheses; "
                   "returns the exact result.",
    "parameters": {"type": "object", "properties": {
        "expression": {"type": "string", "description": "e.g. (37 * 48) - 259"}},
        "required": ["expression"]}}}
SYSTEM = "Use the tool for every arithmetic step, then give the final answer as 'The answer is N.'"
TASKS = [{"id": "t1", "question": "What is 37 times 48 plus 5?", "answer": "1781", "expression": "(37 * 48) + 5"},
         {"id": "t2", "question": "What is 6 times 7 plus 1?", "answer": "43", "expression": "(6 * 7) + 1"}]


def _tool_model(body):
    """What a model trained on chat_data's conversations does: one call per operation, then the
    answer as "The answer is N." (t2's last step is deliberately wrong: 42 + 1 = 44)."""
    question = next(m["content"] for m in body["messages"] if m["role"] == "user")
    results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    if not body.get("tools"):
        return reply("The answer is 1000.")
    first, second = (("37 * 48", "{} + 5") if "37" in question else ("6 * 7", "{} + 2"))
    if not results:  # compact JSON, as a server may write it
        return reply("", [("calculator", json.dumps({"expression": first}, separators=(",", ":")))])
    if len(results) == 1:
        return reply("", [("calculator", {"expression": second.format(results[0])})])
    return reply(f"The answer is {results[-1]}.")


def test_a_run_gives_the_expected_trajectory_and_score(tmp_path):
    tasks_dir = tmp_path / "tasks"
    write_tool_tasks(tasks_dir, {"heldout": TASKS}, [CALCULATOR], system=SYSTEM)
    with ScriptedServer(_tool_model) as server:
        cfg = AgentConfig(protocol="function_calling", endpoint=server.url, task_sets={"heldout": 0})
        metrics = run(cfg, {"tasks": tasks_dir}, tmp_path / "out")
    assert metrics["heldout/tools/success_rate"] == 0.5
    assert metrics["heldout/no_tools/success_rate"] == 0.0
    assert metrics["heldout/tools/tool_call_validity"] == 1.0
    rows = [json.loads(line) for line in open(tmp_path / "out" / "trajectories.jsonl")]
    first = next(r for r in rows if r["id"] == "t1" and r["mode"] == "tools")
    assert [c["arguments"] for s in first["trajectory"] for c in s["calls"]] == [
        {"expression": "37 * 48"}, {"expression": "1776 + 5"}]
    assert [c["result"] for s in first["trajectory"] for c in s["calls"]] == ["1776", "1781"]
    assert first["correct"] and first["steps"] == 3 and first["prompt_tokens"] == 30
    wrong = next(r for r in rows if r["id"] == "t2" and r["mode"] == "tools")
    assert not wrong["correct"] and wrong["why"] == "answered '44'"
    # the model saw exactly the task set's tool schema and system prompt (what it was trained on)
    # tasks.json stores the schema with sorted keys; it is sent in the order the conversations
    # rendered it (the template's tojson keeps key order), and call arguments spaced as tojson does
    tool_request = next(b for b in server.requests if b.get("tools"))
    assert json.dumps(tool_request["tools"]) == json.dumps([CALCULATOR])
    assert tool_request["messages"][0] == {"role": "system", "content": SYSTEM}
    followup = next(b for b in server.requests if any(m["role"] == "tool" for m in b["messages"]))
    assistant = next(m for m in followup["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"expression": "37 * 48"}'
    for name in ("results.csv", "results.md", "results.png", "results.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "| heldout | tools | 2 | 0.5 |" in (tmp_path / "out" / "results.md").read_text()


MALFORMED = [
    # (what the model sends: server-parsed calls or raw text, the error the model must get back)
    (reply("", [("calculator", "{not json")]), "arguments are not valid JSON"),
    (reply("", [("weather", {"city": "Oslo"})]), "unknown tool 'weather'; the tools are: calculator"),
    (reply("", [("calculator", {})]), "missing required argument(s) expression"),
    (reply("", [("calculator", {"expression": "1+1", "precision": 3})]), "unknown argument(s) precision"),
    (reply('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call> and then'),
     "text after the tool call"),
    (reply('<tool_call>\n{"name": "calculator", "arguments": {"expression": \n</tool_call>'),
     "the tool call is not valid JSON"),
]


@pytest.mark.parametrize("bad,error", MALFORMED, ids=["not-json", "unknown-tool", "missing-arg",
                                                      "extra-arg", "text-after-call", "broken-hermes"])
def test_malformed_output_is_an_error_observation(bad, error):
    def script(body):
        if last_tool_result(body) is None:
            return bad
        return reply("The answer is 4.")

    with ScriptedServer(script) as server:
        agent = make_agent("function_calling", OpenAIChat(server.url, "scripted"),
                           [FunctionTool(calculator)], max_turns=3)
        episode = agent.chat("2+2?")
    assert episode.status == "answered"
    observation = last_tool_result(server.requests[1])
    assert observation.startswith("error: ") and error in observation, observation
    assert episode.calls == [] or not any(c.valid for c in episode.calls)


def test_turn_limit_and_refused_request_are_scored_failures(tmp_path):
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(json.dumps({"question": "loop forever", "answer": "7"}) + "\n"
                         + json.dumps({"question": "too long " * 3, "answer": "abc"}) + "\n")

    def script(body):
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if question.startswith("too long"):
            return reply(status=400, error="prompt has 300 tokens; the context is 256")
        return reply("", [("calculator", {"expression": "1+1"})])  # never answers

    with ScriptedServer(script) as server:
        cfg = AgentConfig(protocol="function_calling", endpoint=server.url, tools=["calculator"],
                          max_turns=3, task_sets={}, tasks=str(task_file))
        metrics = run(cfg, {}, tmp_path / "out")
    rows = [json.loads(line) for line in open(tmp_path / "out" / "trajectories.jsonl")]
    looping = next(r for r in rows if r["question"] == "loop forever" and r["mode"] == "tools")
    assert looping["status"] == "turn_limit" and not looping["correct"] and looping["steps"] == 3
    refused = next(r for r in rows if r["answer"] is None and r["status"] == "server_error")
    assert "context is 256" in refused["error"] and not refused["correct"]
    assert metrics["file/tools/success_rate"] == 0.0


def test_react_protocol_runs_lagent_react(tmp_path):
    def script(body):
        last = body["messages"][-1]["content"]
        if "Response:" in last:
            return reply("Thought: I have it.\nFinal Answer: The answer is " + last.split("Response:")[1].strip() + ".")
        return reply('Thought: multiply\nAction: calculator\nAction Input: {"expression": "12 * 12"}\n')

    with ScriptedServer(script) as server:
        agent = make_agent("react", OpenAIChat(server.url, "scripted"), [FunctionTool(calculator)], max_turns=4)
        episode = agent.chat("12 squared?")
    assert episode.status == "answered" and extract_answer(episode.answer) == "144"
    assert [(c.name, c.arguments, c.result) for c in episode.calls] == [("calculator", {"expression": "12 * 12"}, "144")]
    assert "calculator" in server.requests[0]["messages"][0]["content"]  # Lagent's ReAct prompt


def test_parse_hermes():
    calls, problem = parse_hermes('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>')
    assert calls == [("f", {"x": 1})] and problem is None
    assert parse_hermes("no call here") == ([], None)


def test_bfcl_checker_on_known_right_and_wrong_calls(shared_data_dir):
    (task,) = bfcl_tasks(shared_data_dir, "bfcl_simple", 1)  # calculate_triangle_area(base=10, height=5)
    functions, truth = task["functions"], task["ground_truth"]
    name = "calculate_triangle_area"
    assert bfcl_check([(name, {"base": 10, "height": 5})], functions, truth) == (True, "")
    assert bfcl_check([(name, {"base": 10, "height": 5, "unit": "Units"})], functions, truth)[0]
    wrong = {
        "value": [(name, {"base": 10, "height": 6})],
        "type": [(name, {"base": "10", "height": 5})],
        "missing": [(name, {"base": 10})],
        "extra": [(name, {"base": 10, "height": 5, "color": "red"})],
        "name": [("triangle_area", {"base": 10, "height": 5})],
        "two calls": [(name, {"base": 10, "height": 5})] * 2,
        "no call": [],
    }
    for why, calls in wrong.items():
        assert not bfcl_check(calls, functions, truth)[0], why
    # a float parameter takes an int; dotted names are offered with _; strings ignore case/punctuation
    functions = [{"name": "math.hypot", "parameters": {"type": "dict", "properties": {
        "x": {"type": "float"}, "label": {"type": "string"}}, "required": ["x"]}}]
    truth = [{"math.hypot": {"x": [4.0], "label": ["New York", ""]}}]
    assert bfcl_check([("math_hypot", {"x": 4, "label": "new york"})], functions, truth)[0]
    assert not bfcl_check([("math_hypot", {"x": 4.5})], functions, truth)[0]


@pytest.fixture
def shared_data_dir():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    if not (root / "bfcl-v4").is_dir():
        pytest.skip(f"{root}/bfcl-v4 is not here")
    return root
