"""The agent's tools, as Lagent actions (`lagent.actions.BaseAction`, its extension point).

- `FunctionTool(fn)`: any typed Python function becomes a tool; its JSON schema comes from the
  signature (types, defaults) and the Google-style docstring (griffe, the parser Lagent uses), and
  its arguments are checked against that schema (`SchemaParser`, a Lagent parser) before the
  function runs. Both protocols use it: ReAct through Lagent's `ActionExecutor` prompt, function
  calling through `to_openai_tool(action)`.
- `calculator`: exact arithmetic (`ast` whitelist over `fractions.Fraction`; nothing is executed).
- `SandboxedPython`: code run in the sandbox (`fullchain.agent.sandbox`).
- `BM25Search`: BM25 (`bm25s`) over a local document collection (the data stage's corpus).
"""
from __future__ import annotations

import ast
import inspect
import json
import operator
import types
import typing
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from fullchain.agent.sandbox import Sandbox
from griffe import Docstring, DocstringSectionKind
from lagent.actions import BaseAction
from lagent.actions.parser import JsonParser, ParseError
from lagent.schema import ActionReturn, ActionStatusCode

# ---------------------------------------------------------------------------- schemas

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               dict: "object"}
# Lagent's own type names in its ReAct tool description.
_LAGENT_TYPES = {"string": "STRING", "integer": "NUMBER", "number": "FLOAT", "boolean": "BOOLEAN",
                 "array": "Array", "object": "OBJECT"}


def json_schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON schema of a parameter's type hint (str, int, float, bool, list[X], dict,
    Literal[...], X | None)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return json_schema_of(args[0])
    if origin is typing.Literal:
        return {"type": _JSON_TYPES[type(args[0])], "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return json_schema_of(rest[0])
        return {"anyOf": [json_schema_of(a) for a in rest]}
    if origin in (list, tuple, set) or annotation in (list, tuple):
        schema: dict[str, Any] = {"type": "array"}
        if args:
            schema["items"] = json_schema_of(args[0])
        return schema
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    raise TypeError(f"unsupported parameter type {annotation!r} (use str, int, float, bool, "
                    "list, dict, Literal or Optional of these)")


def function_description(fn: Callable, name: str | None = None) -> dict[str, Any]:
    """Lagent's tool description of `fn` plus `json_schema` (OpenAI's `parameters` object)."""
    docs = Docstring(inspect.getdoc(fn) or "").parse("google")
    summary = next((s.value for s in docs if s.kind is DocstringSectionKind.text), "")
    arg_docs = {p.name: p.description for s in docs if s.kind is DocstringSectionKind.parameters
                for p in s.value}
    hints = typing.get_type_hints(fn, include_extras=True)
    properties, required, lagent_params = {}, [], []
    for param in inspect.signature(fn).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = json_schema_of(hints.get(param.name, param.annotation))
        if arg_docs.get(param.name):
            schema["description"] = arg_docs[param.name]
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        lagent_params.append({"name": param.name,
                              "type": _LAGENT_TYPES.get(schema.get("type", "string"), "STRING"),
                              "description": schema.get("description", "")})
    if not summary:
        raise ValueError(f"{name or fn.__name__}: a tool needs a docstring (its description)")
    return {"name": name or fn.__name__, "description": summary.strip(), "parameters": lagent_params,
            "required": required,
            "json_schema": {"type": "object", "properties": properties, "required": required}}


def to_openai_tool(action: BaseAction) -> dict[str, Any]:
    """The OpenAI `tools` entry of a Lagent action (the one translation between the two)."""
    desc = action.description
    schema = desc.get("json_schema")
    if schema is None:  # a plain Lagent action: its own parameter list, types mapped back
        back = {v: k for k, v in _LAGENT_TYPES.items()}
        schema = {"type": "object", "required": list(desc.get("required", [])),
                  "properties": {p["name"]: {"type": back.get(p.get("type"), "string"),
                                             "description": p.get("description", "")}
                                 for p in desc.get("parameters", [])}}
    return {"type": "function", "function": {"name": desc["name"], "description": desc["description"],
                                             "parameters": schema}}


def check_arguments(arguments: Any, schema: dict[str, Any], where: str = "arguments") -> list[str]:
    """Why `arguments` do not match the JSON schema `schema` (empty: they do)."""
    problems = []
    expected = schema.get("type")
    if "anyOf" in schema:
        if all(check_arguments(arguments, s, where) for s in schema["anyOf"]):
            problems.append(f"{where}: {arguments!r} matches none of the allowed types")
        return problems
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "array": list, "object": dict}
    if expected in ("dict",):  # BFCL writes "dict" for object
        expected = "object"
    if expected in kinds:
        ok = isinstance(arguments, kinds[expected])
        if expected in ("integer", "number") and isinstance(arguments, bool):
            ok = False
        if not ok:
            return [f"{where}: expected {expected}, got {type(arguments).__name__} {arguments!r}"]
    if "enum" in schema and arguments not in schema["enum"]:
        problems.append(f"{where}: {arguments!r} is not one of {schema['enum']}")
    if expected == "object" and isinstance(arguments, dict):
        properties = schema.get("properties", {})
        missing = [k for k in schema.get("required", []) if k not in arguments]
        extra = [k for k in arguments if properties and k not in properties]
        if missing:
            problems.append(f"{where}: missing required argument(s) {', '.join(missing)}")
        if extra:
            problems.append(f"{where}: unknown argument(s) {', '.join(extra)}")
        for key, value in arguments.items():
            if key in properties:
                problems += check_arguments(value, properties[key], f"{where}.{key}")
    if expected == "array" and isinstance(arguments, list) and "items" in schema:
        for i, item in enumerate(arguments):
            problems += check_arguments(item, schema["items"], f"{where}[{i}]")
    return problems


class SchemaParser(JsonParser):
    """Lagent's JSON argument parser, plus a check of every value against the tool's JSON schema
    (missing, unknown and mistyped arguments are a `ParseError`: an error observation)."""

    def parse_inputs(self, inputs: str | dict, name: str = "run") -> dict:
        if isinstance(inputs, str):
            try:
                inputs = json.loads(inputs)
            except json.JSONDecodeError as exc:
                raise ParseError(f"arguments are not valid JSON ({exc.msg} at char {exc.pos}): "
                                 f"{inputs[:200]}") from None
        if not isinstance(inputs, dict):
            raise ParseError(f"arguments must be a JSON object, got {type(inputs).__name__}")
        schema = to_openai_tool(self.action)["function"]["parameters"]
        problems = check_arguments(inputs, schema)
        if problems:
            raise ParseError("; ".join(problems))
        return inputs


class FunctionTool(BaseAction):
    """A Lagent action made from a typed Python function (see `function_description`)."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None,
                 description: dict[str, Any] | None = None):
        self._fn = fn
        super().__init__(description or function_description(fn, name), parser=SchemaParser)

    def run(self, **kwargs):
        """Call the function."""
        return self._fn(**kwargs)


# ---------------------------------------------------------------------------- calculator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
MAX_EXPONENT = 1000
"""`a ** b` with |b| above this is refused (exact powers grow without bound)."""


def exact_value(expression: str) -> Fraction:
    """The exact value of an arithmetic expression: numbers (decimals are exact: 0.1 is 1/10),
    + - * / // % **, parentheses, unary minus. Anything else (names, calls, attributes) is
    refused; nothing is executed."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(Decimal(repr(node.value)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            base, exponent = walk(node.left), walk(node.right)
            if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
                raise ValueError(f"exponent {exponent} is not an integer in ±{MAX_EXPONENT}")
            return base ** int(exponent)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if right == 0 and not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
                raise ValueError("division by zero")
            return Fraction(_BINARY[type(node.op)](left, right))
        raise ValueError(f"only numbers, + - * / // % ** and parentheses are allowed "
                         f"(found {type(node).__name__})")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    try:
        return walk(tree)
    except InvalidOperation:
        raise ValueError("not a finite number") from None


def format_number(value: Fraction) -> str:
    """`2035`, or `7/2 = 3.5` (a fraction with its decimal value, 12 significant digits)."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value} = {float(value):.12g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression of integers with + - * / and parentheses; returns the exact result.

    Args:
        expression: e.g. (37 * 48) - 259
    """
    return format_number(exact_value(expression))


# ---------------------------------------------------------------------------- python


class SandboxedPython(FunctionTool):
    """The `python` tool: runs code in a fresh sandboxed process and returns what it printed."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox

        def python(code: str) -> str:
            """Run Python code and return what it prints.

            Args:
                code: e.g. print(37 * 48)
            """
            result = sandbox.run(code)
            if not result.ok:
                return ActionReturn(args={"code": code}, type="python", result=None,
                                    errmsg=f"{result.error}\n{result.output[-1000:]}".strip(),
                                    state=ActionStatusCode.API_ERROR)
            return result.output.rstrip("\n") or "(the code printed nothing; use print())"

        super().__init__(python)


# ---------------------------------------------------------------------------- retrieval


class BM25Search(FunctionTool):
    """The `search` tool: BM25 (bm25s) over a local collection of documents."""

    def __init__(self, documents: Iterable[str], top_k: int = 3, max_chars: int = 400):
        import bm25s

        self.documents = [d for d in documents if d.strip()]
        if not self.documents:
            raise ValueError("retrieval: the document collection is empty")
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(self.documents, stopwords="en", show_progress=False),
                         show_progress=False)
        self.top_k, self.max_chars = min(top_k, len(self.documents)), max_chars

        def search(query: str) -> str:
            """Search the local document collection; returns the best matching passages.

            Args:
                query: words to look for
            """
            hits = self.search(query)
            if not hits:
                return "no matching document"
            return "\n".join(f"[{i}] {self.documents[i][:self.max_chars]}" for i, _ in hits)

        super().__init__(search)

    def search(self, query: str) -> list[tuple[int, float]]:
        """(document index, BM25 score) of the best matches, best first."""
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        ids, scores = self.index.retrieve(tokens, k=self.top_k, show_progress=False)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]


def documents_from_packed_corpus(corpus, limit: int = 2000) -> list[str]:
    """Up to `limit` documents of a packed corpus (`contracts.read_packed_corpus`), decoded with
    its tokenizer: the data stage's cleaned text, through its contract."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(corpus.tokenizer_dir))
    documents = []
    for split in corpus.splits.values():
        for prefix in split.prefixes:
            dataset = IndexedDataset(prefix)
            for i in range(len(dataset)):
                if len(documents) >= limit:
                    return documents
                ids = [t for t in dataset[i].tolist() if t not in (corpus.eod_id, corpus.pad_id)]
                documents.append(tokenizer.decode(ids, skip_special_tokens=True))
    return documents


def from_openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Lagent's description of an OpenAI `tools` entry (the inverse of `to_openai_tool`): the
    schema is kept whole, so what the model is shown and what the arguments are checked against
    are the same object."""
    function = tool["function"]
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    params = [{"name": name, "type": _LAGENT_TYPES.get(spec.get("type", "string"), "STRING"),
               "description": spec.get("description", "")}
              for name, spec in schema.get("properties", {}).items()]
    return {"name": function["name"], "description": function.get("description", ""),
            "parameters": params, "required": list(schema.get("required", [])), "json_schema": schema}


def declared_tool(tool: dict[str, Any], fn: Callable[..., Any] | None = None) -> FunctionTool:
    """An action for an OpenAI tool schema, running `fn` (default: none to run; the call is
    recorded and answered "ok": BFCL scores the call itself)."""
    return FunctionTool(fn or (lambda **_: "ok"), description=from_openai_tool(tool))


_KEY_ORDER = ("type", "function", "name", "description", "enum", "properties", "items", "required")


def canonical_tool(value: Any) -> Any:
    """A tool schema with its keys in OpenAI's documented order (type, function; name,
    description, parameters; type, description, properties, items, required), recursively.
    The chat template renders the schema with `tojson`, which keeps key order, so this is the
    text the SFT conversations trained on even when a file stored it with sorted keys."""
    if isinstance(value, list):
        return [canonical_tool(v) for v in value]
    if not isinstance(value, dict):
        return value
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    keys = sorted(value, key=lambda k: (rank.get(k, len(_KEY_ORDER)), list(value).index(k)))
    if "parameters" in value:  # name, description, parameters (then anything else)
        keys = [k for k in keys if k != "parameters"]
        keys.insert(min(len(keys), sum(k in ("name", "description") for k in value)), "parameters")
    return {k: value[k] if k in ("enum", "required")
            else {name: canonical_tool(v) for name, v in value[k].items()}  # parameter names stay
            if k == "properties" and isinstance(value[k], dict) else canonical_tool(value[k])
            for k in keys}
