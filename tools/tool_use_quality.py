"""How well a model has learned chat_data's synthetic tool-use task, on its held-out split.

    .venv/bin/python tools/tool_use_quality.py <hf model dir> <data.chat artifact dir> [--limit N]

Greedy generation with transformers (no sampling), the chat template of the model's tokenizer,
the task's tools in the prompt. Three measurements, each split by `wording_seen` (training
wordings with new operands vs wordings never seen in training):

- first call (the tune metric): the prompt is the system + user turns; the reply is *valid* when
  it holds a <tool_call> whose body is JSON with `name` and an `arguments` object carrying an
  `expression` string that parses as arithmetic; it is *exact* when that expression's AST (Python
  `ast`, so spacing and redundant parentheses do not matter, operand order does) equals the
  reference conversation's first call, i.e. the task's innermost operation with the operands the
  question gave (or the task's whole expression: the definition of packages/eval's
  toolcalls.score_reply, which also demands exactly the tool's required argument names).
- every turn, teacher-forced: each assistant turn of the reference conversation generated from
  the reference prefix (true tool results); a conversation counts when all its turns are right
  (calls exact as above, the final "The answer is N." word for word).
- round trip (the agent's loop, here without Lagent): the model calls, the calculator
  (`fullchain.data.chat.tool_use.evaluate`) answers, up to 6 turns, scored on "The answer is N."
  against the task's exact answer; and the same questions asked without tools (no schema in the
  prompt, the model answers directly).

Prints one JSON object (rates and counts).
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import time
from pathlib import Path

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
ANSWER = re.compile(r"The answer is (-?\d+)\.")


def parse_call(reply: str) -> str | None:
    """The `expression` of the reply's first well-formed calculator call, else None."""
    match = TOOL_CALL.search(reply)
    if not match:
        return None
    try:
        call = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("arguments"), dict):
        return None
    expression = call["arguments"].get("expression")
    if call.get("name") != "calculator" or not isinstance(expression, str):
        return None
    try:
        ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    return expression


def same_expression(a: str, b: str) -> bool:
    return ast.dump(ast.parse(a, mode="eval")) == ast.dump(ast.parse(b, mode="eval"))


class Model:
    def __init__(self, directory: str, quantize: str = "none"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForCausalLM.from_pretrained(directory).eval()
        if quantize == "int8_dynamic":  # as the deploy server applies deploy.quantization=int8_dynamic
            from fullchain.deploy.quantize import dynamic_int8

            self.model = dynamic_int8(self.model)
        self.end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def reply(self, messages, tools, max_new_tokens: int = 48) -> str:
        ids = self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                 return_dict=True, return_tensors="pt")
        with self.torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=self.end, pad_token_id=self.tokenizer.pad_token_id)
        # <tool_call> is a special token: keep specials, cut at the end of the turn
        reply = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=False)
        return reply.split("<|im_end|>")[0]


def reference_calls(record) -> list[str | None]:
    """Per assistant turn: its call's expression, or None for the final answer turn."""
    calls = []
    for message in record["messages"]:
        if message["role"] == "assistant":
            tool_calls = message.get("tool_calls") or []
            calls.append(tool_calls[0]["function"]["arguments"]["expression"] if tool_calls else None)
    return calls


def measure(model: Model, records, tasks, tools) -> dict:
    from fullchain.data.chat.tool_use import evaluate

    rows = []
    for record in records:
        task = tasks[record["id"]]
        messages = record["messages"]
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        refs = reference_calls(record)
        row = {"seen": task["wording_seen"]}
        # every turn teacher-forced (the first is the tune metric)
        turn_ok = []
        for index, ref in zip(turns, refs):
            reply = model.reply(messages[:index], tools)
            if ref is None:
                turn_ok.append(reply.strip() == messages[index]["content"])
                continue
            expression = parse_call(reply)
            ok = expression is not None and same_expression(expression, ref)
            if index == turns[0]:  # as eval's toolcalls.score_reply: the whole expression counts too
                ok = ok or (expression is not None and same_expression(expression, task["expression"]))
                row["valid"], row["exact"] = expression is not None, ok
            turn_ok.append(ok)
        row["all_turns"] = all(turn_ok)
        # the round trip: the model's own calls, the calculator's results
        dialog = messages[:turns[0]]
        row["agent"] = False
        for _ in range(6):
            reply = model.reply(dialog, tools)
            expression = parse_call(reply)
            if expression is None:
                found = ANSWER.search(reply)
                row["agent"] = bool(found) and found.group(1) == task["answer"]
                break
            try:
                value = evaluate(expression)
                result = str(value.numerator) if value.denominator == 1 else str(float(value))
            except (ValueError, SyntaxError, ZeroDivisionError) as exc:
                result = f"error: {exc}"
            dialog = dialog + [
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "calculator",
                                                      "arguments": {"expression": expression}}}]},
                {"role": "tool", "content": result}]
        # no tools: the question alone
        reply = model.reply([messages[0], messages[1]], None)
        found = ANSWER.search(reply)
        row["no_tool"] = bool(found) and found.group(1) == task["answer"]
        rows.append(row)

    def rates(selected):
        n = len(selected)
        return {"n": n, **{key: round(sum(r[key] for r in selected) / n, 3) if n else None
                           for key in ("valid", "exact", "all_turns", "agent", "no_tool")}}

    return {"all": rates(rows), "seen_wordings": rates([r for r in rows if r["seen"]]),
            "unseen_wordings": rates([r for r in rows if not r["seen"]])}


def main(argv=None) -> int:
    from fullchain.core.artifact import Artifact
    from fullchain.core.contracts import read_conversations, read_tool_tasks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Hugging Face model dir (e.g. <tune artifact>/hf)")
    parser.add_argument("chat_data", help="the data.chat artifact dir (conversations + tasks)")
    parser.add_argument("--limit", type=int, default=None, help="first N held-out records only")
    parser.add_argument("--quantize", choices=("none", "int8_dynamic"), default="none",
                        help="score the model as deploy.quantization=int8_dynamic serves it")
    args = parser.parse_args(argv)
    chat = Artifact.load(Path(args.chat_data))
    conversations = read_conversations(chat)
    tasks = {t["id"]: t for t in read_tool_tasks(chat).tasks("heldout")}
    records = list(conversations.records("heldout"))
    if args.limit:  # keep both halves: alternate seen / unseen wordings
        seen = [r for r in records if tasks[r["id"]]["wording_seen"]]
        unseen = [r for r in records if not tasks[r["id"]]["wording_seen"]]
        records = (seen[: (args.limit + 1) // 2] + unseen[: args.limit // 2])
    tools = records[0].get("tools")
    start = time.perf_counter()
    result = measure(Model(args.model, args.quantize), records, tasks, tools)
    result["seconds"] = round(time.perf_counter() - start, 1)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
