"""The synthetic tool-use task: deterministic, held-out wordings never trained on, every answer
recomputed here from its expression (our own `ast` walk over Fractions, no eval), every tool
call's result checked, and the python tool's code run by a real Python."""
from __future__ import annotations

import ast
import json
import operator
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction

import pytest
from fullchain.data.chat.config import ToolUseConfig
from fullchain.data.chat.tool_use import (
    CLOSINGS,
    FAMILIES,
    ITEMS,
    NAMES,
    OPENINGS,
    conversation,
    evaluate,
    generate,
)

CONFIG = ToolUseConfig(train_tasks=400, heldout_tasks=100)


def _leaves(tree) -> list[str]:
    return [tree] if isinstance(tree, str) else _leaves(tree[1]) + _leaves(tree[2])


CONSTANTS = {f.name: [int(leaf) for leaf in _leaves(f.tree) if leaf.isdigit()] for f in FAMILIES}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def exact(expression: str) -> Fraction:
    """The test's own evaluator: integers and + - * / only."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        raise AssertionError(f"not plain arithmetic: {ast.dump(node)}")
    return walk(ast.parse(expression, mode="eval"))


@pytest.fixture(scope="module")
def tasks():
    return generate(CONFIG, seed=1234)


def test_same_seed_same_bytes_other_seed_other_tasks(tasks):
    again = generate(CONFIG, seed=1234)

    def dump(split):
        return "".join(json.dumps(conversation(t, "calculator")) + "\n" for t in split)

    assert dump(tasks["train"]) + dump(tasks["heldout"]) == dump(again["train"]) + dump(again["heldout"])
    other = generate(CONFIG, seed=99)
    assert [t["question"] for t in other["train"]] != [t["question"] for t in tasks["train"]]


def test_every_answer_is_recomputed_from_its_expression(tasks):
    for task in tasks["train"] + tasks["heldout"]:
        value = exact(task["expression"])
        assert value.denominator == 1 and value > 0, task
        assert task["answer"] == str(value.numerator), task
        assert re.fullmatch(r"\d+", task["answer"])  # plain digits, no separators
        # the question states exactly the expression's operands, the family's unit factors aside
        stated = Counter(int(n) for n in re.findall(r"\d+", task["question"]))
        operands = Counter(int(n) for n in re.findall(r"\d+", task["expression"]))
        assert stated == operands - Counter(CONSTANTS[task["family"]]), task


def test_each_tool_call_returns_its_value_and_the_last_turn_states_the_answer(tasks):
    for task in tasks["train"][:100] + tasks["heldout"]:
        record = conversation(task, "calculator")
        messages = record["messages"]
        assert messages[0]["role"] == "system" and messages[1] == {"role": "user", "content": task["question"]}
        calls = [m for m in messages if m.get("tool_calls")]
        results = [m for m in messages if m["role"] == "tool"]
        assert len(calls) == len(results) == task["steps"] >= 2
        for call, result in zip(calls, results):
            expression = call["tool_calls"][0]["function"]["arguments"]["expression"]
            assert str(exact(expression).numerator) == result["content"] and exact(expression).denominator == 1
        assert results[-1]["content"] == task["answer"]
        assert messages[-1] == {"role": "assistant", "content": f"The answer is {task['answer']}."}
        assert record["tools"][0]["function"]["name"] == "calculator"


def test_python_tool_code_runs_to_the_recorded_results(tasks):
    calls, expected = [], []
    for task in tasks["heldout"]:
        messages = conversation(task, "python")["messages"]
        for i, message in enumerate(messages):
            if message.get("tool_calls"):
                calls.append(message["tool_calls"][0]["function"]["arguments"]["code"])
                expected.append(messages[i + 1]["content"])
    assert all(re.fullmatch(r"print\([\d +*/-]+\)", code) for code in calls)  # plain arithmetic only
    printed = subprocess.run([sys.executable, "-c", "\n".join(calls)], capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
    assert printed == expected


def skeleton(question: str) -> str:
    """A question with its numbers, names and items blanked: what is left is the wording."""
    text = re.sub(r"\d+", "#", question)
    return re.sub(r"\b(" + "|".join(NAMES + ITEMS) + r")\b", "_", text)


def parts(question: str) -> tuple[str, str, str]:
    """(opening, wording, closing) of a question's skeleton: the opening and closing sentences the
    generator puts around a wording split off ("" where there is none)."""
    text = skeleton(question)
    opening = next((o for o in sorted({skeleton(o.format(asker=NAMES[0])) for o in OPENINGS}, key=len, reverse=True)
                    if o and text.startswith(o)), "")
    closing = next((c for c in sorted(set(CLOSINGS), key=len, reverse=True) if c and text.endswith(c)), "")
    return opening, text[len(opening): len(text) - len(closing)], closing


def frame(question: str) -> str:
    """The skeleton without the opening and closing sentences the generator puts around a wording."""
    return parts(question)[1]


def test_heldout_wordings_never_occur_in_training(tasks):
    train = {frame(t["question"]) for t in tasks["train"]}
    unseen = [t for t in tasks["heldout"] if not t["wording_seen"]]
    seen = [t for t in tasks["heldout"] if t["wording_seen"]]
    assert len(unseen) == 50 and len(seen) == 50
    assert {t["family"] for t in unseen} == {f.name for f in FAMILIES}  # every family has one
    assert not {frame(t["question"]) for t in unseen} & train
    assert {frame(t["question"]) for t in seen} <= train  # the check can fail: seen ones do match
    # 2 of each family's 10-11 wordings are held out, and none of them is a training wording's copy
    assert len({t["wording"] for t in unseen}) == 2 * len(FAMILIES)
    assert len(train) == sum(len(f.wordings) for f in FAMILIES) - 2 * len(FAMILIES)


def test_openings_and_closings_vary_where_the_numbers_stand(tasks):
    openings = Counter(parts(t["question"])[0] for t in tasks["train"])
    assert len(openings) == len(set(OPENINGS))  # every opening occurs, the empty one too
    assert 0.15 < openings[""] / len(tasks["train"]) < 0.40
    wording = Counter(t["wording"] for t in tasks["train"]).most_common(1)[0][0]
    first_number = Counter(re.search(r"\d", t["question"]).start() for t in tasks["train"] if t["wording"] == wording)
    assert len(first_number) >= 5  # one wording, its first operand at many character offsets
    assert not {t["question"] for t in tasks["heldout"]} & {t["question"] for t in tasks["train"]}


def test_many_wordings_and_operand_orders(tasks):
    wordings = {t["wording"] for t in tasks["train"]}
    assert len(wordings) == sum(len(f.wordings) for f in FAMILIES) - 2 * len(FAMILIES) >= 60
    assert len({t["family"] for t in tasks["train"]}) == len(FAMILIES)
    # some wordings state the operands in another order than the expression uses them
    reordered = [t for t in tasks["train"]
                 if [int(n) for n in re.findall(r"\d+", t["question"])]
                 != [int(n) for n in re.findall(r"\d+", t["expression"]) if n in re.findall(r"\d+", t["question"])]]
    assert len({t["wording"] for t in reordered}) >= 5


@pytest.mark.parametrize("expression", ["__import__('os').getcwd()", "2 ** 10", "1.5 * 2", "x + 1", "abs(-3)"])
def test_evaluate_refuses_anything_but_integer_arithmetic(expression):
    with pytest.raises(ValueError, match="only integers"):
        evaluate(expression)


def test_evaluate_is_exact():
    assert evaluate("(631 + 244) / 7") == 125 and evaluate("1 / 3") == Fraction(1, 3)
    with pytest.raises(ValueError, match="division by zero"):
        evaluate("5 / (3 - 3)")


def test_schema_fraction_keeps_the_schema_in_a_seeded_share_of_training_conversations(tasks):
    from fullchain.data.chat.tool_use import TOOLS, shows_schema

    with pytest.raises(ValueError, match=r"^schema_fraction:"):
        ToolUseConfig(schema_fraction=0.0)
    cfg = ToolUseConfig(schema_fraction=0.25)
    ids = [t["id"] for t in tasks["train"]]
    shown = [shows_schema(i, cfg, 1234) for i in ids]
    assert shown == [shows_schema(i, cfg, 1234) for i in ids]  # seeded: the same every time
    assert 0.15 < sum(shown) / len(shown) < 0.35
    assert all(shows_schema(i, ToolUseConfig(), 1234) for i in ids)  # the default: all of them
    task = tasks["train"][0]
    with_schema, without = conversation(task, "calculator"), conversation(task, "calculator", False)
    assert with_schema["tools"] == [TOOLS["calculator"]] and "tools" not in without
    assert with_schema["messages"] == without["messages"]


def test_first_call_fraction_cuts_a_seeded_share_of_training_conversations_after_the_first_call(tasks):
    from fullchain.data.chat.tool_use import first_call_only

    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"^first_call_fraction:"):
            ToolUseConfig(first_call_fraction=bad)
    cfg = ToolUseConfig(first_call_fraction=0.6)
    ids = [t["id"] for t in tasks["train"]]
    cut = [first_call_only(i, cfg, 1234) for i in ids]
    assert cut == [first_call_only(i, cfg, 1234) for i in ids] and 0.5 < sum(cut) / len(cut) < 0.7
    assert not any(first_call_only(i, ToolUseConfig(), 1234) for i in ids)  # the default: none
    task = tasks["train"][0]
    whole, short = conversation(task, "calculator"), conversation(task, "calculator", first_call_only=True)
    assert [m["role"] for m in short["messages"]] == ["system", "user", "assistant"]
    assert short["messages"] == whole["messages"][:3] and short["messages"][2]["tool_calls"]
