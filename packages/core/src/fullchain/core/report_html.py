"""The report's HTML: one page, nothing fetched (images inline as base64 PNG, the step graph as
inline SVG, no script, no web font, no CDN). Sections have ids (summary, graph, steps, data,
losses, eval, deploy, agent, reproduction) that the browser test looks for."""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from fullchain.core.report import (
    MISSING,
    RunView,
    StepView,
    _num,
    _seconds,
    agent_results,
    bench_rows,
    eval_rows,
    read_json,
    read_jsonl,
)

TRAJECTORIES_SHOWN = 3

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 13px/1.4 ui-monospace, monospace; } pre { background: #f7f7f7; padding: .6em;
       overflow-x: auto; white-space: pre-wrap; }
img, svg { max-width: 100%; height: auto; } .absent { color: #777; font-style: italic; }
.card { border: 1px solid #ddd; padding: 0 1em; margin: 1em 0; }
.card h1 { font-size: 1.25em; } .card h2 { font-size: 1.1em; border: none; margin-top: 1.2em; }
.card h3 { font-size: 1em; }
.contaminated { color: #b00; font-weight: bold; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def png_tag(file: Path, alt: str) -> str:
    if not file.is_file():
        return ""
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def absent(what: str) -> str:
    return f'<p class="absent">{esc(what)}</p>'


def table(head: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{c if isinstance(c, Markup) else esc(c)}</td>"
            for i, c in enumerate(row)) + "</tr>")
    return "\n".join(out) + "</table>"


class Markup(str):
    """Already-escaped HTML for a table cell."""


def markdown_file(file: Path) -> str:
    """A stage's Markdown card as HTML (the `markdown` library, tables extension); its local
    images inline. Without the library: the text as it is."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError:
        return ""
    try:
        import markdown
    except ImportError:
        return f"<pre>{esc(text)}</pre>"
    body = markdown.markdown(text, extensions=["tables"])

    def inline(match: re.Match) -> str:
        target = file.parent / html.unescape(match.group(2))
        if target.suffix == ".png" and target.is_file():
            data = base64.b64encode(target.read_bytes()).decode("ascii")
            return f'{match.group(1)}"data:image/png;base64,{data}"'
        return f'{match.group(1)}"" data-missing="{match.group(2)}"'  # never a fetch

    return re.sub(r'(<img[^>]*?src=)"([^"]*)"', inline, body)


# ------------------------------------------------------------------------------- sections

def section_summary(rows: list[tuple[str, str]]) -> str:
    return table(["", "value"], [[what, value] for what, value in rows])


def graph_svg(view: RunView) -> str:
    """The step graph: one column per depth, a box per step (node, kind, id, status), an arrow
    per input labelled with its role."""
    by_id = {s.step_id: s for s in view.steps}
    depth: dict[str, int] = {}

    def depth_of(step: StepView) -> int:
        if step.step_id not in depth:
            depth[step.step_id] = 0  # guards a (malformed) cycle
            depth[step.step_id] = 1 + max((depth_of(by_id[u]) for _, u in step.inputs if u in by_id),
                                          default=-1)
        return depth[step.step_id]

    columns: dict[int, list[StepView]] = {}
    for step in view.steps:
        columns.setdefault(depth_of(step), []).append(step)
    box_w, box_h, gap_x, gap_y, pad = 190, 58, 90, 28, 12
    where: dict[str, tuple[int, int]] = {}
    for col, steps in columns.items():
        for row, step in enumerate(steps):
            where[step.step_id] = (pad + col * (box_w + gap_x), pad + row * (box_h + gap_y))
    width = pad * 2 + (max(columns) + 1) * (box_w + gap_x) - gap_x if columns else 100
    height = pad * 2 + (max((len(c) for c in columns.values()), default=1) + 1) * (box_h + gap_y)
    colour = {"ran": "#e6f2e6", "reused": "#e8eef8", "in store": "#f4f4f4"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="step graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
             '</defs>']
    for step in view.steps:
        x2, y2 = where[step.step_id]
        for role, upstream in step.inputs:
            if upstream not in where:
                continue
            x1, y1 = where[upstream]
            ax, ay, bx, by = x1 + box_w, y1 + box_h / 2, x2, y2 + box_h / 2
            # an edge that skips columns bows below the boxes between (a curve, not through them)
            bow = (box_h + gap_y) * 0.8 if bx - ax > gap_x + 1 else 0
            cx, cy = (ax + bx) / 2, max(ay, by) + 2 * bow
            parts.append(f'<path d="M{ax},{ay} Q{cx},{cy} {bx},{by}" fill="none" stroke="#555" '
                         'marker-end="url(#arrow)"/>')
            label_y = (ay + by) / 2 + bow - 4 if bow else (ay + by) / 2 - 4
            parts.append(f'<text x="{cx}" y="{label_y}" font-size="11" '
                         f'text-anchor="middle" fill="#333">{esc(role)}</text>')
    for step in view.steps:
        x, y = where[step.step_id]
        label = step.node if step.node == step.kind else f"{step.node} ({step.kind})"
        parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" '
                     f'fill="{colour.get(step.status, "#f4f4f4")}" stroke="#888"/>')
        parts.append(f'<text x="{x + 8}" y="{y + 18}" font-size="13" font-weight="bold">'
                     f'{esc(label)}</text>')
        parts.append(f'<text x="{x + 8}" y="{y + 35}" font-size="11" font-family="monospace">'
                     f'{esc(step.step_id)}</text>')
        parts.append(f'<text x="{x + 8}" y="{y + 50}" font-size="11">{esc(step.status)}; took '
                     f'{esc(_seconds(step.manifest.get("duration_s")))}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def section_steps(view: RunView) -> str:
    rows = []
    for step in view.steps:
        inputs = ", ".join(f"{role}: {upstream[:8]}" for role, upstream in step.inputs) or MISSING
        rows.append([step.node, step.kind, Markup(f"<code>{esc(step.step_id)}</code>"),
                     step.status, _seconds(step.seconds), _seconds(step.manifest.get("duration_s")),
                     inputs, Markup(f"<code>{esc(step.path)}</code>")])
    return table(["node", "stage", "step id", "status", "in this run", "took (when computed)",
                  "inputs (role: id)", "path"], rows, numeric={4, 5})


def section_data(view: RunView) -> str:
    parts = []
    for step in view.of_kind("data"):
        for card in sorted(step.path.glob("*card.md")):  # data_card.md, chat_card.md
            parts.append(f'<div class="card"><p><b>{esc(step.node)}</b> '
                         f'<code>{esc(step.step_id)}</code></p>{markdown_file(card)}</div>')
    return "\n".join(parts) or absent("not in this run (no data step with a card)")


def section_losses(view: RunView) -> str:
    parts = []
    for step in view.of_kind("pretrain", "tune"):
        rows = read_jsonl(step.path / "metrics.jsonl")
        losses = [r for r in rows if isinstance(r.get("loss"), (int, float))]
        vals = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
        x_key = "iteration" if losses and "iteration" in losses[0] else "step"
        facts = [["training loss, first / last logged",
                  f"{_num(losses[0]['loss'], 3)} / {_num(losses[-1]['loss'], 3)} "
                  f"({x_key} {losses[0].get(x_key)} / {losses[-1].get(x_key)})" if losses else MISSING]]
        if vals:
            facts.append(["validation loss, first / last",
                          f"{_num(vals[0]['val_loss'], 3)} / {_num(vals[-1]['val_loss'], 3)}"])
        for key in ("val_perplexity", "init_val_perplexity", "final_loss", "tokens_per_second"):
            if key in step.metrics:
                facts.append([f"metrics.{key}", _num(step.metrics[key], 3)])
        plot = png_tag(step.path / "loss.png", f"{step.node} loss")
        parts.append(f"<h3>{esc(step.node)} <code>{esc(step.step_id)}</code></h3>"
                     + table(["", "value"], facts)
                     + (plot or absent("no loss.png in this artifact")))
    return "\n".join(parts) or absent("not in this run (no pretrain or tune step)")


def _contamination(benchmark: str, rows: list[dict], marks: dict) -> Markup:
    """The eval stage's mark for a benchmark: `pins.json`'s contamination entry (items of the
    benchmark found in the training corpus, dropped or kept), or a row field naming it."""
    entry = marks.get(benchmark.split("/")[0])
    flagged = any("contamin" in str(k).lower() and v is True for r in rows for k, v in r.items())
    if isinstance(entry, dict) and entry.get("items_found"):
        found = f"{entry['items_found']} of {entry.get('items', '?')} items in the corpus"
        if entry.get("contaminated") or flagged:
            return Markup(f'<span class="contaminated">contaminated</span> ({esc(found)}, kept)')
        return Markup(esc(f"{found}, {entry.get('action', 'dropped')}"))
    if flagged:
        return Markup('<span class="contaminated">contaminated</span>')
    return Markup("clean" if isinstance(entry, dict) else MISSING)


def section_eval(view: RunView) -> str:
    parts = []
    for step in view.of_kind("eval"):
        rows = eval_rows(step)
        if not rows:
            parts.append(absent(f"{step.node}: no readable eval_results ({step.path})"))
            continue
        models = list(dict.fromkeys(r["model"] for r in rows))
        marks = (read_json(step.path / "pins.json") or {}).get("contamination") or {}
        by_key: dict[tuple[str, str], dict[str, dict]] = {}
        for row in rows:
            by_key.setdefault((row["benchmark"], row["metric"]), {})[row["model"]] = row
        body = []
        for (benchmark, metric), cells in by_key.items():
            line = [benchmark, metric]
            for model in models:
                row = cells.get(model)
                line.append(MISSING if row is None else Markup(
                    f"{esc(_num(row['score'], 2))} <small>(n={row['num_items']})</small>"))
            body.append(line + [_contamination(benchmark, list(cells.values()), marks)])
        parts.append(f"<h3>{esc(step.node)} <code>{esc(step.step_id)}</code></h3>"
                     + table(["benchmark", "metric", *models, "contamination"], body)
                     + "".join(png_tag(p, p.stem) for p in sorted(step.path.glob("*.png"))))
    return "\n".join(parts) or absent("not in this run (no eval step)")


def section_deploy(view: RunView) -> str:
    parts = []
    for step in view.of_kind("deploy"):
        rows = bench_rows(step)
        keys = [("concurrency", 0), ("requests", 0), ("output_tokens_per_s", 1),
                ("latency_p50_s", 3), ("latency_p99_s", 3), ("ttft_p50_s", 3)]
        body = [[_num(r.get(k), d) for k, d in keys] for r in rows]
        parts.append(f"<h3>{esc(step.node)} <code>{esc(step.step_id)}</code></h3>"
                     + (table([k for k, _ in keys], body, numeric=set(range(len(keys))))
                        if rows else absent("no load test (bench/bench.json) in this artifact"))
                     + png_tag(step.path / "bench" / "latency_vs_concurrency.png", "load test"))
    return "\n".join(parts) or absent("not in this run (no deploy step)")


def section_agent(view: RunView) -> str:
    parts = []
    for step in view.of_kind("agent"):
        table_rows = [r for r in agent_results(step).get("results") or [] if isinstance(r, dict)]
        if table_rows:
            first = ["set", "mode", "tasks", "success_rate"]
            columns = list(dict.fromkeys([*(k for k in first if any(k in r for r in table_rows)),
                                          *(k for r in table_rows for k in r)]))
            body = table(columns, [[MISSING if r.get(c) is None else r.get(c) for c in columns]
                                   for r in table_rows])
        else:
            body = absent("no results.json in this artifact")
        body += png_tag(step.path / "results.png", "agent success rate with and without tools")
        trajectories = read_jsonl(step.path / "trajectories.jsonl")[:TRAJECTORIES_SHOWN]
        for i, record in enumerate(trajectories):
            body += (f"<details><summary>trajectory {i + 1}</summary><pre>"
                     f"{esc(json.dumps(record, indent=2, ensure_ascii=False)[:6000])}</pre></details>")
        parts.append(f"<h3>{esc(step.node)} <code>{esc(step.step_id)}</code></h3>{body}")
    return "\n".join(parts) or absent("not in this run (no agent step)")


def section_reproduction(view: RunView) -> str:
    rows = []
    for step in view.steps:
        checksums = step.manifest.get("checksums") or {}
        files = checksums.get("files")
        rows.append([step.node, len(files) if files is not None else MISSING,
                     _seconds(checksums.get("seconds")),
                     Markup(f"<code>fullchain verify {esc(step.path)}</code>")])
    git = next((s.manifest.get("git") for s in view.steps if s.manifest.get("git")), {}) or {}
    return (f"<p>git commit <code>{esc(git.get('commit') or MISSING)}</code>"
            f"{' (with uncommitted changes)' if git.get('dirty') else ''}. Each manifest records "
            "a sha256 per payload file; <code>fullchain verify</code> re-executes the step into a "
            "scratch directory and compares them.</p>"
            + table(["node", "payload files checksummed", "checksum time", "re-execute"], rows,
                    numeric={1, 2}))


SECTIONS = [
    ("summary", "Summary"),
    ("graph", "Step graph"),
    ("steps", "Steps and lineage"),
    ("data", "Data cards"),
    ("losses", "Loss curves"),
    ("eval", "Evaluation"),
    ("deploy", "Deployment load test"),
    ("agent", "Agent"),
    ("reproduction", "Reproduction"),
]


def render(view: RunView, summary: list[tuple[str, str]]) -> str:
    bodies = {
        "summary": section_summary(summary),
        "graph": graph_svg(view),
        "steps": section_steps(view),
        "data": section_data(view),
        "losses": section_losses(view),
        "eval": section_eval(view),
        "deploy": section_deploy(view),
        "agent": section_agent(view),
        "reproduction": section_reproduction(view),
    }
    toc = " · ".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in SECTIONS)
    sections = "\n".join(f'<section id="{key}"><h2>{esc(title)}</h2>\n{bodies[key]}\n</section>'
                         for key, title in SECTIONS)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<link rel="icon" href="data:,">'
        f"<title>fullchain report: {esc(view.title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>fullchain report: {esc(view.title)}</h1><nav>{toc}</nav>\n{sections}\n"
        "</body></html>\n"
    )
