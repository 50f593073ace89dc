"""The agent stage: an agent (Lagent; ReAct or function calling) on the served model, scored on
tool-use task sets, each with its tools and with none on the same items.

Artifact layout (`out`):
    trajectories.jsonl   one line per task x mode: question, every reply, call, result and error,
                         the answer, correct or why not, tokens, seconds
    results.csv / .md    one row per task set x mode: success rate, tool-call validity, steps,
                         tool calls, tokens and latency per task
    results.png          success rate with and without tools, per task set
"""
from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fullchain.agent.config import AgentConfig
from fullchain.core.artifact import Artifact, write_json_atomic

log = logging.getLogger(__name__)

MODES = ("tools", "no_tools")


# ---------------------------------------------------------------------------- inputs


def endpoint_of(cfg: AgentConfig, inputs: dict[str, Artifact]) -> tuple[str, str | None, str | None]:
    """(base URL, model name or None, API key or None) from `agent.endpoint` or the input."""
    from fullchain.core.contracts import read_deployment

    if cfg.endpoint and "endpoint" in inputs:
        raise ValueError(f"endpoint: {cfg.endpoint} is set and the `endpoint` input is wired too; "
                         "unwire one (~graph.agent.inputs.endpoint)")
    if cfg.endpoint:
        return cfg.endpoint.rstrip("/"), cfg.model, None
    if "endpoint" not in inputs or not getattr(inputs["endpoint"], "url", None):
        raise ValueError("endpoint: no model to talk to: wire the node's `endpoint` input to a deploy "
                         "node (the runner serves it) or set agent.endpoint=http://HOST:PORT/v1")
    deployment = read_deployment(inputs["endpoint"])
    key = os.environ.get(deployment.api_key_env) if deployment.api_key_env else None
    return inputs["endpoint"].url.rstrip("/"), cfg.model or deployment.model_name, key or None


def load_tasks(cfg: AgentConfig, inputs: dict[str, Artifact]) -> list[dict[str, Any]]:
    from fullchain.agent import tasks as sets
    from fullchain.core.contracts import read_tool_tasks

    out: list[dict[str, Any]] = []
    for name, limit in cfg.task_sets.items():
        if name == "heldout":
            if "tasks" not in inputs:
                raise ValueError("task_sets.heldout: needs the `tasks` input (graph.agent.inputs.tasks: "
                                 "chat_data) or drop it (~agent.task_sets.heldout)")
            out += sets.heldout_tasks(read_tool_tasks(inputs["tasks"]), limit)
        elif name == "file":
            continue
        else:
            if not cfg.data_dir or not Path(cfg.data_dir).is_dir():
                raise ValueError(f"data_dir: {cfg.data_dir!r} is not a directory; task set {name!r} "
                                 "reads gsm8k/ and bfcl-v4/ there (../shared/data)")
            out += (sets.gsm8k_tasks(Path(cfg.data_dir), limit) if name == "gsm8k"
                    else sets.bfcl_tasks(Path(cfg.data_dir), name, limit))
    if cfg.tasks:
        out += sets.file_tasks(cfg.tasks, cfg.task_sets.get("file", 0))
    if not out:
        raise ValueError("task_sets: nothing to run (every set is empty and agent.tasks is not set)")
    return out


# ---------------------------------------------------------------------------- tools


class Toolbox:
    """The actions a task gets: by name for the configured tools, from the task's own schemas
    for heldout (the ones its conversations trained) and BFCL (stubs: the call is scored)."""

    def __init__(self, cfg: AgentConfig, corpus: Artifact | None = None):
        from fullchain.agent.sandbox import Sandbox

        self.cfg = cfg
        s = cfg.sandbox
        self.sandbox = Sandbox(timeout_s=s.timeout_s, memory_mb=s.memory_mb, cpu_seconds=s.cpu_seconds,
                               max_processes=s.max_processes, output_bytes=s.output_bytes,
                               pool_size=s.pool_size)
        self._search = None
        self._corpus = corpus

    def action(self, name: str, schema: dict[str, Any] | None = None):
        from fullchain.agent import tools

        if name == "calculator":
            return tools.FunctionTool(tools.calculator,
                                      description=tools.from_openai_tool(schema) if schema else None)
        if name == "python":
            action = tools.SandboxedPython(self.sandbox)
            if schema:
                action._description = tools.from_openai_tool(schema)
            return action
        if name == "search":
            if self._search is None:
                if self._corpus is None:
                    raise ValueError("tools: `search` needs the `corpus` input (graph.agent.inputs.corpus: data)")
                from fullchain.core.contracts import read_packed_corpus

                documents = tools.documents_from_packed_corpus(read_packed_corpus(self._corpus),
                                                               self.cfg.retrieval_documents)
                self._search = tools.BM25Search(documents)
            return self._search
        if schema:
            return tools.declared_tool(schema)
        raise ValueError(f"tools: unknown tool {name!r}")

    def for_task(self, task: dict[str, Any]) -> tuple[list, list[dict[str, Any]] | None]:
        """(actions, the OpenAI schemas to show; None: the actions' own)."""
        if task["tools"] is None:
            return [self.action(name) for name in self.cfg.tools], None
        actions = [self.action(t["function"]["name"], t) if task["match"] != "bfcl"
                   else self.action("", t) for t in task["tools"]]
        return actions, task["tools"]

    def close(self) -> None:
        self.sandbox.close()


# ---------------------------------------------------------------------------- running


def run_task(cfg: AgentConfig, llm, toolbox: Toolbox, task: dict[str, Any], mode: str) -> dict[str, Any]:
    """One task in one mode. `llm` is this task's own client (its replies are this task's)."""
    from fullchain.agent.agents import make_agent
    from fullchain.agent.tasks import score

    actions, shown = toolbox.for_task(task) if mode == "tools" else ([], [])
    # BFCL scores the first reply's call: one reply (ReAct: two, its last turn forces an answer).
    # Without tools the model answers in one reply (ReAct: two): there is nothing to call.
    if task["match"] == "bfcl" or mode == "no_tools":
        turns = 2 if cfg.protocol == "react" else 1
    else:
        turns = cfg.max_turns
    agent = make_agent(cfg.protocol, llm, actions, turns, shown)
    started = time.perf_counter()
    episode = agent.chat(task["question"], task.get("system"))
    seconds = time.perf_counter() - started
    first_calls = [(c.name, c.arguments) for c in (episode.steps[0].calls if episode.steps else [])]
    if task["match"] == "bfcl" and mode == "no_tools" and episode.steps:
        from fullchain.agent.agents import parse_hermes  # a call written as text still counts

        first_calls = parse_hermes(episode.steps[0].reply)[0]
    correct, why = score(task, episode.answer, first_calls)
    status = "called" if task["match"] == "bfcl" and first_calls else episode.status
    calls = episode.calls
    return {"id": task["id"], "set": task["set"], "mode": mode, "protocol": cfg.protocol,
            "question": task["question"], "expected": task.get("answer") or task.get("ground_truth"),
            "correct": correct, "why": why, "status": status, "answer": episode.answer,
            "steps": len(episode.steps), "tool_calls": len(calls),
            "valid_tool_calls": sum(c.valid for c in calls),
            "prompt_tokens": episode.prompt_tokens, "completion_tokens": episode.completion_tokens,
            "seconds": round(seconds, 4), "error": episode.error,
            "trajectory": [{"reply": s.reply, "error": s.error,
                            "calls": [{"name": c.name, "arguments": c.arguments, "valid": c.valid,
                                       "result": c.result, "error": c.error} for c in s.calls]}
                           for s in episode.steps]}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task set x mode."""
    table = []
    for key in dict.fromkeys((r["set"], r["mode"]) for r in rows):
        group = [r for r in rows if (r["set"], r["mode"]) == key]
        calls = sum(r["tool_calls"] for r in group)
        n = len(group)
        table.append({
            "set": key[0], "mode": key[1], "tasks": n,
            "success_rate": round(sum(r["correct"] for r in group) / n, 4),
            "tool_call_validity": round(sum(r["valid_tool_calls"] for r in group) / calls, 4) if calls else None,
            "tool_calls_per_task": round(calls / n, 3),
            "steps_per_task": round(sum(r["steps"] for r in group) / n, 3),
            "tokens_per_task": round(sum(r["prompt_tokens"] + r["completion_tokens"] for r in group) / n, 1),
            "seconds_per_task": round(statistics.fmean(r["seconds"] for r in group), 3),
            "turn_limit": sum(r["status"] == "turn_limit" for r in group),
            "server_errors": sum(r["status"] == "server_error" for r in group)})
    return table


def write_report(out: Path, table: list[dict[str, Any]], title: str) -> None:
    columns = list(table[0])
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join("-" if row[c] is None else str(row[c]) for c in columns) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["set"] for r in table))
    fig, ax = plt.subplots(figsize=(1.6 * len(sets) + 2, 3.2))
    for offset, mode in ((-0.2, "tools"), (0.2, "no_tools")):
        rates = [next((r["success_rate"] for r in table if r["set"] == s and r["mode"] == mode), 0)
                 for s in sets]
        ax.bar([i + offset for i in range(len(sets))], rates, width=0.4,
               label="with tools" if mode == "tools" else "no tools")
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=100)
    plt.close(fig)


def run(cfg: AgentConfig, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
    from fullchain.agent.llm import OpenAIChat, first_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    url, model, key = endpoint_of(cfg, inputs)
    tasks = load_tasks(cfg, inputs)
    model = model or first_model(url, key)

    def one(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
        llm = OpenAIChat(url, model, api_key=key, max_new_tokens=cfg.max_tokens,
                         temperature=cfg.temperature, timeout=cfg.request_timeout_s)
        try:
            return run_task(cfg, llm, toolbox, *job)
        finally:
            llm.client.close()

    toolbox = Toolbox(cfg, inputs.get("corpus"))
    # every task in both modes, `concurrency` at a time
    jobs = [(task, mode) for task_set in dict.fromkeys(t["set"] for t in tasks) for mode in MODES
            for task in tasks if task["set"] == task_set]
    log.info("agent: %s protocol, %d task(s) x %s on %s (model %s), %d at a time", cfg.protocol,
             len(tasks), "/".join(MODES), url, model, cfg.concurrency)
    started = time.perf_counter()
    results: dict[int, dict[str, Any]] = {}
    try:
        with ThreadPoolExecutor(cfg.concurrency) as pool:
            futures = {pool.submit(one, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if len(results) % 10 == 0 or len(results) == len(jobs):
                    log.info("agent: %d/%d task runs done (%.2f tasks/s)", len(results), len(jobs),
                             len(results) / max(time.perf_counter() - started, 1e-9))
    finally:
        toolbox.close()
    rows = [results[i] for i in range(len(jobs))]
    partial = out / "trajectories.jsonl.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, default=str) + "\n")
    partial.replace(out / "trajectories.jsonl")
    seconds = time.perf_counter() - started
    table = summarize(rows)
    write_report(out, table, f"agent benchmark: {cfg.protocol}, model {model}")
    write_json_atomic(out / "results.json", {"protocol": cfg.protocol, "model": model, "endpoint": url,
                                             "network_isolation": toolbox.sandbox.network_isolation,
                                             "results": table})
    metrics: dict[str, Any] = {"protocol": cfg.protocol, "tasks": len(rows), "seconds": round(seconds, 2),
                               "tasks_per_second": round(len(rows) / seconds, 3),
                               "seconds_per_task": round(statistics.fmean(r["seconds"] for r in rows), 3)}
    for row in table:
        prefix = f"{row['set']}/{row['mode']}"
        metrics[f"{prefix}/success_rate"] = row["success_rate"]
        metrics[f"{prefix}/tool_call_validity"] = row["tool_call_validity"]
    return metrics
