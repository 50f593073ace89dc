"""Task sets of the agent benchmark and how each is scored.

A task: `id`, `set`, `question`, `answer`, `match` (exact | numeric | text | bfcl), the tools to
offer (`tools`: OpenAI schemas, None: the configured tools), `system`, and for BFCL the
`functions` (BFCL's own docs) and `ground_truth` (its possible answers).

Answers are read from the final text as "The answer is N." (what the tool-use conversations
train), else the last number in it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fullchain.core.artifact import jsonl_objects

SYSTEM_PROMPT = ("You are a careful assistant. Use the tool for every arithmetic step, then give "
                 "the final answer as 'The answer is N.'")
"""For gsm8k and task files: the wording of chat_data's tool-use conversations."""

BFCL_FILES = {"bfcl_simple": "BFCL_v4_simple_python.json", "bfcl_multiple": "BFCL_v4_multiple.json"}


# ---------------------------------------------------------------------------- loading


def _jsonl(path: Path, limit: int) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for row in jsonl_objects(handle, path):
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows


def heldout_tasks(task_set, limit: int) -> list[dict[str, Any]]:
    """chat_data's held-out tool-use tasks (a `ToolTaskSet`): exact answer, the tools and system
    prompt their conversations were trained with."""
    split = "heldout" if "heldout" in task_set.splits else sorted(task_set.splits)[-1]
    tasks = []
    for task in task_set.tasks(split):
        tasks.append({"id": task["id"], "set": "heldout", "question": task["question"],
                      "answer": task["answer"], "match": "exact", "tools": task_set.tools,
                      "system": task_set.system})
        if limit and len(tasks) >= limit:
            break
    return tasks


def gsm8k_tasks(data_dir: Path, limit: int) -> list[dict[str, Any]]:
    path = Path(data_dir) / "gsm8k" / "test.jsonl"
    tasks = []
    for number, record in _jsonl(path, limit):
        answer = str(record.get("answer", "")).rsplit("####", 1)
        if len(answer) != 2 or not isinstance(record.get("question"), str):
            raise ValueError(f"{path}:{number}: expected 'question' and an 'answer' ending in '#### N'")
        tasks.append({"id": f"gsm8k_{number}", "set": "gsm8k", "question": record["question"],
                      "answer": answer[1].strip().replace(",", ""), "match": "numeric",
                      "tools": None, "system": SYSTEM_PROMPT})
    return tasks


def file_tasks(path: str | Path, limit: int) -> list[dict[str, Any]]:
    """`agent.tasks=<file.jsonl>`: `question` and `answer` (a number: numeric match; else the
    final text must equal it, case and surrounding space aside)."""
    tasks = []
    for number, record in _jsonl(Path(path), limit):
        for key in ("question", "answer"):
            if not isinstance(record.get(key), (str, int, float)) or str(record[key]).strip() == "":
                raise ValueError(f"{path}:{number}: '{key}' must be a non-empty string or number")
        answer = str(record["answer"]).strip()
        tasks.append({"id": str(record.get("id", f"file_{number}")), "set": "file",
                      "question": str(record["question"]), "answer": answer,
                      "match": "numeric" if parse_number(answer) is not None else "text",
                      "tools": None, "system": record.get("system") or SYSTEM_PROMPT})
    return tasks


def bfcl_tasks(data_dir: Path, name: str, limit: int) -> list[dict[str, Any]]:
    root = Path(data_dir) / "bfcl-v4"
    questions = _jsonl(root / BFCL_FILES[name], limit)
    answers = {r["id"]: r["ground_truth"] for _, r in _jsonl(root / "possible_answer" / BFCL_FILES[name], 0)}
    tasks = []
    for number, record in questions:
        if record.get("id") not in answers:
            raise ValueError(f"{root / BFCL_FILES[name]}:{number}: no possible answer for {record.get('id')!r}")
        turns = record["question"][0]
        question = next(m["content"] for m in reversed(turns) if m["role"] == "user")
        system = next((m["content"] for m in turns if m["role"] == "system"), None)
        tasks.append({"id": record["id"], "set": name, "question": question, "answer": None,
                      "match": "bfcl", "functions": record["function"],
                      "tools": [bfcl_to_openai(f) for f in record["function"]],
                      "ground_truth": answers[record["id"]], "system": system})
    return tasks


# ---------------------------------------------------------------------------- BFCL schemas

_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "integer": "integer",
               "string": "string", "boolean": "boolean", "array": "array", "any": None}


def openai_name(name: str) -> str:
    """OpenAI function names allow [a-zA-Z0-9_-]: BFCL's `math.hypot` is offered as `math_hypot`."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)


def _schema(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in ("type", "properties", "items", "optional")}
    kind = _BFCL_TYPES.get(node.get("type", "string"), "string")
    if kind:
        out["type"] = kind
    if "properties" in node:
        out["properties"] = {k: _schema(v) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = _schema(node["items"])
    return out


def bfcl_to_openai(function: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function doc as an OpenAI `tools` entry (its "dict"/"float"/"tuple" types mapped to
    JSON schema's object/number/array)."""
    return {"type": "function", "function": {"name": openai_name(function["name"]),
                                             "description": function.get("description", ""),
                                             "parameters": _schema(function["parameters"])}}


# ---------------------------------------------------------------------------- BFCL checker

_STANDARDIZE = re.compile(r"[ ,./\-_*^]")


def _standard(text: str) -> str:
    """BFCL's string rule: case, spaces and the punctuation , . / - _ * ^ do not matter."""
    return _STANDARDIZE.sub("", text).lower()


def _type_ok(value: Any, kind: str | None) -> bool:
    if kind is None or kind == "any":
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":  # an integer where a float is wanted is accepted
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("array", "tuple"):
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    return True


def _same(value: Any, possible: Any, doc: dict[str, Any]) -> bool:
    """One given value against one possible value (the doc's type decides how)."""
    if isinstance(possible, str) and isinstance(value, str):
        return _standard(value) == _standard(possible)
    if isinstance(possible, list) and isinstance(value, list):
        item_doc = doc.get("items", {})
        return len(value) == len(possible) and all(_same(v, p, item_doc) for v, p in zip(value, possible))
    if isinstance(possible, dict) and isinstance(value, dict):
        properties = doc.get("properties", {})
        for key, options in possible.items():
            options = options if isinstance(options, list) else [options]
            if key not in value:
                if "" not in options:
                    return False
                continue
            if not any(_same(value[key], option, properties.get(key, {})) for option in options):
                return False
        return all(key in possible for key in value)
    if isinstance(value, bool) or isinstance(possible, bool):
        return value is possible
    if isinstance(possible, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(possible)
    return value == possible


def bfcl_check(calls: list[tuple[str, Any]], functions: list[dict[str, Any]],
               ground_truth: list[dict[str, Any]]) -> tuple[bool, str]:
    """BFCL's AST match for simple / multiple categories: exactly the expected number of calls;
    each names the expected function; every required parameter is there and no parameter the
    function (or the possible answer) lacks; every value has the documented type and equals one
    of the possible values (strings compared without case, spaces and , . / - _ * ^; an int
    accepted for a float; lists in order); a parameter left out must have "" among its possible
    values. (True, "") or (False, why)."""
    if len(calls) != len(ground_truth):
        return False, f"expected {len(ground_truth)} call(s), got {len(calls)}"
    docs = {openai_name(f["name"]): f for f in functions}
    for (name, arguments), expected in zip(calls, ground_truth):
        (want_name, possible), = expected.items()
        if name != openai_name(want_name):
            return False, f"called {name!r}, expected {openai_name(want_name)!r}"
        if not isinstance(arguments, dict):
            return False, f"arguments are not a JSON object: {str(arguments)[:80]}"
        params = docs[name]["parameters"]
        properties = params.get("properties", {})
        for key in params.get("required", []):
            if key not in arguments:
                return False, f"missing required parameter {key!r}"
        for key, value in arguments.items():
            if key not in properties or key not in possible:
                return False, f"unexpected parameter {key!r}"
            kind = properties[key].get("type")
            if not _type_ok(value, kind):
                return False, f"{key}: {value!r} is not of type {kind}"
            if not any(_same(value, option, properties[key]) for option in possible[key]):
                return False, f"{key}: {value!r} is not one of {possible[key]}"
        for key, options in possible.items():
            if key not in arguments and "" not in options:
                return False, f"missing parameter {key!r}"
    return True, ""


# ---------------------------------------------------------------------------- answers

ANSWER = re.compile(r"answer is\s*[:$]?\s*(-?[\d,]*\.?\d+)", re.I)
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def extract_answer(text: str | None) -> str | None:
    """N of the last "The answer is N", else the last number in the text (commas dropped)."""
    if not text:
        return None
    found = ANSWER.findall(text) or NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def parse_number(text: str | None) -> float | None:
    try:
        return float(str(text).replace(",", "").strip())
    except (TypeError, ValueError):
        return None


def score(task: dict[str, Any], answer: str | None, calls: list[tuple[str, Any]]) -> tuple[bool, str]:
    """(correct, why not) for one finished task."""
    if task["match"] == "bfcl":
        return bfcl_check(calls, task["functions"], task["ground_truth"])
    if answer is None:
        return False, "no answer"
    if task["match"] == "text":
        final = re.split(r"answer is\s*:?", answer, flags=re.I)[-1].strip().rstrip(".").strip()
        ok = final.lower() == task["answer"].lower() or answer.strip().lower() == task["answer"].lower()
        return ok, "" if ok else f"answered {final[:60]!r}"
    got = extract_answer(answer)
    if task["match"] == "exact":
        return got == task["answer"], "" if got == task["answer"] else f"answered {got!r}"
    value, want = parse_number(got), parse_number(task["answer"])
    ok = value is not None and want is not None and abs(value - want) <= 1e-6 * max(1.0, abs(want))
    return ok, "" if ok else f"answered {got!r}"
