"""Scoring one reply to a tool-use task (stdlib only; the OpenCompass evaluator calls these).

A task (chat_data's tool_tasks contract) is a word problem whose exact answer needs the tool; its
reference solution calls the tool once per operation, innermost first. A reply is scored on:

- format validity: it holds a `<tool_call>` whose JSON parses and names a declared tool with
  exactly the argument names that tool requires;
- exact expression: that call's expression (calculator `expression`, or python `code` of the
  form `print(...)`) has the right operands and operators: its normalized AST equals the task's
  whole expression or the first step of the reference solution. Normalized: numbers as exact
  values, `//` as `/` (the python tool's integer division), parentheses only where the tree has
  them (ast does that), nothing else rewritten: `3 * 4` and `4 * 3` differ.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Any

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "/"}


def normalize(expression: str) -> Any:
    """A nested tuple for an arithmetic expression (None if it is not one)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ("n", node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = walk(node.operand)
            return ("n", -inner[1]) if inner and inner[0] == "n" else ("neg", inner)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return (_OPS[type(node.op)], walk(node.left), walk(node.right))
        raise ValueError(ast.dump(node))

    try:
        return walk(tree)
    except ValueError:
        return None


def first_step(expression: str) -> str | None:
    """The operation the reference solution computes first: the leftmost operation whose two
    operands are numbers (post-order, as chat_data's solutions go innermost first)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> ast.AST | None:
        if isinstance(node, ast.BinOp):
            found = walk(node.left) or walk(node.right)
            if found is not None:
                return found
            if isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant):
                return node
        return None

    node = walk(tree)
    return ast.unparse(node) if node is not None else None


def tool_schemas(tools: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Declared tool name -> its required argument names (all properties if none required)."""
    out = {}
    for tool in tools:
        function = tool.get("function", tool)
        parameters = function.get("parameters") or {}
        out[function["name"]] = set(parameters.get("required") or parameters.get("properties") or [])
    return out


def parse_call(reply: str, tools: dict[str, set[str]]) -> tuple[dict[str, Any] | None, str]:
    """The first tool call in `reply` if it is well-formed, else None and why not."""
    match = TOOL_CALL.search(reply or "")
    if match is None:
        return None, "no <tool_call>"
    try:
        call = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None, "tool call JSON does not parse"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None, "tool call has no name"
    if call["name"] not in tools:
        return None, f"unknown tool {call['name']!r}"
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None, "arguments string does not parse"
    if not isinstance(arguments, dict) or set(arguments) != tools[call["name"]]:
        return None, f"arguments {sorted(arguments) if isinstance(arguments, dict) else arguments!r} " \
                     f"!= {sorted(tools[call['name']])}"
    return {"name": call["name"], "arguments": arguments}, "ok"


def call_expression(call: dict[str, Any]) -> str | None:
    """The arithmetic a call asks for: calculator `expression`, or python `print(<expr>)`."""
    arguments = call["arguments"]
    if isinstance(arguments.get("expression"), str):
        return arguments["expression"]
    code = arguments.get("code")
    if isinstance(code, str):
        match = re.fullmatch(r"\s*print\((.*)\)\s*", code, re.DOTALL)
        return match.group(1) if match else None
    return None


def score_reply(reply: str, expression: str, tools: dict[str, set[str]]) -> dict[str, Any]:
    """{format_valid, exact_expression, reason} for one reply."""
    call, reason = parse_call(reply, tools)
    if call is None:
        return {"format_valid": False, "exact_expression": False, "reason": reason}
    asked = call_expression(call)
    got = normalize(asked) if asked is not None else None
    targets = {normalize(expression)}
    step = first_step(expression)
    if step is not None:
        targets.add(normalize(step))
    exact = got is not None and got in targets
    return {"format_valid": True, "exact_expression": exact,
            "reason": "ok" if exact else f"expression {asked!r} != {expression!r} or its first step {step!r}"}
