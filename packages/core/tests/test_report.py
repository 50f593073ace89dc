"""`fullchain report` on the toy stages through the real CLI (what a run without the demo's
stages shows), and on hand-made eval / deploy / agent artifacts in their documented layouts
(what the report reads from each, '-' for what is missing)."""
import json
from pathlib import Path

from fullchain.core.artifact import write_json_atomic
from fullchain.core.contracts import EvalRow, write_eval_results
from fullchain.core.report import collect, summary_rows
from fullchain.core.report_html import render
from spine_testing import CONF, fullchain


def _rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        if "  " in line and not line.startswith("report: "):
            what, _, value = line.partition("  ")
            rows[what.strip()] = value.strip()
    return rows


def test_report_of_a_run_and_of_an_artifact(project):
    fullchain("run", "--conf", str(CONF))
    fullchain("run", "--conf", str(CONF))  # every step reused
    first, second = sorted((project / "runs").glob("*/run.json"))
    result = fullchain("report", str(second.parent))
    out = second.parent / "report.html"
    assert result.stdout.strip().endswith(f"report: {out}")
    rows = _rows(result.stdout)
    ratio = json.loads(second.read_text())["seconds"] / json.loads(first.read_text())["seconds"]
    assert rows["second run / first run wall time (reuse)"].startswith(f"{ratio:,.3f} (")
    computed = json.loads(first.read_text())["seconds"]
    assert rows["wall time: whole run (plan + steps)"].endswith(
        f"(the run that computed these steps: {computed:,.1f} s)")
    square = json.loads(first.read_text())["steps"][1]
    took = json.loads((Path(square["path"]) / "manifest.json").read_text())["duration_s"]
    assert rows["wall time: square"] == f"{took:,.1f} s (reused in this run: 0.0 s)"
    # no pretrain, tune, eval, deploy or agent here: dashes, never a number
    assert rows["pretrain: held-out perplexity, trained / untrained init"] == "- / -"
    assert rows["deploy c=1: output tokens/s, latency p50 / p99"] == "-, - / -"
    page = out.read_text()
    for section in ("summary", "graph", "steps", "data", "losses", "eval", "deploy", "agent",
                    "reproduction"):
        assert f'<section id="{section}">' in page
    assert page.count("not in this run") == 5  # data cards, losses, eval, deploy, agent
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # an artifact by step id: it and its lineage, the page beside its run
    step = Path(square["path"]).name
    by_id = fullchain("report", step[:8], "--store", str(project / "artifacts"))
    page = Path(by_id.stdout.strip().splitlines()[-1].removeprefix("report: ")).read_text()
    assert f"report-square-{step[:8]}.html" in by_id.stdout
    assert page.count("<rect") == 2 and ">counts</text>" in page  # count -> square, role label


def _artifact(store: Path, kind: str, step_id: str, inputs: dict, metrics: dict) -> Path:
    path = store / kind / step_id
    path.mkdir(parents=True)
    write_json_atomic(path / "manifest.json", {
        "stage": kind, "node": kind, "step_id": step_id, "metrics": metrics, "duration_s": 12.5,
        "inputs": {role: {"stage": k, "node": k, "step_id": i, "path": str(store / k / i)}
                   for role, (k, i) in inputs.items()}})
    return path


def test_eval_deploy_and_agent_sections_read_their_files(tmp_path):
    store = tmp_path / "store"
    deploy = _artifact(store, "deploy", "d" * 16, {}, {})
    (deploy / "bench").mkdir()
    (deploy / "bench" / "bench.json").write_text(json.dumps({"rows": [
        {"concurrency": 1, "output_tokens_per_s": 41.25, "latency_p50_s": 0.5, "latency_p99_s": 0.75},
        {"concurrency": 8, "output_tokens_per_s": 120.5, "latency_p50_s": 1.25, "latency_p99_s": 2.5},
    ]}))
    evaluation = _artifact(store, "eval", "e" * 16, {"model": ("deploy", "d" * 16)}, {})
    write_eval_results(evaluation, [
        EvalRow("base", "tool_use", "format_validity", 12.0, 100),
        EvalRow("tuned", "tool_use", "format_validity", 97.0, 100),
        EvalRow("tuned", "tool_use", "exact_expression", 74.0, 100),
        EvalRow("tuned", "gsm8k", "accuracy", 3.0, 50),
    ])
    # the eval stage's marks: benchmark items found in the training corpus (data's decontamination)
    (evaluation / "pins.json").write_text(json.dumps({"contamination": {
        "gsm8k": {"items_found": 3, "items": 50, "action": "flag", "contaminated": True},
        "tool_use": {"items_found": 0, "items": 100, "action": "drop", "contaminated": False}}}))
    agent = _artifact(store, "agent", "a" * 16, {"server": ("deploy", "d" * 16),
                                                 "after": ("eval", "e" * 16)}, {})
    (agent / "results.json").write_text(json.dumps({"protocol": "react", "results": [
        {"set": "new_numbers", "mode": "tools", "tasks": 50, "success_rate": 0.8},
        {"set": "new_numbers", "mode": "no_tools", "tasks": 50, "success_rate": 0.02},
        {"set": "new_wordings", "mode": "tools", "tasks": 30, "success_rate": 0.6},
        {"set": "new_wordings", "mode": "no_tools", "tasks": 30, "success_rate": 0.0},
    ]}))
    (agent / "trajectories.jsonl").write_text("".join(
        json.dumps({"task": i, "steps": ["calculator(2+2)"]}) + "\n" for i in range(5)))
    view = collect(str(agent), None)
    rows = dict(summary_rows(view))
    assert [s.kind for s in view.steps] == ["deploy", "eval", "agent"]
    assert rows["tune: tool-call format validity (held-out)"] == "base 12.0%; tuned 97.0%"
    assert rows["tune: exact-expression rate (held-out)"] == "tuned 74.0%"
    assert rows["agent: success rate with tools / without (new_numbers)"] == "80.0% / 2.0%"
    assert rows["agent: success rate with tools / without (new_wordings)"] == "60.0% / 0.0%"
    # over all sets, weighted by tasks: (40 + 18) / 80 and 1 / 80
    assert rows["agent: success rate with tools / without (all sets)"] == "72.5% / 1.2%"
    assert rows["deploy c=1: output tokens/s, latency p50 / p99"] == "41.2, 0.50 s / 0.75 s"
    assert rows["deploy c=8: output tokens/s, latency p50 / p99"] == "120.5, 1.25 s / 2.50 s"
    assert rows["wall time: eval"] == "12.5 s"
    assert rows["wall time: whole run (plan + steps)"] == "-"  # an artifact: no run record
    page = render(view, summary_rows(view))
    assert page.count('class="contaminated"') == 1
    assert "</span> (3 of 50 items in the corpus, kept)" in page and page.count("<td>clean</td>") == 2
    assert page.count("<summary>trajectory") == 3  # a few, not all five
