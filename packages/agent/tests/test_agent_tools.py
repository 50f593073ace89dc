"""The tools as Lagent actions: exact calculator, typed-function tools and their schemas, BM25."""
from __future__ import annotations

from fractions import Fraction
from typing import Literal

import pytest
from fullchain.agent.tools import (
    BM25Search,
    FunctionTool,
    calculator,
    exact_value,
    from_openai_tool,
    to_openai_tool,
)
from lagent.actions import ActionExecutor
from lagent.schema import ActionStatusCode


def test_calculator_is_exact_and_executes_nothing():
    assert calculator("(37 * 48) - 259") == "1517"
    assert exact_value("0.1 + 0.2") == Fraction(3, 10)
    assert calculator("1/3 + 1/6") == "1/2 = 0.5"
    assert calculator("2 ** 64") == str(2 ** 64)
    for bad in ("__import__('os').system('true')", "x + 1", "(1).real", "1/0", "2 ** 10**9", "1 +"):
        with pytest.raises(ValueError):
            exact_value(bad)


def forecast(city: str, days: int = 1, unit: Literal["c", "f"] = "c", hours: list[int] | None = None) -> str:
    """Weather forecast for a city.

    Args:
        city: the city's name
        days: how many days ahead
    """
    return f"{city}: sunny for {days} day(s), 20 {unit}"


def test_a_typed_function_becomes_a_tool_for_both_protocols():
    tool = FunctionTool(forecast)
    assert to_openai_tool(tool) == {"type": "function", "function": {
        "name": "forecast", "description": "Weather forecast for a city.",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "the city's name"},
            "days": {"type": "integer", "description": "how many days ahead"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "hours": {"type": "array", "items": {"type": "integer"}}}}}}
    # ReAct: Lagent's executor lists it and runs it from the model's JSON text
    executor = ActionExecutor([tool])
    assert executor.get_actions_info()[0]["name"] == "forecast"
    assert executor("forecast", '{"city": "Oslo", "days": 2}').format_result() == "Oslo: sunny for 2 day(s), 20 c"
    for bad, why in (('{"city": "Oslo", "days": "2"}', "arguments.days: expected integer"),
                     ('{"city": "Oslo", "unit": "k"}', "is not one of ['c', 'f']"),
                     ('{"days": 2}', "missing required argument(s) city"),
                     ('{"city": "Oslo", "when": 1}', "unknown argument(s) when")):
        result = executor("forecast", bad)
        assert result.state == ActionStatusCode.ARGS_ERROR and why in result.errmsg, result.errmsg
    # an OpenAI schema round-trips through Lagent's description unchanged
    assert to_openai_tool(FunctionTool(forecast, description=from_openai_tool(to_openai_tool(tool)))) \
        == to_openai_tool(tool)


def test_bm25_search_finds_the_matching_document():
    documents = ["The cat sat on the mat.", "Python is a programming language with exact fractions.",
                 "BM25 ranks documents by term frequency and inverse document frequency."]
    search = BM25Search(documents, top_k=1)
    assert search.search("programming language")[0][0] == 1
    assert search({"query": "term frequency ranking"}).format_result().startswith("[2] BM25 ranks")
    assert search({"query": "zebra"}).format_result() == "no matching document"
