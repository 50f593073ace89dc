"""`fullchain report <run dir | artifact | step id>`: one self-contained HTML page of a run, and
the demo's summary table on the terminal.

What it reads (every section tolerates its stage being absent: "not in this run"):
- the steps: a run dir's `run.json` (status and wall time per step, the run's own wall time),
  or an artifact and its lineage (manifest `inputs`, looked up by step id in its store);
- each step's manifest (config, metrics, checksums) and the files its stage writes: data's
  `data_card.md` + `length_histogram.png`, chat_data's `chat_card.md`, pretrain's and tune's
  `metrics.jsonl` + `loss.png`, eval's results through `contracts.read_eval_results` (+ its
  PNGs), deploy's `bench/bench.json` + `bench/latency_vs_concurrency.png`, agent's
  `results.json` (+ `results.png`) and `trajectories.jsonl`;
- other runs of the same steps (step ids) in the same runs dir for the reuse ratio: the wall
  time of a run that reused every step / that of a run that computed them all.

Numbers come only from those files; what is not there shows as "-".
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fullchain.core.artifact import ArtifactError, read_manifest

MISSING = "-"


@dataclass
class StepView:
    node: str
    kind: str
    step_id: str
    path: Path
    status: str  # ran | reused | in store
    seconds: float | None  # wall time of this run's execution (None: not known)
    manifest: dict = field(repr=False, default_factory=dict)

    @property
    def inputs(self) -> list[tuple[str, str]]:
        """(role, upstream step id) pairs."""
        pairs = []
        for role, info in sorted((self.manifest.get("inputs") or {}).items()):
            for record in info if isinstance(info, list) else [info]:
                if isinstance(record, dict) and record.get("step_id"):
                    pairs.append((role, record["step_id"]))
        return pairs

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics") or {}


@dataclass
class RunView:
    title: str
    steps: list[StepView]
    run_dir: Path | None = None
    run_seconds: float | None = None
    reuse: dict | None = None  # {"ratio", "reused_run", "computed_run", ...}

    def of_kind(self, *kinds: str) -> list[StepView]:
        """Steps of these stage kinds, or of a sub-kind of one (`data.chat` is a `data`)."""
        return [s for s in self.steps if any(s.kind == k or s.kind.startswith(k + ".")
                                             for k in kinds)]

    def first(self, *kinds: str) -> StepView | None:
        found = self.of_kind(*kinds)
        return found[0] if found else None


# ------------------------------------------------------------------------------- collecting

def _find_in_store(store: Path, step_id: str, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if name and (store / name / step_id).is_dir():
            return store / name / step_id
    found = [p for p in store.glob(f"*/{step_id}") if p.is_dir()]
    return found[0] if found else None


def _step_from_dir(path: Path, status: str, seconds: float | None) -> StepView | None:
    manifest = read_manifest(path)
    if manifest is None:
        return None
    return StepView(node=manifest.get("node", manifest["stage"]), kind=manifest["stage"],
                    step_id=manifest["step_id"], path=path, status=status,
                    seconds=seconds if seconds is not None else manifest.get("duration_s"),
                    manifest=manifest)


def from_artifact(artifact: Path) -> RunView:
    """An artifact and every artifact upstream of it (by step id in its store)."""
    store = artifact.parent.parent
    seen: dict[str, StepView] = {}
    pending = [artifact]
    while pending:
        path = pending.pop()
        step = _step_from_dir(path, "in store", None)
        if step is None or step.step_id in seen:
            continue
        seen[step.step_id] = step
        for info in (step.manifest.get("inputs") or {}).values():
            for record in info if isinstance(info, list) else [info]:
                found = _find_in_store(store, record.get("step_id", ""),
                                       (record.get("node"), record.get("stage")))
                if found is not None:
                    pending.append(found)
    steps = _topological(list(seen.values()))
    top = _step_from_dir(artifact, "in store", None)
    return RunView(title=f"{top.node} {top.step_id}", steps=steps)


def _topological(steps: list[StepView]) -> list[StepView]:
    by_id = {s.step_id: s for s in steps}
    order: list[StepView] = []
    done: set[str] = set()

    def visit(step: StepView) -> None:
        if step.step_id in done:
            return
        done.add(step.step_id)
        for _, upstream in step.inputs:
            if upstream in by_id:
                visit(by_id[upstream])
        order.append(step)

    for step in sorted(steps, key=lambda s: s.node):
        visit(step)
    return order


def from_run_dir(run_dir: Path) -> RunView:
    record_file = run_dir / "run.json"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{record_file}: not a readable run record ({exc})") from exc
    steps = []
    for entry in record.get("steps") or []:
        path = Path(entry.get("path", ""))
        step = _step_from_dir(path, entry.get("status", "?"), entry.get("seconds"))
        if step is None:
            raise ArtifactError(f"{record_file}: step {entry.get('stage')} {entry.get('step_id')} "
                                f"has no complete artifact at {path}")
        step.node = entry.get("stage", step.node)
        steps.append(step)
    return RunView(title=run_dir.name, steps=steps, run_dir=run_dir,
                   run_seconds=record.get("seconds"), reuse=reuse_ratio(run_dir))


def reuse_ratio(run_dir: Path) -> dict | None:
    """The wall time of a run that reused every step over that of a run that computed every
    one of the same steps (the same step ids: a spec may differ in fields that change no id),
    both in this run's runs dir; the latest of each."""
    def steps_of(record: dict) -> tuple[frozenset, set]:
        steps = record.get("steps") or []
        return frozenset(s.get("step_id") for s in steps), {s.get("status") for s in steps}

    try:
        ids = steps_of(json.loads((run_dir / "run.json").read_text()))[0]
    except (OSError, ValueError):
        return None
    runs = []
    for other in sorted(run_dir.parent.glob("*/run.json")):
        try:
            record = json.loads(other.read_text())
        except (OSError, ValueError):
            continue
        other_ids, statuses = steps_of(record)
        if record.get("seconds") is None or other_ids != ids or not ids:
            continue
        runs.append((other.parent, record["seconds"], statuses))
    computed = [r for r in runs if r[2] == {"ran"}]
    reused = [r for r in runs if r[2] == {"reused"}]
    if not computed or not reused:
        return None
    first, later = computed[-1], reused[-1]
    return {"ratio": later[1] / first[1] if first[1] else None, "reused_seconds": later[1],
            "computed_seconds": first[1], "reused_run": later[0].name,
            "computed_run": first[0].name}


def collect(target: str, store: Path | None) -> RunView:
    path = Path(target)
    if path.is_dir() and (path / "run.json").is_file():
        return from_run_dir(path.resolve())
    from fullchain.core.show import locate

    return from_artifact(locate(target, store).resolve())


# ------------------------------------------------------------------------------- reading

def read_jsonl(file: Path) -> list[dict]:
    rows = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a torn last line of an interrupted writer
        if isinstance(value, dict):
            rows.append(value)
    return rows


def read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def eval_rows(step: StepView) -> list[dict]:
    """The eval artifact's rows through the contract's reader, with any extra per-row fields
    the eval stage adds (e.g. contamination) from the same file."""
    from fullchain.core.contracts import ContractError, read_eval_results

    try:
        results = read_eval_results(step.path)
    except (ContractError, ArtifactError, OSError):
        return []
    raw = (read_json(results.path / "results.json") or {}).get("rows") or []
    rows = []
    for i, row in enumerate(results.rows):
        extra = raw[i] if i < len(raw) and isinstance(raw[i], dict) else {}
        rows.append({**extra, "model": row.model, "benchmark": row.benchmark,
                     "metric": row.metric, "score": row.score, "num_items": row.num_items})
    return rows


def bench_rows(step: StepView) -> list[dict]:
    doc = read_json(step.path / "bench" / "bench.json") or {}
    return [r for r in doc.get("rows") or [] if isinstance(r, dict)]


def agent_results(step: StepView) -> dict:
    doc = read_json(step.path / "results.json")
    return doc if isinstance(doc, dict) else {}


# ------------------------------------------------------------------------------- summary

def _num(value: Any, digits: int = 1, suffix: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return MISSING
    return f"{value:,.{digits}f}{suffix}"


def _seconds(value: Any) -> str:
    return _num(value, 1, " s")


def _scores(rows: list[dict], metric: str, unit: str = "%") -> str:
    """'model a / model b' scores of one metric, or '-'."""
    found = [r for r in rows if r.get("metric") == metric]
    if not found:
        return MISSING
    return "; ".join(f"{r['model']} {_num(r['score'], 1, unit)}" for r in found)


def summary_rows(view: RunView) -> list[tuple[str, str]]:
    """The demo's summary: (what, value) rows, '-' where this run has no such number."""
    rows: list[tuple[str, str]] = []
    pretrain = view.first("pretrain")
    evals = [r for step in view.of_kind("eval") for r in eval_rows(step)]
    perplexity = [r for r in evals if "perplexity" in r.get("metric", "")]
    trained = _num(pretrain.metrics.get("val_perplexity"), 1) if pretrain else MISSING
    init = _num(pretrain.metrics.get("init_val_perplexity"), 1) if pretrain else MISSING
    rows.append(("pretrain: held-out perplexity, trained / untrained init", f"{trained} / {init}"))
    if perplexity:
        rows.append(("eval: held-out perplexity", "; ".join(
            f"{r['model']} {_num(r['score'], 1)}" for r in perplexity)))
    rows.append(("tune: tool-call format validity (held-out)", _scores(evals, "format_validity")))
    rows.append(("tune: exact-expression rate (held-out)", _scores(evals, "exact_expression")))
    rows += agent_summary(view)
    bench = {r.get("concurrency"): r for step in view.of_kind("deploy") for r in bench_rows(step)}
    for level in (1, 8):
        row = bench.get(level) or {}
        rows.append((f"deploy c={level}: output tokens/s, latency p50 / p99",
                     f"{_num(row.get('output_tokens_per_s'), 1)}, "
                     f"{_num(row.get('latency_p50_s'), 2, ' s')} / "
                     f"{_num(row.get('latency_p99_s'), 2, ' s')}"))
    for step in view.steps:
        # the time the step took when it was computed (its manifest), and what this run did
        took = _seconds(step.manifest.get("duration_s"))
        rows.append((f"wall time: {step.node}", took if step.status in ("ran", "in store")
                     else f"{took} (reused in this run: {_seconds(step.seconds)})"))
    reuse = view.reuse or {}
    # run.json's seconds: plan + steps (not the interpreter's start-up and the composition)
    rows.append(("wall time: whole run (plan + steps)", _seconds(view.run_seconds)
                 if not reuse or reuse.get("computed_run") == (view.run_dir and view.run_dir.name)
                 else f"{_seconds(view.run_seconds)} (the run that computed these steps: "
                      f"{_seconds(reuse.get('computed_seconds'))})"))
    rows.append(("second run / first run wall time (reuse)",
                 _num(reuse.get("ratio"), 3) + (f" ({_seconds(reuse['reused_seconds'])} / "
                                                 f"{_seconds(reuse['computed_seconds'])})"
                                                 if reuse.get("ratio") is not None else "")))
    return rows


def agent_summary(view: RunView) -> list[tuple[str, str]]:
    """Success rate with tools / without, per task set and over all sets (weighted by tasks),
    from the agent's results.json: {"results": [{set, mode: tools|no_tools, tasks,
    success_rate (a fraction)}, ...]}."""
    table = [r for step in view.of_kind("agent") for r in agent_results(step).get("results") or []
             if isinstance(r, dict)]
    what = "agent: success rate with tools / without"
    if not table:
        return [(what, f"{MISSING} / {MISSING}")]

    def rate(rows: list[dict], mode: str) -> str:
        found = [r for r in rows if r.get("mode") == mode and isinstance(r.get("tasks"), int)
                 and isinstance(r.get("success_rate"), (int, float))]
        tasks = sum(r["tasks"] for r in found)
        if not tasks:
            return MISSING
        return _num(100.0 * sum(r["success_rate"] * r["tasks"] for r in found) / tasks, 1, "%")

    sets = list(dict.fromkeys(str(r.get("set")) for r in table))
    out = [(f"{what} ({name})", f"{rate([r for r in table if str(r.get('set')) == name], 'tools')}"
            f" / {rate([r for r in table if str(r.get('set')) == name], 'no_tools')}")
           for name in sets]
    if len(sets) > 1:
        out.append((f"{what} (all sets)", f"{rate(table, 'tools')} / {rate(table, 'no_tools')}"))
    return out


def format_summary(rows: list[tuple[str, str]]) -> str:
    width = max(len(what) for what, _ in rows)
    return "\n".join(f"{what.ljust(width)}  {value}" for what, value in rows)


# ------------------------------------------------------------------------------- CLI

def default_output(view: RunView) -> Path:
    if view.run_dir is not None:
        return view.run_dir / "report.html"
    top = view.steps[-1]
    run = Path(top.manifest.get("run") or ".")
    where = run if run.is_dir() else Path.cwd()
    return where / f"report-{top.node}-{top.step_id[:8]}.html"


def main(argv: list[str]) -> int:
    from fullchain.core.report_html import render

    parser = argparse.ArgumentParser(
        prog="fullchain report",
        description="Write one self-contained HTML page of a run (or of an artifact and its "
                    "lineage), print its path and the demo's summary table.")
    parser.add_argument("target", help="a run dir (runs/<run>), an artifact dir, or a step id")
    parser.add_argument("--store", help="the artifact store for a step id (default: the spec's)")
    parser.add_argument("--out", help="the HTML file (default: <run dir>/report.html)")
    args = parser.parse_args(argv)
    store = Path(args.store) if args.store else None
    if store is None and not Path(args.target).is_dir():
        from fullchain.core import spec as spec_mod

        spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(
            spec_mod.find_conf_dir(None), [])))
        store = Path(spec["paths"]["store"])
    view = collect(args.target, store)
    out = Path(args.out) if args.out else default_output(view)
    rows = summary_rows(view)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(view, rows), encoding="utf-8")
    print(format_summary(rows))
    print(f"\nreport: {out}")
    return 0
