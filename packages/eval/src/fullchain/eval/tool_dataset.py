"""The synthetic tool-use task as an OpenCompass custom dataset and evaluator (eval env only:
imports opencompass). The dataset file is written by `write_tool_use`: one row per task with the
system prompt that declares the tools (see `tools_system_prompt`), the question and the reference
expression; `ToolUseEvaluator` scores replies with `toolcalls.score_reply`."""
from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset
from fullchain.eval.toolcalls import score_reply, tool_schemas
from opencompass.datasets.base import BaseDataset
from opencompass.openicl.icl_evaluator import BaseEvaluator


class ToolUseDataset(BaseDataset):
    @staticmethod
    def load(path: str) -> Dataset:
        with open(path, encoding="utf-8") as handle:
            return Dataset.from_list([json.loads(line) for line in handle if line.strip()])


class ToolUseEvaluator(BaseEvaluator):
    """format_validity and exact_expression, in percent (OpenCompass's convention)."""

    def __init__(self, tools: list[dict]) -> None:
        super().__init__()
        self.tools = tool_schemas(tools)

    def score(self, predictions: list[str], references: list[str]) -> dict:
        if len(predictions) != len(references):
            return {"error": f"{len(predictions)} predictions for {len(references)} tasks"}
        details = [{"pred": p, "expression": r, **score_reply(p, r, self.tools)}
                   for p, r in zip(predictions, references)]
        n = len(details) or 1
        return {"format_validity": 100.0 * sum(d["format_valid"] for d in details) / n,
                "exact_expression": 100.0 * sum(d["exact_expression"] for d in details) / n,
                "details": details}


def write_tool_use(path: Path, tasks: list[dict], system: str) -> Path:
    """The dataset file: id, system (tools declared), question, expression, answer."""
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps({"id": task["id"], "system": system, "question": task["question"],
                                     "expression": task["expression"], "answer": task["answer"]},
                                    ensure_ascii=False) + "\n")
    return path
