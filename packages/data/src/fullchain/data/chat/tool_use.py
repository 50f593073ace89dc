"""The synthetic tool-use task: word problems whose exact answer needs a calculator (or Python).

Eight problem families (multi-step arithmetic and unit conversion), each an expression tree over
named operands and 10-11 wordings that mention the operands in different orders and sentence
shapes. A task is one wording filled with drawn operands (and a person's name and a kind of item)
between an opening and a closing drawn from small shared pools (so an operand's position varies
even within a wording), with its expression (`(37 * 48) - 259`) and its exact answer. Its SFT
conversation calls the tool once per operation of the expression, innermost first, each call
followed by the tool's result, then answers `The answer is 2035.`

Splits: per family, `heldout_wordings` wordings (drawn by the seed) never appear in training.
The held-out split is half tasks in those wordings and half tasks in training wordings with new
operands; no held-out question equals a training question. Numbers are plain digits (no
separators): the model will see digits tokenized one by one.

Deterministic: the same config and seed give the same tasks in the same order (one
`random.Random(seed)` drawn in a fixed order). Answers are exact integers: operands are drawn so
that every division is exact and every difference positive, and every answer is recomputed from
its expression string by `evaluate` (Python's `ast` with a whitelist, `fractions.Fraction`).
"""
from __future__ import annotations

import ast
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from fullchain.data.chat.config import ToolUseConfig

Tree = str | tuple  # an operand name, or (operator, left, right)

SYSTEM_PROMPT = ("You are a careful assistant. Use the tool for every arithmetic step, then give "
                 "the final answer as 'The answer is N.'")

CALCULATOR = {"type": "function", "function": {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression of integers with + - * / and parentheses; "
                   "returns the exact result.",
    "parameters": {"type": "object", "properties": {
        "expression": {"type": "string", "description": "e.g. (37 * 48) - 259"}},
        "required": ["expression"]}}}
PYTHON = {"type": "function", "function": {
    "name": "python",
    "description": "Run Python code and return what it prints.",
    "parameters": {"type": "object", "properties": {
        "code": {"type": "string", "description": "e.g. print(37 * 48)"}},
        "required": ["code"]}}}
TOOLS = {"calculator": CALCULATOR, "python": PYTHON}

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jia", "Kofi", "Lena",
         "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tomas"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "cookies", "books", "shells", "stamps", "cards",
         "beads"]


# ---------------------------------------------------------------------------- expressions

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression (integers, + - * /, parentheses, unary minus);
    anything else (names, calls, powers, floats) is refused, nothing is executed."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            op = _OPS[type(node.op)]
            if op == "+":
                return left + right
            if op == "-":
                return left - right
            if op == "*":
                return left * right
            if right == 0:
                raise ValueError(f"{expression!r}: division by zero")
            return left / right
        raise ValueError(f"{expression!r}: only integers, + - * / and parentheses are allowed "
                         f"(found {type(node).__name__})")

    return walk(ast.parse(expression, mode="eval"))


def render(tree: Tree, values: dict[str, int], top: bool = True) -> str:
    """`(37 * 48) - 259`: the tree with operands filled in, inner operations parenthesised."""
    if isinstance(tree, str):
        return str(values[tree])
    op, left, right = tree
    text = f"{render(left, values, False)} {op} {render(right, values, False)}"
    return text if top else f"({text})"


def number(value: Fraction) -> str:
    if value.denominator != 1:
        raise ValueError(f"{value} is not an integer")
    return str(value.numerator)


def steps_of(tree: Tree, values: dict[str, int]) -> tuple[list[tuple[str, Fraction]], Fraction]:
    """The operations innermost first, each as (`37 * 48` with earlier results filled in, value)."""
    if isinstance(tree, str):
        return [], Fraction(values[tree])
    op, left, right = tree
    left_steps, a = steps_of(left, values)
    right_steps, b = steps_of(right, values)
    expression = f"{number(a)} {op} {number(b)}"
    return left_steps + right_steps + [(expression, evaluate(expression))], evaluate(expression)


# ---------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    name: str
    tree: Tree
    draw: Callable[[random.Random, int], dict[str, int]]
    """Operands (exact division, positive differences guaranteed by construction)."""
    wordings: tuple[str, ...]


def _share(rng: random.Random, top: int) -> dict[str, int]:
    c = rng.randint(2, 12)
    total = c * rng.randint(2, max(2, top // c))
    a = rng.randint(1, total - 1)
    return {"a": a, "b": total - a, "c": c}


def _minus(rng: random.Random, top: int) -> dict[str, int]:
    a, b = rng.randint(2, min(top, 99)), rng.randint(2, min(top, 99))
    return {"a": a, "b": b, "c": rng.randint(1, min(a * b - 1, top))}


FAMILIES: tuple[Family, ...] = (
    Family("product_plus", ("+", ("*", "a", "b"), "c"),
           lambda rng, top: {"a": rng.randint(2, min(top, 99)), "b": rng.randint(2, min(top, 99)),
                             "c": rng.randint(2, top)},
           ("What is {a} times {b} plus {c}?",
            "Compute {a} multiplied by {b}, then add {c}.",
            "Add {c} to the product of {a} and {b}. What do you get?",
            "{name} packs {a} boxes with {b} {items} in each and has {c} loose {items}. How many {items} "
            "are there in total?",
            "If you start with {c} and add {a} groups of {b}, what is the total?",
            "There are {a} rows of {b} chairs and {c} extra chairs. How many chairs are there?",
            "{name} has {c} {items} and then buys {a} bags of {b} {items} each. How many {items} does "
            "{name} have now?",
            "Find the product of {a} and {b}, and increase it by {c}.",
            "What do you get when {a} is multiplied by {b} and {c} is added?",
            "A library has {a} shelves with {b} books on each, plus {c} books on a cart. How many books "
            "are there?",
            "Multiply {a} by {b} and add {c} to the result.")),
    Family("product_minus", ("-", ("*", "a", "b"), "c"), _minus,
           ("What is {a} times {b} minus {c}?",
            "{name} buys {a} packs of {b} {items} and gives away {c}. How many {items} are left?",
            "Subtract {c} from the product of {a} and {b}.",
            "Take {c} away from {a} multiplied by {b}. What remains?",
            "A shop has {a} crates holding {b} {items} each. After selling {c} {items}, how many are "
            "left?",
            "Multiply {a} by {b}, then subtract {c}.",
            "What is {c} less than the product of {a} and {b}?",
            "{name} had {a} boxes of {b} {items} but lost {c} of them. How many {items} remain?",
            "Find {a} multiplied by {b}, and decrease it by {c}.",
            "A theater has {a} rows of {b} seats, and {c} seats are taken. How many seats are free?")),
    Family("share", ("/", ("+", "a", "b"), "c"), _share,
           ("What is {a} plus {b}, divided by {c}?",
            "{name} has {a} {items} and finds {b} more, then shares them equally among {c} friends. "
            "How many does each friend get?",
            "Divide the sum of {a} and {b} by {c}.",
            "{c} people split {a} dollars and another {b} dollars evenly. How many dollars does each "
            "person get?",
            "Add {a} and {b}, then divide the result by {c}.",
            "The sum of {a} and {b} is shared equally by {c} teams. How much does each team get?",
            "{name} collects {a} {items} on Monday and {b} on Tuesday and packs them into {c} equal "
            "bags. How many {items} go in each bag?",
            "What is the total of {a} and {b} split into {c} equal parts?",
            "A class of {c} students shares {a} red and {b} blue {items} equally. How many does each "
            "student get?",
            "Put {a} and {b} together and divide by {c}.")),
    Family("two_products", ("+", ("*", "a", "b"), ("*", "c", "d")),
           lambda rng, top: {k: rng.randint(2, min(top, 99)) for k in "abcd"},
           ("What is {a} times {b} plus {c} times {d}?",
            "{name} buys {a} tickets at {b} dollars each and {c} meals at {d} dollars each. How many "
            "dollars is that in total?",
            "Add the product of {a} and {b} to the product of {c} and {d}.",
            "A farm has {a} pens of {b} sheep and {c} pens of {d} goats. How many animals live on the "
            "farm?",
            "Compute {a} multiplied by {b}, plus {c} multiplied by {d}.",
            "Multiply {a} by {b}, multiply {c} by {d}, and add the two results.",
            "{name} stacks {a} piles of {b} {items} and {c} piles of {d} {items}. How many {items} is "
            "that?",
            "What is the sum of {a} times {b} and {c} times {d}?",
            "A school orders {a} boxes of {b} pens and {c} boxes of {d} pencils. How many things "
            "arrive?",
            "Find {a} groups of {b} together with {c} groups of {d}.")),
    Family("hours_minutes_to_seconds", ("*", ("+", ("*", "a", "60"), "b"), "60"),
           lambda rng, top: {"a": rng.randint(1, 23), "b": rng.randint(1, 59), "60": 60},
           ("How many seconds are there in {a} hours and {b} minutes?",
            "A film lasts {a} hours {b} minutes. How long is it in seconds?",
            "Convert {a} h {b} min to seconds.",
            "{name} rested for {b} minutes after a {a}-hour walk. How many seconds was that "
            "altogether?",
            "What is {a} hours plus {b} minutes, expressed in seconds?",
            "Express a time of {a} hours and {b} minutes in seconds.",
            "A train ride takes {b} minutes longer than {a} hours. How many seconds is the ride?",
            "{name} worked {a} hours and {b} minutes today. How many seconds is that?",
            "Turn {a} hours and {b} minutes into seconds.",
            "How long, in seconds, is {b} minutes plus {a} hours?")),
    Family("km_m_to_cm", ("*", ("+", ("*", "a", "1000"), "b"), "100"),
           lambda rng, top: {"a": rng.randint(1, 99), "b": rng.randint(1, 999), "1000": 1000, "100": 100},
           ("How many centimeters are {a} kilometers and {b} meters?",
            "A trail is {a} km {b} m long. What is its length in centimeters?",
            "Convert {a} kilometers plus {b} meters into centimeters.",
            "{name} walked {b} meters and then {a} kilometers. How many centimeters is that?",
            "Express {a} km and {b} m in centimeters.",
            "How far is {a} kilometers and {b} meters, measured in centimeters?",
            "A river is {b} meters longer than {a} km. How many centimeters long is it?",
            "{name} cycles {a} km and {b} m. Give the distance in centimeters.",
            "Turn {a} kilometers {b} meters into centimeters.",
            "What is {b} m plus {a} km, in centimeters?")),
    Family("kg_minus_g", ("-", ("*", "a", "1000"), "b"),
           lambda rng, top: (lambda a: {"a": a, "b": rng.randint(1, min(a * 1000 - 1, max(top, 999))),
                                        "1000": 1000})(rng.randint(1, 99)),
           ("How many grams remain from {a} kilograms after removing {b} grams?",
            "{name} had {a} kg of rice and cooked {b} g of it. How many grams are left?",
            "Subtract {b} grams from {a} kilograms. Answer in grams.",
            "What is {a} kg minus {b} g, in grams?",
            "A bag of {a} kg loses {b} g. What does it weigh now, in grams?",
            "From a {a} kg sack, {b} g are used. How many grams are left?",
            "{name} removes {b} grams from {a} kilograms of flour. How many grams remain?",
            "How many grams is {a} kilograms less {b} grams?",
            "Take {b} g away from {a} kg. Give the result in grams.",
            "A {a}-kilogram box loses {b} grams of sand. What is its weight in grams?")),
    Family("per_day_weeks", ("*", ("*", "a", "7"), "b"),
           lambda rng, top: {"a": rng.randint(2, top), "b": rng.randint(2, 52), "7": 7},
           ("How many pages does {name} read in {b} weeks at {a} pages a day?",
            "At {a} pages per day, how many pages are read in {b} weeks?",
            "A machine makes {a} parts every day. How many parts does it make in {b} weeks?",
            "Saving {a} dollars a day for {b} weeks gives how many dollars?",
            "{name} walks {a} steps each day. How many steps is that over {b} weeks?",
            "{name} drinks {a} cups of water a day. How many cups is that in {b} weeks?",
            "For {b} weeks, a bakery sells {a} loaves every day. How many loaves is that?",
            "How many {items} are collected in {b} weeks at {a} {items} per day?",
            "A pump moves {a} liters each day. How many liters does it move in {b} weeks?",
            "Over {b} weeks, {name} writes {a} lines a day. How many lines is that in all?")),
)

OPENINGS = ("", "", "", "Quick question: ", "Please help me with this. ", "{asker} asks: ",
            "Here is a word problem. ", "Can you work this out? ", "I am stuck on this one. ",
            "Homework time. ", "A puzzle for you: ", "Let us check a number. ")
"""Said before the question (drawn per task, the same pool for every split): the question's
numbers move by a varying number of tokens, so the model cannot copy operands by position."""
CLOSINGS = ("", "", "", " Use the calculator.", " Please be exact.", " Thanks!",
            " Show the final number.", " Work it out step by step.")
"""Said after the question (drawn per task, as OPENINGS)."""


# ---------------------------------------------------------------------------- tasks


def heldout_wording_ids(cfg: ToolUseConfig, seed: int) -> set[str]:
    """`family/index` of the wordings only the held-out split uses (drawn by the seed)."""
    rng = random.Random(f"heldout-wordings:{seed}")
    chosen = set()
    for family in FAMILIES:
        count = min(cfg.heldout_wordings, len(family.wordings) - 1)  # keep one for training
        chosen |= {f"{family.name}/{i}" for i in rng.sample(range(len(family.wordings)), count)}
    return chosen


def make_task(family: Family, wording: int, rng: random.Random, top: int) -> dict[str, Any]:
    values = family.draw(rng, top)
    text = family.wordings[wording].format(name=rng.choice(NAMES), items=rng.choice(ITEMS), **values)
    opening, closing = rng.choice(OPENINGS), rng.choice(CLOSINGS)
    text = opening.format(asker=rng.choice(NAMES)) + text + closing
    expression = render(family.tree, values)
    answer = evaluate(expression)
    steps, last = steps_of(family.tree, values)
    if last != answer:  # the step-by-step results must end at the expression's value
        raise ValueError(f"tool_use: {family.name}: steps give {last}, {expression} is {answer}")
    return {"question": text, "answer": number(answer), "expression": expression,
            "family": family.name, "wording": f"{family.name}/{wording}", "steps": len(steps)}


def conversation(task: dict[str, Any], tool: str, schema: bool = True,
                 first_call_only: bool = False) -> dict[str, Any]:
    """The SFT conversation solving `task`: one tool call per operation, then the answer; with the
    tool's schema in `tools` unless `schema` is False (see ToolUseConfig.schema_fraction); cut
    after the first call when `first_call_only` (ToolUseConfig.first_call_fraction)."""
    family = next(f for f in FAMILIES if f.name == task["family"])
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT},
                                      {"role": "user", "content": task["question"]}]
    values = _operands(family, task["expression"])
    steps, _ = steps_of(family.tree, values)
    for expression, value in steps:
        arguments = ({"expression": expression} if tool == "calculator"
                     else {"code": f"print({expression.replace(' / ', ' // ')})"})
        messages.append({"role": "assistant", "content": "",
                         "tool_calls": [{"type": "function", "function": {"name": tool, "arguments": arguments}}]})
        messages.append({"role": "tool", "content": number(value)})
    messages.append({"role": "assistant", "content": f"The answer is {task['answer']}."})
    if first_call_only:
        messages = messages[:3]  # system, user, the first call
    record = {"id": task["id"], "source": "tool_use", "messages": messages}
    return {**record, "tools": [TOOLS[tool]]} if schema else record


def _in_share(what: str, share: float, task_id: str, seed: int) -> bool:
    """Whether `task_id` falls in a `share` of the tasks drawn for `what` (its own seeded coin, so
    one task's draw depends on no other task and on no other option)."""
    return share >= 1.0 or (share > 0.0 and random.Random(f"{what}:{seed}:{task_id}").random() < share)


def shows_schema(task_id: str, cfg: ToolUseConfig, seed: int) -> bool:
    """Whether the training conversation of `task_id` carries the tool schema (seeded per id)."""
    return _in_share("schema", cfg.schema_fraction, task_id, seed)


def first_call_only(task_id: str, cfg: ToolUseConfig, seed: int) -> bool:
    """Whether the training conversation of `task_id` stops after its first call (seeded per id)."""
    return _in_share("first-call", cfg.first_call_fraction, task_id, seed)


def training_conversation(task: dict[str, Any], cfg: ToolUseConfig, seed: int) -> dict[str, Any]:
    """A training task's SFT conversation as the chat_data stage writes it: with the schema for
    the `schema_fraction` of tasks, cut after the first call for the `first_call_fraction`."""
    return conversation(task, cfg.tool, shows_schema(task["id"], cfg, seed),
                        first_call_only(task["id"], cfg, seed))


def _operands(family: Family, expression: str) -> dict[str, int]:
    """Operand values back from an expression string (leaves in tree order)."""
    leaves: list[str] = []

    def collect(tree: Tree) -> None:
        if isinstance(tree, str):
            leaves.append(tree)
        else:
            collect(tree[1])
            collect(tree[2])

    collect(family.tree)
    numbers = [int(n) for n in expression.replace("(", " ").replace(")", " ").split() if n.isdigit()]
    return dict(zip(leaves, numbers))


def generate(cfg: ToolUseConfig, seed: int) -> dict[str, list[dict[str, Any]]]:
    """{"train": tasks, "heldout": tasks}; each task with id, question, answer, expression,
    family, wording, wording_seen and steps."""
    rng = random.Random(seed)
    unseen = heldout_wording_ids(cfg, seed)
    seen_questions: set[str] = set()

    def draw(count: int, split: str, allowed: Callable[[str], bool], offset: int) -> list[dict[str, Any]]:
        tasks = []
        while len(tasks) < count:
            family = FAMILIES[(offset + len(tasks)) % len(FAMILIES)]
            choices = [i for i in range(len(family.wordings)) if allowed(f"{family.name}/{i}")]
            for _ in range(1000):
                task = make_task(family, rng.choice(choices), rng, cfg.max_operand)
                if task["question"] not in seen_questions:
                    break
            else:
                raise ValueError(f"tool_use: cannot draw {count} distinct {split} tasks; raise max_operand")
            seen_questions.add(task["question"])
            task["wording_seen"] = task["wording"] not in unseen
            tasks.append({"id": f"tool_use/{split}/{len(tasks) + 1:05d}", **task})
        return tasks

    train = draw(cfg.train_tasks, "train", lambda w: w not in unseen, 0)
    n_unseen = (cfg.heldout_tasks + 1) // 2
    heldout = draw(n_unseen, "heldout", lambda w: w in unseen, 0)
    heldout += draw(cfg.heldout_tasks - n_unseen, "heldout", lambda w: w not in unseen, n_unseen)
    for i, task in enumerate(heldout):
        task["id"] = f"tool_use/heldout/{i + 1:05d}"
    return {"train": train, "heldout": heldout}


def task_file_extra(cfg: ToolUseConfig, seed: int) -> dict[str, Any]:
    """What tasks.json says about how the tasks were made (for the agent's report)."""
    return {"generator": "fullchain.data.chat.tool_use", "seed": seed, "tool": cfg.tool,
            "families": [f.name for f in FAMILIES],
            "heldout_wordings": sorted(heldout_wording_ids(cfg, seed)),
            "answer_format": "The answer is N.", "answer_type": "exact integer, plain digits"}


__all__ = ["FAMILIES", "TOOLS", "SYSTEM_PROMPT", "evaluate", "generate", "conversation", "shows_schema",
           "first_call_only"]
