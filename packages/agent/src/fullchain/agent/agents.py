"""The two agent protocols, on Lagent's classes, and what one task's run leaves: an `Episode`.

- react: Lagent's own `ReAct` agent and `ReActProtocol` (Thought / Action / Action Input /
  Response / Final Answer in plain text).
- function_calling: `FunctionCallingAgent`, a Lagent `BaseAgent`: the tools go to the server as
  OpenAI `tools` (the chat template renders them into the system turn, Hermes style), calls come
  back as `tool_calls` (the server parses `<tool_call>{json}</tool_call>`), each result goes back
  as a `tool` message (rendered as `<tool_response>`), until the model answers in text. This is
  the conversation format chat_data's tool-use SFT data trains.

Both run tools through `CheckedExecutor`, a Lagent `ActionExecutor` that records every call and
its validity (it parses, names a declared tool, its arguments match the schema). A malformed call
(not JSON, unknown tool, missing or extra argument, text after the call) becomes an error
observation for the model; the run goes on. A task not answered within `max_turns` replies is a
scored failure (`status: turn_limit`).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fullchain.agent.llm import OpenAIChat, ServerRefused
from fullchain.agent.tools import canonical_tool, to_openai_tool
from lagent.actions import ActionExecutor, BaseAction
from lagent.agents import BaseAgent, ReAct
from lagent.agents.react import ReActProtocol
from lagent.schema import ActionReturn, ActionStatusCode, ActionValidCode


@dataclass
class Call:
    name: str
    arguments: Any
    """The arguments as parsed (a dict), or the raw text when they did not parse."""
    valid: bool
    """Parses, names a declared tool, arguments match its schema."""
    result: str | None = None
    error: str | None = None


@dataclass
class Step:
    reply: str
    calls: list[Call] = field(default_factory=list)
    error: str | None = None
    """What was wrong with the reply as a whole (e.g. text after the call)."""


@dataclass
class Episode:
    answer: str | None
    """The final text (None: no answer: turn limit or server error)."""
    status: str
    """answered | turn_limit | server_error"""
    steps: list[Step] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def calls(self) -> list[Call]:
        return [c for s in self.steps for c in s.calls]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- tool execution


class CheckedExecutor(ActionExecutor):
    """Lagent's ActionExecutor that names the declared tools in its error for an unknown one and
    records every call (for the validity metric)."""

    def __init__(self, actions: list[BaseAction], echo=None):
        super().__init__(list(actions))
        self.calls: list[Call] = []
        self.echo = echo
        """Called with each `Call` as soon as it ran (the chat shows it)."""

    def __call__(self, name: str, command: str | dict) -> ActionReturn:
        if name in (self.finish_action.name, self.no_action.name):
            return super().__call__(name, command)
        if not self.is_valid(name.split(".")[0]):
            known = ", ".join(self.action_names()) or "none"
            result = ActionReturn(args={"raw": command}, type=name, state=ActionStatusCode.ARGS_ERROR,
                                  errmsg=f"unknown tool {name!r}; the tools are: {known}",
                                  valid=ActionValidCode.INVALID)
        else:
            result = super().__call__(name, command)
        ok_args = result.state != ActionStatusCode.ARGS_ERROR
        args = result.args if ok_args else command
        self.calls.append(Call(name=name, arguments=args, valid=ok_args,
                               result=result.format_result() if result.state == ActionStatusCode.SUCCESS else None,
                               error=result.errmsg))
        if self.echo:
            self.echo(self.calls[-1])
        return result


def observation(result: ActionReturn) -> str:
    if result.state == ActionStatusCode.SUCCESS:
        return result.format_result()
    return f"error: {result.errmsg}"


# ---------------------------------------------------------------------------- Hermes calls in text

TOOL_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)


def parse_hermes(content: str) -> tuple[list[tuple[str, Any]], str | None]:
    """Tool calls written as text (`<tool_call>{"name", "arguments"}</tool_call>`, what the
    server leaves in `content` when it could not parse them): ([(name, arguments)], problem)."""
    calls, problems = [], []
    for match in TOOL_CALL.finditer(content):
        body = match.group(1).strip()
        if not match.group(2):
            problems.append("the <tool_call> is not closed with </tool_call>")
        try:
            call = json.loads(body)
        except json.JSONDecodeError as exc:
            problems.append(f"the tool call is not valid JSON ({exc.msg} at char {exc.pos}): {body[:120]}")
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            problems.append('a tool call must be a JSON object {"name": ..., "arguments": {...}}')
            continue
        calls.append((call["name"], call.get("arguments", {})))
    last = content.rfind("</tool_call>")
    if calls and last >= 0 and content[last + len("</tool_call>"):].strip():
        problems.append("text after the tool call: end the reply with </tool_call> and wait for the result")
    return calls, "; ".join(problems) or None


# ---------------------------------------------------------------------------- function calling


class FunctionCallingAgent(BaseAgent):
    """OpenAI function calling on a Lagent agent (see the module docstring)."""

    def __init__(self, llm: OpenAIChat, action_executor: CheckedExecutor, max_turns: int = 6,
                 tools: list[dict[str, Any]] | None = None):
        super().__init__(llm=llm, action_executor=action_executor, protocol=None)
        self.max_turns = max_turns
        self.tools = canonical_tool(tools if tools is not None else [
            to_openai_tool(a) for a in action_executor.actions.values() if a.enable])
        """What the model is shown (default: every action's schema; the task set's own schemas
        when given, so the model sees exactly the tools it was trained with)."""

    def chat(self, question: str, system: str | None = None,
             history: list[dict[str, Any]] | None = None) -> Episode:
        """One task (or one user turn after `history`, the `messages` of an earlier turn)."""
        messages: list[dict[str, Any]] = list(history) if history else (
            [{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": question})
        self.messages = messages
        episode = Episode(answer=None, status="turn_limit")
        for _ in range(self.max_turns):
            reply = self._llm.complete(messages, tools=self.tools or None)
            _account(episode, reply)
            if reply.error:
                episode.status, episode.error = "server_error", reply.error
                break
            step = Step(reply=reply.content)
            episode.steps.append(step)
            calls = [(c["function"]["name"], c["function"]["arguments"]) for c in reply.tool_calls]
            text_calls, problem = parse_hermes(reply.content)
            if not calls and (text_calls or problem):
                calls = text_calls
            if not calls and not problem:
                episode.answer, episode.status = reply.content, "answered"
                messages.append({"role": "assistant", "content": reply.content})
                break
            if problem:  # a malformed reply: nothing runs, the model hears what was wrong
                step.error = problem
                step.calls = [Call(name=n, arguments=a, valid=False, error=problem) for n, a in calls]
                for call in step.calls:
                    if self._action_executor.echo:
                        self._action_executor.echo(call)
                messages.append({"role": "assistant", "content": reply.content})
                messages.append({"role": "tool", "content": f"error: {problem}"})
                continue
            content = reply.content if reply.tool_calls else reply.content.split("<tool_call>")[0]
            ids = [c.get("id") for c in reply.tool_calls] or [None] * len(calls)
            messages.append({"role": "assistant", "content": content.strip(), "tool_calls": [
                {"id": i or f"call_{len(messages)}_{k}", "type": "function",
                 "function": {"name": n, "arguments": _as_text(a)}}
                for k, (i, (n, a)) in enumerate(zip(ids, calls))]})
            before = len(self._action_executor.calls)
            for name, arguments in calls:
                messages.append({"role": "tool",
                                 "content": observation(self._action_executor(name, arguments))})
            step.calls = self._action_executor.calls[before:]
        return episode


def _as_text(arguments: Any) -> str:
    """Arguments as JSON text spaced the way the chat template's `tojson` writes a dict (what the
    SFT data renders: `{"expression": "37 * 48"}`), whatever spacing the server returned."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _account(episode: Episode, reply) -> None:
    episode.prompt_tokens += reply.prompt_tokens
    episode.completion_tokens += reply.completion_tokens
    episode.seconds += reply.seconds


# ---------------------------------------------------------------------------- ReAct


class ReActAgent:
    """Lagent's `ReAct` agent, run for one task at a time and turned into an `Episode`."""

    def __init__(self, llm: OpenAIChat, action_executor: CheckedExecutor, max_turns: int = 6):
        self.llm, self.executor = llm, action_executor
        self.agent = ReAct(llm=llm, action_executor=action_executor, protocol=ReActProtocol(),
                           max_turn=max_turns)

    def chat(self, question: str, system: str | None = None) -> Episode:
        first_reply = len(self.llm.replies)
        first_call = len(self.executor.calls)
        episode = Episode(answer=None, status="turn_limit")
        message = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": question}]
        started = time.perf_counter()
        try:
            result = self.agent.chat(message)
        except ServerRefused as exc:
            result, episode.status, episode.error = None, "server_error", str(exc)
        for reply in self.llm.replies[first_reply:]:
            _account(episode, reply)
        calls = self.executor.calls[first_call:]
        replies = [r.content for r in self.llm.replies[first_reply:] if not r.error]
        actions = result.actions if result else []
        calls_iter = iter(calls)
        for i, text in enumerate(replies):
            step = Step(reply=text)
            if i < len(actions) and actions[i].type not in (
                    self.executor.finish_action.name, self.executor.no_action.name):
                step.calls = [next(calls_iter)]
            elif i < len(actions) and actions[i].type == self.executor.no_action.name:
                step.error = "no Action / Final Answer in the reply"
            episode.steps.append(step)
        if result and actions and actions[-1].type == self.executor.finish_action.name:
            episode.answer, episode.status = result.response, "answered"
        episode.seconds = max(episode.seconds, 0.0) or time.perf_counter() - started
        return episode


def make_agent(protocol: str, llm: OpenAIChat, actions: list[BaseAction], max_turns: int,
               tools: list[dict[str, Any]] | None = None, echo=None):
    executor = CheckedExecutor(actions, echo)
    if protocol == "react":
        return ReActAgent(llm, executor, max_turns)
    if protocol == "function_calling":
        return FunctionCallingAgent(llm, executor, max_turns, tools)
    raise ValueError(f"protocol: unknown {protocol!r} (react | function_calling)")
